/// Which examples every applied step used, epoch by epoch: the record that shows each example
/// of an epoch was applied exactly once, across kills, resumes and any number of workers.
///
/// Only applied steps enter it (a step lost to a crash before its checkpoint is not applied: the
/// resumed run starts from the checkpoint's ledger and applies it again). Entries of epochs still
/// in progress are kept in full (the checkpoint carries them); an epoch whose examples have all
/// been applied is summarised and its entries dropped (its file holds them).
public struct RunLedger: Sendable, Equatable {
    public struct Step: Sendable, Equatable {
        /// Counted from 1, as in metrics.jsonl.
        public var step: Int
        public var epoch: Int
        /// The examples of `epoch` the step used, in data-order position.
        public var examples: [Int]
        public init(step: Int, epoch: Int, examples: [Int]) {
            self.step = step
            self.epoch = epoch
            self.examples = examples
        }
    }

    public struct Epoch: Sendable, Equatable {
        public var epoch: Int
        public var steps: Int
        public var examples: Int
        public init(epoch: Int, steps: Int, examples: Int) {
            self.epoch = epoch
            self.steps = steps
            self.examples = examples
        }
    }

    public let examplesPerEpoch: Int
    public private(set) var open: [Step] = []
    public private(set) var completed: [Epoch] = []

    public init(examplesPerEpoch: Int, open: [Step] = [], completed: [Epoch] = []) {
        precondition(examplesPerEpoch > 0)
        self.examplesPerEpoch = examplesPerEpoch
        self.open = open
        self.completed = completed
    }

    /// The last step recorded (0 before the first).
    public var lastStep: Int { open.last?.step ?? 0 }

    /// Records applied step `step` (from 1) with its examples by epoch, as
    /// `DataOrder.examplesByEpoch` gives them. Returns the entries added and the epochs this
    /// step completed.
    public mutating func record(step: Int, parts: [(epoch: Int, examples: [Int])]) -> (entries: [Step], completedEpochs: [Epoch]) {
        let entries = parts.map { Step(step: step, epoch: $0.epoch, examples: $0.examples) }
        open += entries
        var finished: [Epoch] = []
        for epoch in Set(parts.map(\.epoch)).sorted() {
            let mine = open.filter { $0.epoch == epoch }
            let count = mine.reduce(0) { $0 + $1.examples.count }
            if count >= examplesPerEpoch {
                let summary = Epoch(epoch: epoch, steps: mine.count, examples: count)
                completed.append(summary)
                finished.append(summary)
                open.removeAll { $0.epoch == epoch }
            }
        }
        return (entries, finished)
    }

    /// Examples of `epoch` applied so far.
    public func appliedCount(epoch: Int) -> Int {
        if let done = completed.first(where: { $0.epoch == epoch }) { return done.examples }
        return open.filter { $0.epoch == epoch }.reduce(0) { $0 + $1.examples.count }
    }
}
