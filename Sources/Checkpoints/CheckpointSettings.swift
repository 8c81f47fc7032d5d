/// Checkpoint settings, composed into the run configuration.
public struct CheckpointSettings: Sendable, Equatable {
    /// Write a checkpoint every this many steps (0: only at the end of the run).
    public var everySteps = 50
    /// Checkpoints kept in the run folder.
    public var keep = 3
    /// What a run does when checkpoints cannot be written (a full disk, say).
    public var onWriteFailure = WriteFailurePolicy.stop

    public enum WriteFailurePolicy: String, Sendable, CaseIterable {
        /// End the run after ``CheckpointSettings/failedWritesBeforeStop`` failed writes in a row,
        /// naming the file and the disk, with a non-zero exit.
        case stop
        /// Keep training; metrics and ledger lines wait in memory (bounded) until the disk takes them.
        case `continue`
    }

    /// With `stop`: this many failed checkpoint writes in a row end the run.
    public static let failedWritesBeforeStop = 3

    public init() {}
}
