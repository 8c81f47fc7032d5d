import Foundation
import Testing
@testable import Coordination
import Tensors

/// The test harness of RunStateMachine: a simulated shell that feeds events and performs the
/// directives the way Runtime's CoordinatorShell does (a step is applied at once, checkpoints are
/// reported when the test says), plus a seeded generator and workers' requests.

typealias Directive = RunStateMachine.Directive

/// SplitMix64 (Steele, Lea and Flood, 2014): small, fast, and the same sequence on every machine.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> Data { Data((0 ..< count).map { _ in UInt8(truncatingIfNeeded: next()) }) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0 ..< 1, using: &self) < p }
    mutating func uniform(_ range: ClosedRange<Double>) -> Double { Double.random(in: range, using: &self) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
}

/// The run every test trains: a model of two tensors (10 and 3 values) cut into chunks of 4
/// values, so a micro-batch is 4 chunks ([4, 4, 2] and [3]).
enum TestRun {
    static let token = [UInt8](repeating: 0x5A, count: 32)
    static let id = "run-under-test"
    static let grid = ChunkGrid(tensors: [(0, 10), (10, 3)], chunkValues: 4)
    static let protocolVersion: UInt32 = 1

    static func settings(totalSteps: Int, _ change: (inout RunStateMachine.Settings) -> Void = { _ in }) -> RunStateMachine.Settings {
        var s = RunStateMachine.Settings(totalSteps: totalSteps)
        change(&s)
        return s
    }

    /// Micro-batches of unequal size (global batch 2M + 1) over 24 examples.
    static func machine(_ settings: RunStateMachine.Settings, microBatches: Int = 2, step: Int = 0, now: Double = 0) -> RunStateMachine {
        let order = DataOrder(seed: 1, examples: 24, globalBatch: 2 * microBatches + 1, microBatches: microBatches)
        return RunStateMachine(settings: settings, runID: id, token: token, order: order, grid: grid, step: step, now: now)
    }

    static func chunkHeader(_ task: TaskAssignment, tensor: Int, chunk: Int, microBatch: Int? = nil,
                            lossSum: Double = 1.5, sumOfSquares: Double = 1) -> ChunkHeader {
        ChunkHeader(microBatch: microBatch ?? task.index, tensor: tensor, chunkIndex: chunk, chunkCount: grid.tensorChunkCounts[tensor],
                    exampleCount: task.examples.count, lossSum: lossSum, weightsVersion: task.weightsVersion,
                    valueCount: grid.valueCount(tensor: tensor, chunk: chunk), sumOfSquares: sumOfSquares)
    }

    /// Every (tensor, chunk) of a micro-batch.
    static let chunkKeys: [(tensor: Int, chunk: Int)] =
        grid.tensorChunkCounts.enumerated().flatMap { t, n in (0 ..< n).map { (t, $0) } }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A joined worker as a test drives it.
struct TestWorker {
    let name: String
    var pipe: UInt32
    let session: SessionID
    /// The weights version it holds.
    var version: UInt64 = 0
}

/// Performs directives as CoordinatorShell does and remembers everything.
final class SimulatedShell {
    var machine: RunStateMachine
    var now: Double
    var rng: SplitMix64
    private(set) var performed: [Directive] = []
    private(set) var responses: [RequestID: Response] = [:]
    private(set) var foldedRequests: Set<RequestID> = []
    /// Requests fed to the machine and not answered yet, with the sender's session (empty before joining).
    private(set) var unanswered: [RequestID: SessionID] = [:]
    private(set) var requests: [RequestID: (inbound: Inbound, origin: Origin)] = [:]
    /// Replies to a request that was never sent or was already answered.
    private(set) var strayReplies: [RequestID] = []
    /// Checkpoints asked for and not yet reported, oldest first (the writer is FIFO).
    private(set) var checkpointsAsked: [(step: Int, final: Bool)] = []
    private(set) var checkpointsWritten: [Int] = []
    private var nextID: RequestID = 1
    /// Events fed (a step applied within an event is not counted apart).
    private(set) var events = 0
    /// Replies made but not yet reported sent (while `holdReplies`), oldest first.
    private(set) var unsent: [RequestID] = []
    /// Keep replies from leaving (a slow connection) until `sendReplies` is called.
    var holdReplies = false
    /// Called after every event with what it produced (the invariant checks).
    var afterEvent: ((SimulatedShell, [Directive]) -> Void)?

    init(_ machine: RunStateMachine, now: Double = 0, seed: UInt64 = 1) {
        self.machine = machine
        self.now = now
        rng = SplitMix64(seed: seed)
    }

    convenience init(_ settings: RunStateMachine.Settings, microBatches: Int = 2, seed: UInt64 = 1) {
        self.init(TestRun.machine(settings, microBatches: microBatches), seed: seed)
    }

    @discardableResult
    func handle(_ event: RunStateMachine.Event) -> [Directive] {
        var out: [Directive] = []
        events += 1
        perform(machine.handle(event), into: &out)
        afterEvent?(self, out)
        return out
    }

    @discardableResult
    func start() -> [Directive] {
        var out: [Directive] = []
        perform(machine.start(now: now), into: &out)
        return out
    }

    @discardableResult
    func tick(at time: Double) -> [Directive] {
        now = max(now, time)
        return handle(.tick(now: now))
    }

    /// The id the next request will get (to route its reply, which may come within the event).
    var upcomingID: RequestID { nextID }

    /// Feeds a request (hellos and proofs get 48 bytes of fresh entropy: nonce and session).
    @discardableResult
    func send(_ inbound: Inbound, from origin: Origin) -> RequestID {
        let id = nextID
        nextID += 1
        requests[id] = (inbound, origin)
        unanswered[id] = origin.session
        var entropy = Data()
        switch inbound {
        case .hello, .proof: entropy = rng.bytes(JoinHandshake.nonceBytes + JoinHandshake.sessionBytes)
        default: break
        }
        handle(.request(id, inbound, origin, entropy: entropy, now: now))
        return id
    }

    /// Reports the first `count` held-back replies (all by default) as sent.
    @discardableResult
    func sendReplies(_ count: Int = .max) -> [Directive] {
        let ids = unsent.prefix(count)
        unsent.removeFirst(ids.count)
        return ids.flatMap { handle(.replySent($0, now: now)) }
    }

    /// Reports the oldest checkpoint asked for as written or failed.
    @discardableResult
    func reportCheckpoint(written: Bool, message: String = "No space left on device") -> [Directive] {
        guard !checkpointsAsked.isEmpty else { return [] }
        let (step, _) = checkpointsAsked.removeFirst()
        if written { checkpointsWritten.append(step) }
        return handle(written ? .checkpointWritten(step: step, now: now) : .checkpointFailed(step: step, message: message, now: now))
    }

    private func perform(_ directives: [Directive], into out: inout [Directive]) {
        for directive in directives {
            out.append(directive)
            performed.append(directive)
            switch directive {
            case let .reply(id, response):
                if unanswered.removeValue(forKey: id) == nil { strayReplies.append(id) }
                responses[id] = response
                // The shell sends a reply when it is made, unless the test holds it back.
                if holdReplies { unsent.append(id) } else { perform(machine.handle(.replySent(id, now: now)), into: &out) }
            case let .fold(id, _, _, _, _):
                foldedRequests.insert(id)
            case let .applyStep(step):
                // The shell applies a step within the event that completed it.
                perform(machine.handle(.stepApplied(.init(step: step), now: now)), into: &out)
            case let .writeCheckpoint(step, final):
                checkpointsAsked.append((step, final))
            default:
                break
            }
        }
    }
}

// MARK: Workers' requests

extension SimulatedShell {
    func origin(pipe: UInt32, session: SessionID = SessionID(Data()), step: UInt64 = 0, sequence: UInt64 = 0,
                runID: String = TestRun.id, protocolVersion: UInt32 = TestRun.protocolVersion) -> Origin {
        Origin(pipe: pipe, peer: "peer-\(pipe)", protocolVersion: protocolVersion, runID: runID, session: session, step: step,
               sequence: sequence)
    }

    func origin(_ worker: TestWorker, step: UInt64 = 0) -> Origin { origin(pipe: worker.pipe, session: worker.session, step: step) }

    /// Hello, then a proof of `token` for the challenge; returns the proof's reply.
    func join(_ name: String, pipe: UInt32, token: [UInt8] = TestRun.token, runID: String = TestRun.id) -> Response? {
        let clientNonce = rng.bytes(32)
        let hello = send(.hello(workerName: name, clientNonce: clientNonce), from: origin(pipe: pipe))
        guard case let .challenge(serverNonce) = responses[hello] else { return responses[hello] }
        let mac = JoinHandshake.joinMAC(token: token, runID: runID, serverNonce: serverNonce, clientNonce: clientNonce, workerName: name)
        let proof = send(.proof(workerName: name, clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, computeSignature: ""),
                         from: origin(pipe: pipe, runID: runID))
        return responses[proof]
    }

    func joined(_ name: String, pipe: UInt32) throws -> TestWorker {
        let reply = join(name, pipe: pipe)
        guard case let .welcome(_, session, _) = reply else {
            throw HarnessError("worker \(name) was not welcomed: \(String(describing: reply))")
        }
        return TestWorker(name: name, pipe: pipe, session: session)
    }

    @discardableResult
    func askForWork(_ worker: TestWorker, have: UInt64? = nil, sequence: UInt64 = 0) -> RequestID {
        send(.work(haveVersion: have ?? worker.version), from: origin(pipe: worker.pipe, session: worker.session, sequence: sequence))
    }

    /// The reply to `id` (a method, so that `shell.response(shell.send(…))` reads it after the send).
    func response(_ id: RequestID) -> Response? { responses[id] }

    func task(_ id: RequestID) -> TaskAssignment? {
        if case let .task(t) = responses[id] { t } else { nil }
    }

    @discardableResult
    func sendChunk(_ worker: TestWorker, _ task: TaskAssignment, tensor: Int = 0, chunk: Int = 0, microBatch: Int? = nil,
                   sumOfSquares: Double = 1) -> RequestID {
        send(.chunk(TestRun.chunkHeader(task, tensor: tensor, chunk: chunk, microBatch: microBatch, sumOfSquares: sumOfSquares)),
             from: origin(worker, step: task.weightsVersion - 1))
    }

    @discardableResult
    func sendAllChunks(_ worker: TestWorker, _ task: TaskAssignment) -> [RequestID] {
        TestRun.chunkKeys.map { sendChunk(worker, task, tensor: $0.tensor, chunk: $0.chunk) }
    }

    /// Asks for work and computes it (training or evaluation) until `steps` more steps are applied.
    func train(_ worker: inout TestWorker, steps: Int) {
        let target = machine.step + steps
        var guardCount = 0
        while machine.step < target, guardCount < 1000 {
            guardCount += 1
            guard let t = task(askForWork(worker)) else { Issue.record("no task at step \(machine.step)"); return }
            worker.version = t.weightsVersion
            switch t.kind {
            case .train: sendAllChunks(worker, t)
            case let .eval(set):
                send(.evalResult(batch: t.index, set: set, weightsVersion: t.weightsVersion,
                                 counts: EvaluationCounts(wordEdits: 1, words: 10, utterances: t.examples.count)),
                     from: origin(worker))
            }
        }
    }

    func refusal(_ id: RequestID) -> RefusalCode? {
        if case let .refusal(code, _) = responses[id] { code } else { nil }
    }

    var warnings: [String] { performed.compactMap { if case let .warn(m, _) = $0 { m } else { nil } } }
    var finishes: [RunStateMachine.Status] { performed.compactMap { if case let .finish(s, _) = $0 { s } else { nil } } }
    var records: [RunStateMachine.StepRecord] { performed.compactMap { if case let .recordStep(r) = $0 { r } else { nil } } }
    var checkpointRequests: [(step: Int, final: Bool)] {
        performed.compactMap { if case let .writeCheckpoint(s, f) = $0 { (s, f) } else { nil } }
    }
    var removals: [(name: String, reason: Membership.Reason, reassigned: [Int])] {
        performed.compactMap { if case let .memberRemoved(m, r, _, re) = $0 { (m.name, r, re) } else { nil } }
    }
}

func refusalCode(_ response: Response?) -> RefusalCode? {
    if case let .refusal(code, _) = response { code } else { nil }
}

extension SimulatedShell {
    var finishMessages: [String?] { performed.compactMap { if case let .finish(_, m) = $0 { m } else { nil } } }
    var folds: Int { performed.filter { if case .fold = $0 { true } else { false } }.count }
    /// True when request `id`'s chunk was folded.
    func folded(_ id: RequestID) -> Bool { foldedRequests.contains(id) }
}
