/// One evaluation of the validation sets: batches of examples handed to workers, each batch's
/// counts taken once, from whichever worker answers first.
public struct EvalRound: Sendable {
    public struct Batch: Sendable, Assignable {
        public let set: String
        public let examples: [Int]
        public internal(set) var status: StepRound.Status = .pending
    }

    /// The step after which the evaluation runs; the weights version it scores.
    public let step: Int
    public let weightsVersion: UInt64
    public private(set) var batches: [Batch]
    public private(set) var completed = 0

    /// `sets`: name → number of examples to score (the first ones), cut into batches of `batchSize`.
    public init(step: Int, weightsVersion: UInt64, sets: [(name: String, examples: Int)], batchSize: Int) {
        self.step = step
        self.weightsVersion = weightsVersion
        var batches: [Batch] = []
        for (name, n) in sets.sorted(by: { $0.name < $1.name }) {
            for start in stride(from: 0, to: n, by: max(1, batchSize)) {
                batches.append(Batch(set: name, examples: Array(start ..< min(n, start + batchSize))))
            }
        }
        self.batches = batches
    }

    public var isComplete: Bool { completed == batches.count }

    public mutating func assign(to session: SessionID, deadline: Double) -> Int? {
        batches.assignFirstPending(to: session, deadline: deadline)
    }

    public enum Verdict: Sendable, Equatable {
        case accept
        case duplicate
        case stale
        case invalid(String)
    }

    public mutating func receive(batch: Int, set: String, weightsVersion: UInt64) -> Verdict {
        guard weightsVersion == self.weightsVersion else { return .stale }
        guard batches.indices.contains(batch) else { return .invalid("evaluation batch \(batch) does not exist (this evaluation has \(batches.count))") }
        guard batches[batch].set == set else { return .invalid("evaluation batch \(batch) is of set '\(batches[batch].set)', the result says '\(set)'") }
        if batches[batch].status == .complete { return .duplicate }
        batches[batch].status = .complete
        completed += 1
        return .accept
    }

    @discardableResult
    public mutating func release(_ session: SessionID) -> [Int] {
        batches.release(session)
    }

    public mutating func expire(now: Double) -> [(session: SessionID, batch: Int)] {
        batches.expire(now: now).map { ($0.session, $0.index) }
    }
}
