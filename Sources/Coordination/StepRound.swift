/// One training step's micro-batches: who computes what, and which gradient chunks arrived.
///
/// The micro-batch is the unit of assignment, computation, transfer and accounting. A
/// micro-batch's gradient is sent as chunks keyed (tensor, chunk index); each key is folded
/// exactly once, from whichever member delivers it first, so a micro-batch reassigned after a
/// failure is never counted twice or lost. Memory is one bit per (micro-batch, chunk), however
/// many workers there are.
public struct StepRound: Sendable {
    public enum Status: Sendable, Equatable {
        case pending
        case assigned(to: SessionID, deadline: Double)
        case complete
    }

    public struct MicroBatch: Sendable, Assignable {
        public let examples: [Int]
        public internal(set) var status: Status = .pending
        var received: [Bool]
        public internal(set) var receivedCount = 0
        /// Times this micro-batch was handed out (more than 1 after a reassignment).
        public internal(set) var assignments = 0
    }

    public let step: Int
    public let weightsVersion: UInt64
    public let grid: ChunkGrid
    public private(set) var microBatches: [MicroBatch]
    public private(set) var completed = 0
    /// Chunks dropped because their key had already arrived.
    public private(set) var duplicates = 0
    /// Micro-batches taken back from a member (failure or deadline) and handed out again.
    public private(set) var reassignments = 0

    public init(step: Int, weightsVersion: UInt64, microBatches: [[Int]], grid: ChunkGrid) {
        self.step = step
        self.weightsVersion = weightsVersion
        self.grid = grid
        self.microBatches = microBatches.map {
            MicroBatch(examples: $0, received: [Bool](repeating: false, count: grid.totalChunks))
        }
    }

    public var isComplete: Bool { completed == microBatches.count }

    /// Hands the first pending micro-batch to `session`, due by `deadline`.
    public mutating func assign(to session: SessionID, deadline: Double) -> Int? {
        guard let index = microBatches.assignFirstPending(to: session, deadline: deadline) else { return nil }
        microBatches[index].assignments += 1
        if microBatches[index].assignments > 1 { reassignments += 1 }
        return index
    }

    public enum ChunkVerdict: Sendable, Equatable {
        /// Fold the values at `offset` of the flat buffer with weight `examples`.
        /// `firstOfMicroBatch`: record the micro-batch's loss now. `completesMicroBatch`: its last chunk.
        case accept(offset: Int, examples: Int, firstOfMicroBatch: Bool, completesMicroBatch: Bool)
        case duplicate
        /// For another step or weights version than this round's.
        case stale
        /// From a member the micro-batch is not assigned to; says who holds it ("assigned to
        /// another worker", "waiting to be handed out again").
        case notAssigned(String)
        /// Breaks the protocol; the reason names what is wrong.
        case invalid(String)
    }

    /// Classifies a chunk and, when accepted, records it. `valueCount` is the number of float32
    /// values the chunk carries. With `from`, only the member the micro-batch is assigned to may
    /// deliver it (a late worker's chunks for a reassigned micro-batch are refused).
    public mutating func receive(step: Int, weightsVersion: UInt64, microBatch: Int, tensor: Int,
                                 chunkIndex: Int, chunkCount: Int, exampleCount: Int, valueCount: Int,
                                 from sender: SessionID? = nil) -> ChunkVerdict {
        if step < self.step || (step == self.step && weightsVersion != self.weightsVersion) { return .stale }
        if step > self.step { return .invalid("chunk for step \(step), but the coordinator is at step \(self.step)") }
        guard microBatches.indices.contains(microBatch) else {
            return .invalid("micro-batch \(microBatch) does not exist (this step has \(microBatches.count))")
        }
        guard grid.tensorChunkCounts.indices.contains(tensor) else {
            return .invalid("tensor \(tensor) does not exist (the model has \(grid.tensorChunkCounts.count))")
        }
        let expectedChunks = grid.tensorChunkCounts[tensor]
        guard chunkCount == expectedChunks else {
            return .invalid("tensor \(tensor) has \(expectedChunks) chunks, the message says \(chunkCount)")
        }
        guard chunkIndex >= 0, chunkIndex < expectedChunks else {
            return .invalid("chunk index \(chunkIndex) is outside 0..<\(expectedChunks) for tensor \(tensor)")
        }
        let expectedValues = grid.valueCount(tensor: tensor, chunk: chunkIndex)
        guard valueCount == expectedValues else {
            return .invalid("chunk \(chunkIndex) of tensor \(tensor) must carry \(expectedValues) values, it carries \(valueCount)")
        }
        let mb = microBatches[microBatch]
        guard exampleCount == mb.examples.count else {
            return .invalid("micro-batch \(microBatch) has \(mb.examples.count) examples, the chunk says \(exampleCount)")
        }
        let key = grid.key(tensor: tensor, chunk: chunkIndex)
        if mb.status == .complete || mb.received[key] {
            duplicates += 1
            return .duplicate
        }
        if let sender {
            switch mb.status {
            case .pending: return .notAssigned("waiting to be handed out again")
            case let .assigned(to: holder, _) where holder != sender: return .notAssigned("assigned to another worker")
            default: break
            }
        }
        microBatches[microBatch].received[key] = true
        microBatches[microBatch].receivedCount += 1
        let first = mb.receivedCount == 0
        let completes = microBatches[microBatch].receivedCount == grid.totalChunks
        if completes {
            microBatches[microBatch].status = .complete
            completed += 1
        }
        return .accept(offset: grid.offset(tensor: tensor, chunk: chunkIndex), examples: mb.examples.count,
                       firstOfMicroBatch: first, completesMicroBatch: completes)
    }

    /// Takes back every unfinished micro-batch assigned to `session` (it failed or left).
    @discardableResult
    public mutating func release(_ session: SessionID) -> [Int] {
        microBatches.release(session)
    }

    /// Takes back the micro-batches assigned to `session` that have received no chunk yet (a
    /// task whose reply was lost); those on their way stay.
    @discardableResult
    public mutating func releaseUnstarted(_ session: SessionID) -> [Int] {
        var released: [Int] = []
        for i in microBatches.indices where microBatches[i].receivedCount == 0 {
            if case .assigned(to: session, _) = microBatches[i].status {
                microBatches[i].status = .pending
                released.append(i)
            }
        }
        return released
    }

    /// Members whose assignment is past its deadline; their micro-batches become pending again.
    public mutating func expire(now: Double) -> [(session: SessionID, microBatch: Int)] {
        microBatches.expire(now: now).map { ($0.session, $0.index) }
    }

    /// The session a micro-batch is assigned to, if any.
    public func assignee(of microBatch: Int) -> SessionID? {
        if case let .assigned(to: session, _) = microBatches[microBatch].status { return session }
        return nil
    }
}

/// How a flat buffer laid out as tensors is cut into chunks of at most `chunkValues` values.
public struct ChunkGrid: Sendable, Equatable {
    public let chunkValues: Int
    /// (offset, count) of each tensor in the flat buffer.
    public let tensors: [(offset: Int, count: Int)]
    public let tensorChunkCounts: [Int]
    private let firstKey: [Int]
    public let totalChunks: Int

    public init(tensors: [(offset: Int, count: Int)], chunkValues: Int) {
        precondition(chunkValues > 0)
        self.chunkValues = chunkValues
        self.tensors = tensors
        tensorChunkCounts = tensors.map { max(1, ($0.count + chunkValues - 1) / chunkValues) }
        var keys: [Int] = []
        var total = 0
        for n in tensorChunkCounts { keys.append(total); total += n }
        firstKey = keys
        totalChunks = total
    }

    public func key(tensor: Int, chunk: Int) -> Int { firstKey[tensor] + chunk }

    /// Offset in the flat buffer of the chunk's first value.
    public func offset(tensor: Int, chunk: Int) -> Int { tensors[tensor].offset + chunk * chunkValues }

    public func valueCount(tensor: Int, chunk: Int) -> Int {
        min(chunkValues, tensors[tensor].count - chunk * chunkValues)
    }

    public static func == (a: ChunkGrid, b: ChunkGrid) -> Bool {
        a.chunkValues == b.chunkValues && a.tensors.elementsEqual(b.tensors, by: { $0 == $1 })
    }
}
