import FileIO
import Foundation

/// Writes checkpoints on a thread of its own, so encoding and fsync stay off the step loop.
///
/// At most one write runs at a time, in submission order, and `latest` moves only when a file is
/// complete. When a write is still running as the next checkpoint comes, that one waits; if yet
/// another periodic one comes meanwhile, it replaces the waiting one (the newer state supersedes
/// it), so memory holds at most two snapshots however slow the disk is. A run's final checkpoint
/// supersedes nothing: it is written after whatever waits.
public final class CheckpointWriter: @unchecked Sendable {
    public typealias Report = @Sendable (CheckpointWriteReport) -> Void

    let store: CheckpointStore
    private let queue = DispatchQueue(label: "csptrain.checkpoint-writer", qos: .utility)
    private let lock = NSLock()
    // Guarded by `lock`.
    private var waiting: [(checkpoint: Checkpoint, report: Report, final: Bool)] = []
    private var running = false
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []

    public init(store: CheckpointStore) { self.store = store }

    /// Queues `checkpoint`; `report` runs on the writer's thread once, when it is written, has
    /// failed, or was superseded by a newer periodic one before it started.
    public func submit(_ checkpoint: Checkpoint, final: Bool = false, report: @escaping Report) {
        lock.lock()
        var superseded: [(checkpoint: Checkpoint, report: Report, final: Bool)] = []
        if !final {
            superseded = waiting.filter { !$0.final }
            waiting.removeAll { !$0.final }
        }
        waiting.append((checkpoint, report, final))
        let start = !running
        running = true
        lock.unlock()
        for old in superseded {
            old.report(CheckpointWriteReport(step: old.checkpoint.step, outcome: .superseded(byStep: checkpoint.step), seconds: 0, bytes: 0))
        }
        if start { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            lock.lock()
            guard let (checkpoint, report, _) = waiting.first else {
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
            let outcome: CheckpointWriteReport.Outcome
            do { outcome = .written(try store.write(encoded: bytes, step: checkpoint.step)) } catch {
                outcome = .failed(CheckpointWriteFailure(step: checkpoint.step, error: error, folder: store.directory.path))
            }
            report(CheckpointWriteReport(step: checkpoint.step, outcome: outcome,
                                         seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, bytes: bytes.count))
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

/// How one submitted checkpoint ended.
public struct CheckpointWriteReport: Sendable {
    public enum Outcome: Sendable {
        /// On disk, fsynced, and `latest` names it.
        case written(URL)
        case failed(CheckpointWriteFailure)
        /// A newer checkpoint came while this one waited: it was never tried (neither a success
        /// nor a failure).
        case superseded(byStep: Int)
    }

    public let step: Int
    public let outcome: Outcome
    /// Encoding and writing time (0 when superseded).
    public let seconds: Double
    /// The encoded size (0 when superseded).
    public let bytes: Int
}

/// A checkpoint that could not be written: which file, why (errno and its text), and on which
/// disk, with that disk's free space at the time.
public struct CheckpointWriteFailure: Error, Sendable, CustomStringConvertible {
    public let step: Int
    public let error: CheckpointError
    /// The file or folder that could not be written (the temporary file, `latest`, the folder).
    public let path: String
    /// The errno, when a system call failed.
    public let code: Int32?
    /// Its text ("No space left on device"), or what went wrong otherwise.
    public let reason: String
    /// The file system holding the checkpoint folder.
    public let disk: Disk?

    public init(step: Int, error: CheckpointError, folder: String) {
        self.step = step
        self.error = error
        switch error {
        case let .file(e):
            path = e.path
            code = e.code
            reason = e.reason
            disk = e.disk ?? Disk(containing: folder)
        case let .io(p, what):
            path = p
            code = nil
            reason = what
            disk = Disk(containing: folder)
        default:
            path = folder
            code = nil
            reason = error.description
            disk = Disk(containing: folder)
        }
    }

    /// The disk is full (or the user's quota is).
    public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }

    /// "checkpoint of step 120 not written: cannot write /runs/a/checkpoints/step-120.ckpt.tmp:
    /// No space left on device (errno 28); the disk: /runs (ext4 from /dev/sdb1, 0 B free of 20 GiB)"
    public var description: String { "checkpoint of step \(step) not written: \(cause)" }

    /// The description without its "checkpoint of step N not written: " (for a caller that
    /// says that itself).
    public var cause: String {
        var cause: String
        if case let .file(e) = error {
            cause = "cannot \(e.operation) \(e.path): \(e.reason) (errno \(e.code))"
        } else {
            cause = error.description
        }
        if let disk { cause += "; the disk: \(disk)" }
        return cause
    }

    /// Why the run stops (`checkpoint.on_write_failure: stop`), naming the file, the disk and
    /// the checkpoint a resume would start from.
    public func stopMessage(failuresInARow: Int, newest: URL?) -> String {
        let resumeFrom = newest.map { "the newest checkpoint on disk is \($0.path)" } ?? "no checkpoint of this run is on disk"
        let fix = isNoSpace ? "free space on \(disk?.mountPoint ?? "that disk")" : "fix the cause"
        return "stopping: \(failuresInARow) checkpoint writes in a row failed; the last: \(self). \(resumeFrom); \(fix) and continue with --resume (or set checkpoint.on_write_failure: continue to train on without checkpoints)"
    }
}
