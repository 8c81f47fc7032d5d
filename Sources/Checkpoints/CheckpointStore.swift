import FileIO
import Foundation

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
        do { try Folder.create(directory.path) } catch { throw .file(error) }
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
        do { return try FileReader.read(url.path) } catch { throw .file(error) }
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

    /// Where a pruning snapshot of `sparsity` is kept: `snapshot-80.ckpt` for 0.8 (a tenth of a
    /// percent where needed: `snapshot-87.5.ckpt`).
    public func snapshotPath(sparsity: Double) -> URL {
        let percent = (sparsity * 1000).rounded() / 10
        let name = percent == percent.rounded() ? String(Int(percent)) : String(percent)
        return directory.appendingPathComponent("snapshot-\(name).ckpt")
    }

    /// Keeps the written checkpoint `url` as the snapshot of `sparsity` (a second name for the
    /// same file: rotation of `step-*.ckpt` leaves it alone); returns its path.
    @discardableResult
    public func keepSnapshot(_ url: URL, sparsity: Double) throws(CheckpointError) -> URL {
        let target = snapshotPath(sparsity: sparsity)
        do { try AtomicFile.link(url.path, to: target.path) } catch { throw .file(error) }
        return target
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
        do { try AtomicFile.write(bytes, to: url.path) } catch { throw .file(error) }
    }
}
