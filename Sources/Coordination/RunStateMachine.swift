import Foundation
import Tensors

/// The coordinator's decisions, as a pure state machine: events go in (a request, a tick of the
/// clock, a closed connection, a step applied, a checkpoint written or not, a shutdown) and
/// directives come out (reply, fold, apply the step, write a checkpoint, record metrics, finish).
///
/// It holds no socket, no clock and no file: time arrives in every event as `now` (monotonic
/// seconds), randomness as `entropy` in the events that need it, and the numbers (weights,
/// gradients) stay with the parameter server. The shell (Runtime's CoordinatorService) performs
/// the directives in the order given and feeds back what happened. Every start, drop, evaluate,
/// checkpoint and finish decision of a run is made here.
///
/// The shape follows swift-cluster-membership's `SWIMInstance`: the tests drive it with seeded
/// random event sequences and check its invariants after every event.
public struct RunStateMachine: Sendable {
    public enum Status: String, Sendable, Equatable, Codable { case completed, failed, interrupted }

    public enum Phase: Sendable, Equatable {
        /// Fewer than `minWorkers` have joined since the start.
        case waitingForWorkers
        /// Training the step that takes the weights from version `step + 1` to `step + 2`
        /// (`step` applied steps so far).
        case training(step: Int)
        /// Scoring the weights after `step` applied steps; training waits.
        case evaluating(step: Int)
        /// The run is over; the final checkpoint is being written.
        case finishing(Status)
        case finished(Status)
    }

    public struct Settings: Sendable, Equatable {
        public var totalSteps: Int
        public var minWorkers = 1
        public var stepDeadlineSeconds = 60.0
        public var pollHoldSeconds = 2.0
        /// With no member at all, end the run as failed after this long (nil: wait forever).
        public var waitForWorkersSeconds: Double?
        /// Requests one member may have unanswered at once; more are refused.
        public var maxRequestsInFlight = 8
        public var evalEverySteps = 0
        /// Evaluation sets and how many of their first examples to score.
        public var evalSets: [String: Int] = [:]
        public var evalBatch = 20
        /// 0: only the final checkpoint.
        public var checkpointEverySteps = 0
        /// Steps after which a checkpoint is written whatever `checkpointEverySteps` says: the
        /// pruning schedule's snapshots (the shell keeps those under their own name).
        public var snapshotSteps: Set<Int> = []
        /// Failed checkpoint writes in a row that stop the run (`checkpoint.on_write_failure:
        /// stop`); nil keeps training (`continue`).
        public var checkpointFailuresToStop: Int? = 3
        /// Deterministic runs: the compute signature every worker must report (what a gradient's
        /// last bits depend on: OpenBLAS's kernel, csptrain's kernel variant); nil: any. Fixed
        /// before the first worker joins (the configuration's `compute_signature`, a resumed
        /// checkpoint's, or the coordinator's own): a worker's claim never sets it.
        public var computeSignature: String?
        /// Where `computeSignature` came from, for refusals ("compute_signature in the configuration").
        public var computeSignatureOrigin = "the coordinator's own"
        /// Workers at most (`security.max_workers`); nil: no limit.
        public var maxWorkers: Int?
        /// Join attempts (Hellos) one host may make per minute (`security.join_attempts_per_minute`); nil: no limit.
        public var joinAttemptsPerMinute: Int?
        public var protocolVersion: UInt32 = 1

        public init(totalSteps: Int) { self.totalSteps = totalSteps }
    }

    /// The machine's own numbers of an applied step, for its metrics line.
    public struct StepRecord: Sendable, Equatable {
        public var step: Int
        public var workers: Int
        public var stepSeconds: Double
        public var duplicateChunks: Int
        public var staleChunks: Int
        public var reassignedMicroBatches: Int
        /// Set on the steps after which the validation sets were scored.
        public var validation: [String: EvaluationCounts]?
    }

    /// What the parameter server reports after applying a step.
    public struct AppliedStep: Sendable, Equatable {
        public var step: Int
        /// Nil when applied; otherwise why the step was not applied (the run fails).
        public var failure: String?
        /// Seconds the shell was busy applying (nobody could be heard meanwhile).
        public var busySeconds: Double
        public init(step: Int, failure: String? = nil, busySeconds: Double = 0) {
            self.step = step
            self.failure = failure
            self.busySeconds = busySeconds
        }
    }

    public enum Event: Sendable {
        /// `entropy`: fresh random bytes (≥ 32) for hellos and proofs (nonce, session), else empty.
        case request(RequestID, Inbound, Origin, entropy: Data, now: Double)
        /// The reply to a request has been handed to its connection, or could not be: until
        /// then the request counts as in flight (a reply waiting for the connection holds its
        /// bytes, the whole weights for a task).
        case replySent(RequestID, now: Double)
        case tick(now: Double)
        case pipeClosed(UInt32, now: Double)
        case stepApplied(AppliedStep, now: Double)
        case checkpointWritten(step: Int, now: Double)
        /// `message`: why (the file, the errno, the disk), for "checkpoint of step N not written: …".
        case checkpointFailed(step: Int, message: String, now: Double)
        /// Ctrl-C, SIGTERM, or the shell's own failure (all workers' processes gone, say).
        case shutdown(Status, message: String, now: Double)
    }

    public enum Directive: Sendable, Equatable {
        /// Answer the request. The shell reports `.replySent` once the reply has left.
        case reply(RequestID, Response)
        /// Fold the chunk of request `RequestID` into the accumulator at `offset`, weighted by
        /// `examples`; `lossSum` is set on a micro-batch's first chunk. Comes before its reply.
        case fold(RequestID, offset: Int, examples: Int, microBatch: Int, lossSum: Double?)
        /// Every micro-batch of step `step` is in: update, project, encode version `step + 2`.
        /// The shell answers with `.stepApplied`.
        case applyStep(step: Int)
        /// Snapshot the state after `step` applied steps and write it; `final`: the run's last.
        /// The shell answers with `.checkpointWritten` or `.checkpointFailed`.
        case writeCheckpoint(step: Int, final: Bool)
        /// Append the step's line to metrics.jsonl (and the ledger's lines for the step).
        case recordStep(StepRecord)
        case memberJoined(Membership.Member, peer: String)
        case memberRemoved(Membership.Member, reason: Membership.Reason, detail: String, reassigned: [Int])
        /// Log lines for the person at the terminal; `peer` names the other side when known.
        case warn(String, peer: String?)
        case note(String)
        case startedTraining(step: Int, workers: Int)
        /// The run is over: write the summary and stop serving once workers were told.
        case finish(Status, message: String?)
    }

    public let settings: Settings
    public let runID: String
    public internal(set) var phase: Phase
    public internal(set) var membership = Membership()
    /// Names of every worker that ever joined (for the summary).
    public internal(set) var workerNames: Set<String> = []
    var handshake: JoinHandshake
    var order: DataOrder
    public let grid: ChunkGrid
    public internal(set) var round: StepRound
    public internal(set) var evaluation: EvalRound?
    var evalCounts: [String: EvaluationCounts] = [:]
    public internal(set) var lastValidation: [String: EvaluationCounts] = [:]
    /// Applied steps so far (the weights are at version `step + 1`).
    public internal(set) var step: Int
    public let startStep: Int
    /// The oldest version a values-only delta can be applied to (nil: no delta for this version).
    var deltaBase: UInt64?
    /// Deterministic runs: the signature every worker must compute with (see ``Settings``).
    public var computeSignature: String? { settings.computeSignature }

    struct Held: Sendable {
        let request: RequestID
        let session: SessionID
        let haveVersion: UInt64
        /// The worker's number for the request (0: not numbered).
        let sequence: UInt64
        let until: Double
        /// The same request as the one whose task was waiting to leave (a REQ re-send).
        var resend = false
    }
    var held: [Held] = []
    /// Members whose gradient for a micro-batch of this step was not finite, by micro-batch.
    var nonFiniteBy: [Int: Set<SessionID>] = [:]
    /// Requests in flight per member: held work requests, and requests answered whose reply
    /// has not been sent yet.
    var inFlight: [SessionID: Int] = [:]
    /// Requests the machine received and whose reply has not been reported sent, with their
    /// sender (for the in-flight count).
    var pending: [RequestID: SessionID] = [:]
    /// Per member, the request whose task reply has not been sent yet.
    var unsentTask: [SessionID: RequestID] = [:]

    // nng's REQ sends a request again when its reply is late: a re-send gets the answer the
    // original got (a numbered work request: Wait once its original's task has left, which REQ
    // took) and has no effect of its own. What that takes is remembered here.
    /// Per member, its last task and the request that got it: the version it asked with and its
    /// number (a re-sent work request is told to wait once that task has left, or, unnumbered,
    /// gets the same task).
    var lastTask: [SessionID: (have: UInt64, sequence: UInt64, task: TaskAssignment)] = [:]
    /// Per member, the highest work request number seen: a lower one is a re-send of an older
    /// request that arrived late (requests are decoded in parallel), not a new request.
    var newestWorkRequest: [SessionID: UInt64] = [:]
    /// Chunks and evaluation results each member delivered for the current and the previous
    /// weights version: a re-send is acknowledged as accepted again, not counted or folded twice.
    var delivered: [SessionID: Set<Delivery>] = [:]
    /// Welcomes by server nonce, while their member is in the run (a re-sent Proof).
    var welcomes: [Data: (session: SessionID, clientNonce: Data, mac: Data, serverMAC: Data, workerID: UInt32)] = [:]
    /// Members that left lately, and on which connection (a re-sent Leave gets its goodbye again).
    var departed: [SessionID: UInt32] = [:]
    var departedOrder: [SessionID] = []
    /// Re-sent requests answered from memory.
    public internal(set) var resentRequests = 0
    /// Work requests that came while the member's last micro-batch was still arriving (some of
    /// its chunks in, not all): workers that ask for more work beside their sends.
    public internal(set) var overlappedWorkRequests = 0
    /// Requests refused because a session was used from another connection.
    public internal(set) var borrowedSessionRefusals = 0
    var joinLimit: JoinRateLimit

    struct Delivery: Hashable, Sendable {
        let weightsVersion: UInt64
        let microBatch: Int
        /// A gradient chunk's (tensor, chunk); (-1, -1) for an evaluation result.
        let tensor: Int
        let chunk: Int
        let set: String
    }

    var stepStarted = 0.0
    /// When the run last had no member (nil while it has one).
    var emptySince: Double?
    public internal(set) var duplicateChunks = 0
    public internal(set) var staleChunks = 0
    public internal(set) var reassignedMicroBatches = 0
    /// The step whose checkpoint was last asked for, and the last one known written.
    public internal(set) var lastCheckpointRequested: Int
    public internal(set) var lastCheckpointWritten: Int?
    var checkpointFailuresInRow = 0
    /// The checkpoint asked for and not yet reported on.
    var awaitingCheckpoint: Int?
    /// Between `.applyStep` and `.stepApplied`: nothing is handed out and no chunk is folded.
    var applying = false
    var checkpointAfterEvaluation = false
    var finishAfterEvaluation = false
    /// The step line that waits for an evaluation's scores.
    var pendingRecord: StepRecord?
    /// Why the run ends (set when it starts finishing).
    var ending: (status: Status, message: String?)?
    /// Members told the run is over.
    public internal(set) var toldFinished: Set<SessionID> = []

    /// `step`: applied steps so far (0, or a checkpoint's step).
    public init(settings: Settings, runID: String, token: [UInt8], order: DataOrder, grid: ChunkGrid,
                step: Int = 0, now: Double) {
        self.settings = settings
        self.runID = runID
        handshake = JoinHandshake(token: token, runID: runID)
        self.order = order
        self.grid = grid
        self.step = step
        startStep = step
        joinLimit = JoinRateLimit(perMinute: settings.joinAttemptsPerMinute)
        lastCheckpointRequested = step
        lastCheckpointWritten = step > 0 ? step : nil
        phase = .waitingForWorkers
        round = StepRound(step: step, weightsVersion: UInt64(step + 1), microBatches: self.order.microBatches(forStep: step), grid: grid)
        emptySince = now
    }

    /// The weights version workers compute with.
    public var weightsVersion: UInt64 { UInt64(step + 1) }

    public var isFinished: Bool { if case .finished = phase { true } else { false } }

    /// True once every member has been told the run is over.
    public var everyoneToldFinished: Bool { membership.members.keys.allSatisfy { toldFinished.contains($0) } }

    /// The examples of step `step` by epoch, for the ledger.
    public mutating func examplesByEpoch(forStep step: Int) -> [(epoch: Int, examples: [Int])] {
        order.examplesByEpoch(forStep: step)
    }

    /// A resumed run already at its total has nothing to do: it finishes at once.
    public mutating func start(now: Double) -> [Directive] {
        // Waiting for workers counts from when the coordinator can be reached.
        if membership.count == 0 { emptySince = now }
        guard step >= settings.totalSteps else { return [] }
        return beginFinishing(.completed, message: "already complete at step \(step)", now: now)
    }

    /// Feeds one event; returns what the shell must do, in order.
    public mutating func handle(_ event: Event) -> [Directive] {
        var out: [Directive]
        switch event {
        case let .request(id, inbound, origin, entropy, now):
            out = request(id, inbound, origin, entropy: entropy, now: now)
        case let .replySent(id, now):
            out = replySent(id, now: now)
        case let .tick(now):
            out = tick(now: now)
        case let .pipeClosed(pipe, now):
            out = pipeClosed(pipe, now: now)
        case let .stepApplied(applied, now):
            out = stepApplied(applied, now: now)
        case let .checkpointWritten(written, now):
            out = checkpointWritten(written, now: now)
        case let .checkpointFailed(failed, message, now):
            out = checkpointFailed(failed, message: message, now: now)
        case let .shutdown(status, message, now):
            out = beginFinishing(status, message: message, now: now)
        }
        return out
    }
}
