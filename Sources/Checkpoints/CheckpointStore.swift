import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The checkpoints of one run: `<run-dir>/checkpoints/step-<n>.ckpt` and a `latest` pointer.
///
/// A write is atomic: the file is written to a temporary name, fsynced, renamed into place, and
/// the folder fsynced; only then does `latest` move (by the same dance). A crash at any moment
/// leaves `latest` naming a complete checkpoint. The last `keep` checkpoints are kept.
public struct CheckpointStore: Sendable {
    public let directory: URL
    public let keep: Int

    public init(runDirectory: URL, keep: Int = 3) {
        directory = runDirectory.appendingPathComponent("checkpoints", isDirectory: true)
        self.keep = max(1, keep)
    }

    public func path(forStep step: Int) -> URL {
        directory.appendingPathComponent("step-\(step).ckpt")
    }

    public var latestPointer: URL { directory.appendingPathComponent("latest") }

    /// Writes `checkpoint`, moves `latest` to it, prunes old ones; returns its path.
    @discardableResult
    public func write(_ checkpoint: Checkpoint) throws(CheckpointError) -> URL {
        try write(encoded: checkpoint.encoded(), step: checkpoint.step)
    }

    /// Writes an encoded checkpoint of `step`, moves `latest` to it, prunes old ones.
    @discardableResult
    public func write(encoded bytes: [UInt8], step: Int) throws(CheckpointError) -> URL {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(directory.path, "cannot create the checkpoint folder: \(error.localizedDescription)")
        }
        let target = path(forStep: step)
        try Self.atomicWrite(bytes, to: target)
        try Self.atomicWrite(Array((target.lastPathComponent + "\n").utf8), to: latestPointer)
        prune()
        return target
    }

    /// The checkpoint `latest` names, or nil when there is none.
    public func latestPath() -> URL? {
        guard let text = try? String(contentsOf: latestPointer, encoding: .utf8) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return name.isEmpty ? nil : directory.appendingPathComponent(name)
    }

    public static func load(_ url: URL) throws(CheckpointError) -> Checkpoint {
        try Checkpoint(decoding: readBytes(url), source: url.path)
    }

    /// The file's bytes; the error names it.
    public static func readBytes(_ url: URL) throws(CheckpointError) -> [UInt8] {
        do { return [UInt8](try Data(contentsOf: url)) } catch {
            throw .io(url.path, "cannot read: \(error.localizedDescription)")
        }
    }

    /// What a user may name to mean a checkpoint: the file itself, a `latest` pointer, a run
    /// folder or its `checkpoints/` folder (their newest checkpoint).
    public static func resolve(_ path: String) throws(CheckpointError) -> URL {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw .io(url.path, "no such file or folder")
        }
        let folder: URL
        if isDirectory.boolValue {
            folder = url.lastPathComponent == "checkpoints" ? url.deletingLastPathComponent() : url
        } else if url.lastPathComponent == "latest" {
            folder = url.deletingLastPathComponent().deletingLastPathComponent()
        } else {
            return url
        }
        guard let latest = CheckpointStore(runDirectory: folder).latestPath() else { throw .noCheckpoint(url.path) }
        return latest.standardizedFileURL
    }

    /// The newest checkpoint that reads back intact: the one `latest` names, else the step files
    /// from the newest down. Each one that fails (checksum, truncation, unreadable) is reported
    /// through `skipped` with the file and record at fault, and the next older one is tried.
    /// Nil when there is none, or none intact.
    public func newestIntact(skipped: (CheckpointError) -> Void = { _ in }) -> (checkpoint: Checkpoint, url: URL)? {
        var candidates: [URL] = []
        if let latest = latestPath() { candidates.append(latest) }
        for step in steps().reversed() where !candidates.contains(path(forStep: step)) {
            candidates.append(path(forStep: step))
        }
        for url in candidates {
            do { return (try Self.load(url), url) } catch { skipped(error) }
        }
        return nil
    }

    /// Moves the checkpoints of steps after `step` to `abandoned/` (a resume from `step` leaves
    /// that history); returns their names.
    public func setAsideSteps(after step: Int) -> [String] {
        let later = steps().filter { $0 > step }
        guard !later.isEmpty else { return [] }
        let aside = directory.appendingPathComponent("abandoned", isDirectory: true)
        try? FileManager.default.createDirectory(at: aside, withIntermediateDirectories: true)
        var moved: [String] = []
        for s in later {
            let name = path(forStep: s).lastPathComponent
            try? FileManager.default.removeItem(at: aside.appendingPathComponent(name))
            if (try? FileManager.default.moveItem(at: path(forStep: s), to: aside.appendingPathComponent(name))) != nil { moved.append(name) }
        }
        return moved
    }

    /// Points `latest` at the checkpoint of `step` (a resume from an older file makes it the
    /// newest of this run).
    public func pointLatest(toStep step: Int) throws(CheckpointError) {
        try Self.atomicWrite(Array((path(forStep: step).lastPathComponent + "\n").utf8), to: latestPointer)
    }

    /// Removes `*.tmp` files a crash left behind mid-write (they were never renamed into place).
    @discardableResult
    public func removeUnfinishedWrites() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let leftovers = names.filter { $0.hasSuffix(".tmp") }
        for name in leftovers { try? FileManager.default.removeItem(at: directory.appendingPathComponent(name)) }
        return leftovers
    }

    /// Checkpoint files present, by step, oldest first.
    public func steps() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix("step-"), name.hasSuffix(".ckpt") else { return nil }
            return Int(name.dropFirst(5).dropLast(5))
        }.sorted()
    }

    private func prune() {
        let all = steps()
        let latest = latestPath()?.lastPathComponent
        for step in all.dropLast(keep) where path(forStep: step).lastPathComponent != latest {
            try? FileManager.default.removeItem(at: path(forStep: step))
        }
    }

    /// temp file → write → fsync → rename → fsync(folder).
    static func atomicWrite(_ bytes: [UInt8], to url: URL) throws(CheckpointError) {
        let temp = url.path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(temp, "cannot create: \(String(cString: strerror(errno)))") }
        var written = 0
        let ok: Bool = bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return fsync(fd) == 0
        }
        let err = errno
        close(fd)
        guard ok else {
            unlink(temp)
            throw .io(temp, "write failed: \(String(cString: strerror(err)))")
        }
        guard rename(temp, url.path) == 0 else {
            throw .io(url.path, "cannot rename \(temp) into place: \(String(cString: strerror(errno)))")
        }
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { fsync(dir); close(dir) }
    }
}

/// Checkpoint settings, composed into the run configuration.
public struct CheckpointSettings: Sendable, Equatable {
    /// Write a checkpoint every this many steps (0: only at the end of the run).
    public var everySteps = 50
    /// Checkpoints kept in the run folder.
    public var keep = 3
    public init() {}
}

/// Writes checkpoints on a thread of its own, so encoding and fsync stay off the step loop.
///
/// At most one write runs at a time, in submission order, and `latest` moves only when a file is
/// complete. When a write is still running as the next checkpoint comes, that one waits; if yet
/// another comes meanwhile, it replaces the waiting one (the newer state supersedes it), so
/// memory holds at most two snapshots however slow the disk is.
public final class CheckpointWriter: @unchecked Sendable {
    public typealias Completion = @Sendable (_ step: Int, _ result: Result<URL, CheckpointError>, _ seconds: Double, _ bytes: Int) -> Void

    private let store: CheckpointStore
    private let queue = DispatchQueue(label: "csptrain.checkpoint-writer", qos: .utility)
    private let lock = NSLock()
    // Guarded by `lock`.
    private var waiting: [(checkpoint: Checkpoint, completion: Completion, final: Bool)] = []
    private var running = false
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    public init(store: CheckpointStore) { self.store = store }

    /// Queues `checkpoint`; `completion` runs on the writer's thread when it is written, failed,
    /// or superseded (failure `.io(..., "superseded ...")`). A periodic checkpoint still waiting
    /// when the next periodic one comes is superseded by it (at most one snapshot waits); a
    /// `final` one (the end of a run) supersedes nothing and is written after what waits.
    public func submit(_ checkpoint: Checkpoint, final: Bool = false, completion: @escaping Completion) {
        lock.lock()
        var superseded: [(checkpoint: Checkpoint, completion: Completion, final: Bool)] = []
        if !final {
            superseded = waiting.filter { !$0.final }
            waiting.removeAll { !$0.final }
        }
        waiting.append((checkpoint, completion, final))
        let start = !running
        running = true
        lock.unlock()
        for old in superseded {
            old.completion(old.checkpoint.step, .failure(.io(store.path(forStep: old.checkpoint.step).path, "superseded by the checkpoint of step \(checkpoint.step) before it was written")), 0, 0)
        }
        if start { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            lock.lock()
            guard let (checkpoint, completion, _) = waiting.first else {
                running = false
                let waiters = idleWaiters
                idleWaiters = []
                lock.unlock()
                for w in waiters { w.resume() }
                return
            }
            waiting.removeFirst()
            lock.unlock()
            let start = DispatchTime.now().uptimeNanoseconds
            let bytes = checkpoint.encoded()
            let result: Result<URL, CheckpointError>
            do { result = .success(try store.write(encoded: bytes, step: checkpoint.step)) } catch { result = .failure(error) }
            completion(checkpoint.step, result, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, bytes.count)
        }
    }

    /// Returns when every submitted checkpoint has been written (or has failed).
    public func flush() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if running {
                idleWaiters.append(c)
                lock.unlock()
            } else {
                lock.unlock()
                c.resume()
            }
        }
    }
}
