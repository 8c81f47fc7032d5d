import Foundation
import Tensors

/// The coordinator's messages as the run state machine sees them: what a request asks and what the
/// answer says, without protobuf (Wire converts both ways) and without the bytes of gradients or
/// weights (the shell keeps those; the machine decides what happens to them).

/// The shell's handle for a request it has not answered yet.
public typealias RequestID = UInt64

/// A request's envelope: who sent it, on which connection, for which run.
public struct Origin: Sendable, Equatable {
    /// The connection the request came on (an nng pipe id).
    public var pipe: UInt32
    /// The peer's address, for logs.
    public var peer: String
    public var protocolVersion: UInt32
    public var runID: String
    /// Empty before the worker has joined.
    public var session: SessionID
    /// The step the request is about (chunks: the step computed).
    public var step: UInt64
    /// The worker's number for this request, counting up within its session; 0 when it does not
    /// number them. nng's REQ re-sends a request with the same bytes, so the same number again
    /// is a re-send, and a new number a new request.
    public var sequence: UInt64

    public init(pipe: UInt32, peer: String, protocolVersion: UInt32, runID: String, session: SessionID, step: UInt64 = 0,
                sequence: UInt64 = 0) {
        self.pipe = pipe
        self.peer = peer
        self.protocolVersion = protocolVersion
        self.runID = runID
        self.session = session
        self.step = step
        self.sequence = sequence
    }
}

/// The geometry of a gradient chunk; its values stay in the received message.
public struct ChunkHeader: Sendable, Equatable {
    public var microBatch: Int
    public var tensor: Int
    public var chunkIndex: Int
    public var chunkCount: Int
    public var exampleCount: Int
    public var lossSum: Double
    public var weightsVersion: UInt64
    /// Float32 values the chunk carries.
    public var valueCount: Int
    /// Σ value² in float64, computed by the shell as it checks the values: NaN or ∞ when a value
    /// is not finite, and too large when the weighted sum would overflow float32.
    public var sumOfSquares: Double

    public init(microBatch: Int, tensor: Int, chunkIndex: Int, chunkCount: Int, exampleCount: Int, lossSum: Double,
                weightsVersion: UInt64, valueCount: Int, sumOfSquares: Double) {
        self.microBatch = microBatch
        self.tensor = tensor
        self.chunkIndex = chunkIndex
        self.chunkCount = chunkCount
        self.exampleCount = exampleCount
        self.lossSum = lossSum
        self.weightsVersion = weightsVersion
        self.valueCount = valueCount
        self.sumOfSquares = sumOfSquares
    }
}

/// What a request asks.
public enum Inbound: Sendable, Equatable {
    case hello(workerName: String, clientNonce: Data)
    case proof(workerName: String, clientNonce: Data, serverNonce: Data, mac: Data, computeSignature: String)
    case work(haveVersion: UInt64)
    case chunk(ChunkHeader)
    case evalResult(batch: Int, set: String, weightsVersion: UInt64, counts: EvaluationCounts)
    case leave(reason: String)
    /// The weights of this version arrived at the worker (answered with an accepted ack; the
    /// shell counts a model-carrying reply until then, see Proto's WeightsReceipt).
    case receipt(weightsVersion: UInt64)

    /// The weights version the sending worker shows it holds: a receipt's, a work request's, a
    /// chunk's or an evaluation result's (its weights of that version have arrived).
    public var weightsVersionShown: UInt64? {
        switch self {
        case let .receipt(version), let .work(version), let .evalResult(_, _, version, _): version
        case let .chunk(header): header.weightsVersion
        case .hello, .proof, .leave: nil
        }
    }
}

/// Why a request was refused; each maps to one code on the wire (Proto/README.md).
public enum RefusalCode: Sendable, Equatable {
    case badProof
    case versionMismatch
    case unknownSession
    case malformed
    case wrongRun
    case challengeExpired
    case incompatible
    /// More requests in flight from one member than `coordinator.max_requests_in_flight`.
    case overloaded
    /// A message over the coordinator's size limit.
    case tooLarge
    /// A chunk for a micro-batch assigned to another member (or to nobody).
    case notAssigned
}

/// Which weights a task carries: none (the worker has them), values only against the previous
/// version, or the whole model. The shell attaches the bytes, encoded once per version.
public enum WeightsAttachment: Sendable, Equatable {
    case none
    case delta(version: UInt64)
    case full(version: UInt64)
}

public struct TaskAssignment: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case train(epoch: Int)
        case eval(set: String)
    }
    public var kind: Kind
    /// The micro-batch (training) or evaluation batch index.
    public var index: Int
    public var examples: [Int]
    public var weightsVersion: UInt64
    public var weights: WeightsAttachment
    public var deadlineSeconds: Double

    public init(kind: Kind, index: Int, examples: [Int], weightsVersion: UInt64, weights: WeightsAttachment, deadlineSeconds: Double) {
        self.kind = kind
        self.index = index
        self.examples = examples
        self.weightsVersion = weightsVersion
        self.weights = weights
        self.deadlineSeconds = deadlineSeconds
    }
}

public enum ChunkStatus: Sendable, Equatable {
    case accepted
    case duplicate
    case stale
}

/// What a request is answered with (Wire adds the header: run, step, session).
public enum Response: Sendable, Equatable {
    case challenge(serverNonce: Data)
    case welcome(workerID: UInt32, session: SessionID, serverMAC: Data)
    case task(TaskAssignment)
    case ack(ChunkStatus)
    case wait
    case finished(reason: String)
    case refusal(RefusalCode, String)
}
