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
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(directory.path, "cannot create the checkpoint folder: \(error.localizedDescription)")
        }
        let target = path(forStep: checkpoint.step)
        try Self.atomicWrite(checkpoint.encoded(), to: target)
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
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw .io(url.path, "cannot read: \(error.localizedDescription)")
        }
        return try Checkpoint(decoding: [UInt8](data), source: url.path)
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
