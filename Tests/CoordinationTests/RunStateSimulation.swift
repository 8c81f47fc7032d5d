import Foundation
import Testing
@testable import Coordination
import Tensors

/// Seeded random runs of RunStateMachine: simulated workers of several kinds against the
/// simulated shell, with the invariants checked after every event (RunStatePropertyTests).

struct SimWorker {
    enum Kind: CaseIterable {
        /// Asks for work, computes, sends every chunk; asks for its next task while sending.
        case responsive
        /// Takes one task and goes silent.
        case unresponsive
        /// Responsive; the scenario's churn closes its connection (it joins again).
        case flaky
        /// Responsive, plus duplicate, stale and foreign chunks (for micro-batches it does not hold).
        case noisy
        /// Responsive, but asks for work in bursts past the in-flight cap.
        case flooder
        /// Responsive; nng's REQ re-sends some of its requests (the same request again, on the
        /// same connection): each must get the same answer and have no second effect.
        case resender
        /// Responsive, and uses other members' sessions (learnt from a log or a capture) from its
        /// own connection: every such request is refused and the members keep their sessions.
        case thief
    }

    struct Job {
        var task: TaskAssignment
        var readyAt: Double
        var remaining: [(tensor: Int, chunk: Int)]
    }

    let name: String
    let kind: Kind
    var pipe: UInt32
    var session: SessionID?
    /// The session of its last life, once it was dropped.
    var formerSession: SessionID?
    var version: UInt64 = 0
    /// Work requests not answered yet.
    var waiting = 0
    /// Work requests numbered so far (the worker numbers them; a REQ re-send repeats the number).
    var requests: UInt64 = 0
    var jobs: [Job] = []
    var lastTraining: TaskAssignment?
    var silent = false
    var done = false
}

/// One scenario: the machine's settings, the workers (the first, the anchor, is responsive and
/// never disconnected) and how often things go wrong.
struct Scenario {
    var settings: RunStateMachine.Settings
    var microBatches: Int
    var kinds: [SimWorker.Kind]
    /// Chance that a checkpoint write fails.
    var checkpointFailure: Double
    /// Chance per round of a shutdown.
    var shutdownChance: Double
    /// Chance per round of a closed connection, a leave or a new worker.
    var churn: Double
    var maxTick = 0.5
    var maxCompute = 1.0
    /// Replies leave once per round rather than when made (a slow connection): until then
    /// they count in flight.
    var slowReplies = false

    static func random(_ rng: inout SplitMix64) -> Scenario {
        var s = RunStateMachine.Settings(totalSteps: rng.int(1 ... 6))
        s.stepDeadlineSeconds = [3.0, 6.0].randomElement(using: &rng)!
        s.pollHoldSeconds = [0.5, 1.0, 2.0].randomElement(using: &rng)!
        s.maxRequestsInFlight = [1, 2, 4, 8].randomElement(using: &rng)!
        s.evalEverySteps = [0, 0, 1, 2].randomElement(using: &rng)!
        s.evalSets = rng.chance(0.5) ? ["dev": rng.int(1 ... 5)] : ["dev": 3, "test": 2]
        s.evalBatch = rng.int(1 ... 3)
        s.checkpointEverySteps = [0, 1, 2].randomElement(using: &rng)!
        s.checkpointFailuresToStop = rng.chance(0.5) ? 3 : nil
        s.waitForWorkersSeconds = rng.chance(0.5) ? 5 : nil
        let kinds = [SimWorker.Kind.responsive] + (0 ..< rng.int(0 ... 4)).map { _ in SimWorker.Kind.allCases.randomElement(using: &rng)! }
        s.minWorkers = rng.int(1 ... min(2, kinds.count))
        return Scenario(settings: s, microBatches: rng.int(1 ... 4), kinds: kinds,
                        checkpointFailure: [0, 0, 0.3, 1].randomElement(using: &rng)!,
                        shutdownChance: rng.chance(0.2) ? 0.01 : 0, churn: [0, 0.02, 0.05].randomElement(using: &rng)!)
    }

    var summary: String {
        let s = settings
        return "\(kinds.count) workers \(kinds), \(microBatches) micro-batches, \(s.totalSteps) steps, deadline \(s.stepDeadlineSeconds) s, "
            + "poll hold \(s.pollHoldSeconds) s, in flight ≤ \(s.maxRequestsInFlight), eval every \(s.evalEverySteps), "
            + "checkpoint every \(s.checkpointEverySteps) (fails \(checkpointFailure), stop after \(s.checkpointFailuresToStop.map(String.init) ?? "never")), "
            + "shutdown \(shutdownChance), churn \(churn)\(slowReplies ? ", slow replies" : "")"
    }

    /// The liveness bound of a step with `reassignments`: each holder that fails costs a deadline
    /// (plus a tick to notice it); the anchor may have to compute every micro-batch itself, and a
    /// request may be held for a poll hold.
    func stepBound(reassignments: Int) -> Double {
        (settings.stepDeadlineSeconds + maxTick) * Double(reassignments + 1)
            + Double(microBatches) * (maxCompute + 3 * maxTick) + settings.pollHoldSeconds + maxTick
    }
}

/// Checks the machine's invariants after every event of a simulated shell.
final class InvariantChecker {
    let scenario: Scenario
    private(set) var violations: [String] = []
    /// Chunk keys folded, by step: (micro-batch, offset).
    private var folded: [Int: Set<[Int]>] = [:]
    private var losses: [Int: [Int: Int]] = [:]
    /// The step whose chunks are being folded (applied steps so far).
    private var foldingStep: Int
    private(set) var applied: [Int] = []
    private(set) var finished = false
    private var training: (step: Int, since: Double, reassignments: Int)?
    private var lateReported = false
    /// Requests sent with another member's session from another connection.
    var borrowed: Set<RequestID> = []

    init(_ scenario: Scenario, startStep: Int) {
        self.scenario = scenario
        foldingStep = startStep
    }

    func fail(_ message: String, _ shell: SimulatedShell) {
        if violations.count < 5 { violations.append("t=\(String(format: "%.2f", shell.now)) \(message)") }
    }

    func check(_ shell: SimulatedShell, _ out: [Directive]) {
        let m = shell.machine
        let finishedBefore = finished
        let perMicroBatch = TestRun.grid.totalChunks
        for directive in out {
            switch directive {
            case let .fold(id, offset, examples, mb, lossSum):
                if finished { fail("fold after the run finished", shell) }
                guard case let .chunk(c)? = shell.requests[id]?.inbound, let origin = shell.requests[id]?.origin else {
                    fail("fold of request \(id), which is not a chunk", shell); continue
                }
                if c.microBatch != mb || TestRun.grid.offset(tensor: c.tensor, chunk: c.chunkIndex) != offset
                    || c.exampleCount != examples || origin.step != UInt64(foldingStep) {
                    fail("fold of request \(id) does not match its chunk", shell)
                }
                if folded[foldingStep, default: []].insert([mb, offset]).inserted == false {
                    fail("step \(foldingStep + 1): micro-batch \(mb) offset \(offset) folded twice", shell)
                }
                if lossSum != nil { losses[foldingStep, default: [:]][mb, default: 0] += 1 }
            case let .applyStep(step):
                if finished { fail("step \(step + 1) applied after the run finished", shell) }
                if step != foldingStep { fail("applied step \(step + 1) while folding step \(foldingStep + 1) (applied: \(applied))", shell) }
                let keys = folded[step] ?? []
                if keys.count != scenario.microBatches * perMicroBatch {
                    fail("step \(step + 1) applied with \(keys.count) chunks folded of \(scenario.microBatches * perMicroBatch)", shell)
                }
                if (losses[step] ?? [:]) != Dictionary(uniqueKeysWithValues: (0 ..< scenario.microBatches).map { ($0, 1) }) {
                    fail("step \(step + 1): losses recorded \(losses[step] ?? [:]), not once per micro-batch", shell)
                }
                if let t = training, t.step == step {
                    let bound = scenario.stepBound(reassignments: t.reassignments)
                    if shell.now - t.since > bound {
                        fail("step \(step + 1) took \(shell.now - t.since) s > \(bound) s with \(t.reassignments) reassignments", shell)
                    }
                }
                applied.append(step)
                foldingStep = step + 1
            case let .finish(status, message):
                if finished { fail("finished twice", shell) }
                finished = true
                if status == .completed, !(shell.checkpointsWritten.contains(m.step) || m.step == m.startStep && m.step > 0) {
                    fail("completed without a written final checkpoint (\(message ?? ""))", shell)
                }
            case let .reply(id, response) where finishedBefore:
                // Once finished, a worker asking for work is told so, member or not (a session
                // used from another connection stays refused).
                guard case .work? = shell.requests[id]?.inbound, !borrowed.contains(id) else { break }
                if case .finished = response {} else { fail("a work request after the finish got \(response)", shell) }
            default:
                break
            }
        }
        if finished, !shell.unanswered.isEmpty { fail("\(shell.unanswered.count) requests unanswered after the finish", shell) }
        if !shell.strayReplies.isEmpty { fail("replies to unknown or answered requests \(shell.strayReplies)", shell) }
        // A dropped member holds no work.
        for i in m.round.microBatches.indices {
            if case let .assigned(to: s, _) = m.round.microBatches[i].status, m.membership.members[s] == nil {
                fail("micro-batch \(i) assigned to \(s), not a member", shell)
            }
        }
        for (i, batch) in zip(0..., m.evaluation?.batches ?? []) {
            if case let .assigned(to: s, _) = batch.status, m.membership.members[s] == nil {
                fail("evaluation batch \(i) assigned to \(s), not a member", shell)
            }
        }
        // The in-flight cap.
        var inFlight: [SessionID: Int] = [:]
        for session in shell.unanswered.values where m.membership.members[session] != nil { inFlight[session, default: 0] += 1 }
        for (session, n) in inFlight where n > scenario.settings.maxRequestsInFlight {
            fail("member \(session) has \(n) requests unanswered (cap \(scenario.settings.maxRequestsInFlight))", shell)
        }
        // Liveness: a training step never outlives its bound.
        if case let .training(step) = m.phase {
            if training?.step != step { training = (step, shell.now, 0); lateReported = false }
            training!.reassignments = m.round.reassignments
            let bound = scenario.stepBound(reassignments: m.round.reassignments)
            if shell.now - training!.since > bound, !lateReported {
                lateReported = true
                fail("step \(step + 1) open for \(shell.now - training!.since) s > \(bound) s (reassignments \(m.round.reassignments))", shell)
            }
        }
    }
}
