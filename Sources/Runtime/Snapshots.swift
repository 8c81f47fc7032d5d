import Checkpoints
import Foundation
import Logging
import Pruning
import Synchronization

/// The pruning schedule's snapshots (`pruning.snapshots`): which checkpoints to keep under their
/// own name, keeping them as they are written, and remembering any that could not be kept (a run
/// whose snapshots are not all on disk has not saved its work).
final class SnapshotKeeper: Sendable {
    /// Steps done → the sparsity held up to then.
    let sizes: [Int: Double]
    let store: CheckpointStore
    let logger: Logger
    private let failures = Mutex<[String]>([])

    init(schedule: SparsitySchedule, pruning: Bool, store: CheckpointStore, logger: Logger) {
        var sizes: [Int: Double] = [:]
        if pruning { for hold in schedule.holds { sizes[hold.snapshotStep] = hold.size } }
        self.sizes = sizes
        self.store = store
        self.logger = logger
    }

    /// The steps after which the run state machine asks for a checkpoint.
    var steps: Set<Int> { Set(sizes.keys) }

    func isSnapshot(_ step: Int) -> Bool { sizes[step] != nil }

    /// The checkpoint of `step` is written at `url` (on the writer's thread, before it writes
    /// another, so rotation cannot remove it first).
    func written(step: Int, at url: URL) {
        guard let size = sizes[step] else { return }
        do {
            let kept = try store.keepSnapshot(url, sparsity: size)
            logger.notice("pruning snapshot kept: \(Self.percent(size))% sparse after step \(step)",
                          metadata: ["path": "\(kept.path)"])
        } catch {
            let failure = "the pruning snapshot at \(Self.percent(size))% (step \(step)) was not kept: \(error)"
            logger.error("\(failure)")
            failures.withLock { $0.append(failure) }
        }
    }

    /// `supportSparsity`: the size the last support update set before the snapshot of `step`.
    /// A method that deferred the hold's update (input statistics never gathered) is reported,
    /// not kept silently as a snapshot of the wrong size.
    func check(step: Int, supportSparsity: Double) {
        guard let size = sizes[step], abs(supportSparsity - size) > 1e-9 else { return }
        let failure = "the pruning snapshot at \(Self.percent(size))% (step \(step)) has the support of \(String(format: "%.1f", supportSparsity * 100))%: its method deferred the update for input statistics (raise pruning.snapshot_steps or the batch)"
        logger.error("\(failure)")
        failures.withLock { $0.append(failure) }
    }

    /// A snapshot whose checkpoint failed to be written.
    func failed(step: Int, cause: String) {
        guard let size = sizes[step] else { return }
        failures.withLock { $0.append("the pruning snapshot at \(Self.percent(size))% (step \(step)) was not written: \(cause)") }
    }

    var problems: [String] { failures.withLock { $0 } }

    /// 0.8 → "80".
    static func percent(_ size: Double) -> String { String(format: "%g", size * 100) }
}
