import Foundation
import Testing
@testable import Coordination
import Tensors

/// RunStateMachine, one behaviour per test, driven through the simulated shell (the run: two
/// micro-batches a step, four chunks a micro-batch).
struct RunStateMachineTests {
    func makeShell(_ totalSteps: Int = 3, _ change: (inout RunStateMachine.Settings) -> Void = { _ in }) -> SimulatedShell {
        SimulatedShell(TestRun.settings(totalSteps: totalSteps, change))
    }

    // MARK: Joining

    @Test func aRunStartsTrainingOnceMinWorkersHaveJoined() throws {
        let shell = makeShell { $0.minWorkers = 2 }
        let a = try shell.joined("a", pipe: 1)
        let held = shell.askForWork(a)
        #expect(shell.machine.phase == .waitingForWorkers)
        #expect(shell.responses[held] == nil)
        _ = try shell.joined("b", pipe: 2)
        #expect(shell.machine.phase == .training(step: 0))
        #expect(shell.performed.contains(.startedTraining(step: 0, workers: 2)))
        #expect(shell.task(held)?.index == 0, "the request held while waiting is served when training starts")
    }

    @Test func aProofMadeWithAnotherTokenIsRefusedAsABadProof() {
        let shell = makeShell()
        #expect(refusalCode(shell.join("mallory", pipe: 1, token: [UInt8](repeating: 1, count: 32))) == .badProof)
        #expect(shell.machine.membership.count == 0)
    }

    @Test func aProofForAChallengeNeverIssuedIsRefusedAsExpired() {
        let shell = makeShell()
        let clientNonce = Data(repeating: 3, count: 32), serverNonce = Data(repeating: 4, count: 32)
        let mac = JoinHandshake.joinMAC(token: TestRun.token, runID: TestRun.id, serverNonce: serverNonce, clientNonce: clientNonce, workerName: "a")
        let id = shell.send(.proof(workerName: "a", clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, computeSignature: ""),
                            from: shell.origin(pipe: 1))
        #expect(shell.refusal(id) == .challengeExpired)
    }

    @Test func aChallengeVerifiesOneProofOnly() throws {
        let shell = makeShell()
        let clientNonce = Data(repeating: 3, count: 32)
        let hello = shell.send(.hello(workerName: "a", clientNonce: clientNonce), from: shell.origin(pipe: 1))
        guard case let .challenge(serverNonce) = shell.responses[hello] else { throw HarnessError("no challenge") }
        let mac = JoinHandshake.joinMAC(token: TestRun.token, runID: TestRun.id, serverNonce: serverNonce, clientNonce: clientNonce, workerName: "a")
        let proof = Inbound.proof(workerName: "a", clientNonce: clientNonce, serverNonce: serverNonce, mac: mac, computeSignature: "")
        let first = shell.send(proof, from: shell.origin(pipe: 1))
        guard case .welcome = shell.responses[first] else { throw HarnessError("not welcomed") }
        // The same proof from another connection (a replay) finds no challenge; from the same one
        // it is a REQ re-send, answered with the same welcome (see SessionBindingTests).
        #expect(shell.refusal(shell.send(proof, from: shell.origin(pipe: 2))) == .challengeExpired)
        #expect(shell.machine.membership.count == 1)
    }

    @Test func aHelloWithAShortClientNonceIsRefusedAsMalformed() {
        let shell = makeShell()
        let id = shell.send(.hello(workerName: "a", clientNonce: Data(repeating: 1, count: 8)), from: shell.origin(pipe: 1))
        #expect(shell.refusal(id) == .malformed)
    }

    @Test func aProofForAnotherRunIsRefusedAsTheWrongRun() {
        let shell = makeShell()
        #expect(refusalCode(shell.join("a", pipe: 1, runID: "another-run")) == .wrongRun)
        #expect(shell.machine.membership.count == 0)
    }

    @Test func aRequestInAnotherProtocolVersionIsRefusedAsAVersionMismatch() {
        let shell = makeShell()
        let id = shell.send(.hello(workerName: "a", clientNonce: Data(repeating: 1, count: 32)), from: shell.origin(pipe: 1, protocolVersion: 2))
        #expect(shell.refusal(id) == .versionMismatch)
    }

    // MARK: Tasks and their weights

    @Test func aNewWorkersTaskCarriesTheFullWeights() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        #expect(shell.task(shell.askForWork(a, have: 0))?.weights == .full(version: 1))
    }

    @Test func aWorkerHoldingTheVersionGetsATaskWithoutWeights() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        #expect(shell.task(shell.askForWork(a, have: 1))?.weights == WeightsAttachment.none)
    }

    @Test func aWorkerOneVersionBehindGetsADeltaAfterAStep() throws {
        let shell = makeShell()
        var a = try shell.joined("a", pipe: 1)
        let b = try shell.joined("b", pipe: 2), c = try shell.joined("c", pipe: 3)
        shell.train(&a, steps: 1)
        #expect(shell.task(shell.askForWork(b, have: 1))?.weights == .delta(version: 2))
        #expect(shell.task(shell.askForWork(c, have: 0))?.weights == .full(version: 2), "two versions behind: the whole model")
    }

    @Test func aHeldWorkRequestIsToldToWaitAfterThePollHold() throws {
        let shell = makeShell { $0.minWorkers = 2; $0.pollHoldSeconds = 2 }
        let a = try shell.joined("a", pipe: 1)
        let id = shell.askForWork(a)
        shell.tick(at: 1.9)
        #expect(shell.responses[id] == nil)
        shell.tick(at: 2.0)
        #expect(shell.responses[id] == .wait)
    }

    @Test func aRepeatedWorkRequestGivesBackATaskThatReceivedNoChunk() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let first = try #require(shell.task(shell.askForWork(a)))
        let again = try #require(shell.task(shell.askForWork(a)))
        #expect(again == first, "a re-sent request gets the same answer")
        #expect(shell.machine.round.microBatches[first.index].assignments == 1, "and is not assigned twice")
        #expect(shell.machine.round.assignee(of: 1) == nil, "a holds one micro-batch, not two")
    }

    @Test func aRepeatedWorkRequestKeepsATaskWithChunksInFlight() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let first = try #require(shell.task(shell.askForWork(a)))
        shell.sendChunk(a, first)
        let next = try #require(shell.task(shell.askForWork(a)))
        #expect(next.index != first.index)
        #expect(shell.machine.round.assignee(of: first.index) == a.session)
        #expect(shell.machine.round.assignee(of: next.index) == a.session)
    }

    @Test func theRequestPastTheInFlightCapIsRefusedAsOverloaded() throws {
        let shell = makeShell { $0.minWorkers = 2; $0.maxRequestsInFlight = 3; $0.pollHoldSeconds = 2 }
        let a = try shell.joined("a", pipe: 1)
        let held = (0 ..< 3).map { _ in shell.askForWork(a) }
        #expect(held.allSatisfy { shell.responses[$0] == nil })
        #expect(shell.refusal(shell.askForWork(a)) == .overloaded)
        shell.tick(at: 2)
        #expect(held.allSatisfy { shell.responses[$0] == .wait })
        let next = shell.askForWork(a)
        #expect(shell.responses[next] == nil, "answered requests no longer count")
    }

    @Test func aReplyCountsInFlightUntilItHasLeft() throws {
        let shell = makeShell { $0.maxRequestsInFlight = 2 }
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a)))
        shell.holdReplies = true
        let acks = [shell.sendChunk(a, task, chunk: 0), shell.sendChunk(a, task, chunk: 1)]
        #expect(acks.allSatisfy { shell.response($0) == .ack(.accepted) })
        #expect(shell.refusal(shell.sendChunk(a, task, chunk: 2)) == .overloaded, "both acks are still waiting to leave")
        shell.sendReplies()
        #expect(shell.response(shell.sendChunk(a, task, chunk: 2)) == .ack(.accepted))
    }

    /// Issue 11's flood: a member asking for work many times at once while its last task is still
    /// waiting for the connection gets one task at a time, and past the cap, refusals.
    @Test func workAskedForAgainBeforeTheTaskLeftIsHeldUntilItHas() throws {
        let shell = makeShell { $0.maxRequestsInFlight = 3; $0.pollHoldSeconds = 2 }
        let a = try shell.joined("a", pipe: 1)
        shell.holdReplies = true
        let task = try #require(shell.task(shell.askForWork(a, have: 0)))
        guard case .full = task.weights else { Issue.record("expected the whole weights: \(task)"); return }
        let again = [shell.askForWork(a, have: 0), shell.askForWork(a, have: 0)]
        #expect(again.allSatisfy { shell.response($0) == nil }, "held: the first task has not left")
        #expect(shell.refusal(shell.askForWork(a, have: 0)) == .overloaded)
        // Each leaves before the next is made; served as a request asked again (the same
        // micro-batch comes back).
        shell.sendReplies(1)
        #expect(shell.task(again[0])?.index == task.index)
        #expect(shell.response(again[1]) == nil)
        shell.sendReplies()
        #expect(shell.task(again[1])?.index == task.index)
        #expect(shell.machine.round.assignee(of: 1) == nil, "the member holds one micro-batch, not three")
        // Held past the poll hold while the task has not left: told to wait.
        let late = shell.askForWork(a, have: 0)
        shell.tick(at: 2.5)
        #expect(shell.response(late) == .wait)
        shell.sendReplies()
        #expect(shell.task(shell.askForWork(a, have: 0))?.index == task.index)
    }

    // MARK: Gradient chunks

    @Test func aChunkFromAWorkerTheMicroBatchIsNotAssignedToIsRefused() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1), b = try shell.joined("b", pipe: 2)
        let ta = try #require(shell.task(shell.askForWork(a)))
        _ = try #require(shell.task(shell.askForWork(b)))
        #expect(shell.refusal(shell.sendChunk(b, ta)) == .notAssigned)
        #expect(shell.folds == 0)
    }

    @Test(arguments: [Double.infinity, .nan])
    func aChunkWithNonFiniteValuesIsRefusedNamingTheWorker(sumOfSquares: Double) throws {
        let shell = makeShell()
        let a = try shell.joined("alice", pipe: 1)
        let t = try #require(shell.task(shell.askForWork(a)))
        #expect(shell.refusal(shell.sendChunk(a, t, sumOfSquares: sumOfSquares)) == .malformed)
        #expect(shell.warnings.contains { $0.contains("worker alice") && $0.contains("non-finite") })
        #expect(shell.folds == 0)
    }

    /// One worker's non-finite gradient may be that worker's fault; the same micro-batch diverging
    /// on a second worker is the model's: the run ends as failed instead of stalling.
    @Test func aMicroBatchDivergingOnTwoWorkersEndsTheRun() throws {
        let shell = makeShell()
        let a = try shell.joined("alice", pipe: 1)
        let b = try shell.joined("bob", pipe: 2)
        let ta = try #require(shell.task(shell.askForWork(a)))
        #expect(shell.refusal(shell.sendChunk(a, ta, sumOfSquares: .nan)) == .malformed)
        #expect(!shell.machine.isFinished)
        // alice exits on the refusal; her micro-batch goes to bob, whose gradient diverges too.
        shell.handle(.pipeClosed(1, now: 1))
        var tb = try #require(shell.task(shell.askForWork(b)))
        if tb.index != ta.index { tb = try #require(shell.task(shell.askForWork(b))) }
        #expect(tb.index == ta.index)
        #expect(shell.refusal(shell.sendChunk(b, tb, sumOfSquares: .infinity)) == .malformed)
        #expect(shell.machine.isFinished)
        let finish = shell.performed.compactMap { if case let .finish(status, message) = $0 { (status, message ?? "") } else { nil } }.first
        #expect(finish?.0 == .failed && finish?.1.contains("diverging") == true)
    }

    @Test func aChunkWhoseNormOverflowsFloat32IsRefusedNamingTheWorker() throws {
        let shell = makeShell()
        let a = try shell.joined("alice", pipe: 1)
        let t = try #require(shell.task(shell.askForWork(a)))
        // One finite value of 3e38: Σv² = 9e76, finite in float64, past float32 once weighted.
        #expect(shell.refusal(shell.sendChunk(a, t, sumOfSquares: 9e76)) == .malformed)
        #expect(shell.warnings.contains { $0.contains("worker alice") && $0.contains("overflows float32") })
        #expect(shell.folds == 0)
    }

    // MARK: Failures

    @Test func aMemberPastItsDeadlineIsDroppedAndItsMicroBatchReassigned() throws {
        let shell = makeShell { $0.stepDeadlineSeconds = 5; $0.pollHoldSeconds = 10 }
        let a = try shell.joined("a", pipe: 1), b = try shell.joined("b", pipe: 2)
        let ta = try #require(shell.task(shell.askForWork(a)))
        let tb = try #require(shell.task(shell.askForWork(b)))
        shell.sendAllChunks(b, tb)
        let held = shell.askForWork(b)
        #expect(shell.responses[held] == nil)
        shell.tick(at: 5)
        #expect(shell.removals.isEmpty)
        shell.tick(at: 5.01)
        #expect(shell.removals.map(\.name) == ["a"])
        #expect(shell.removals.first?.reason == .missedDeadline)
        #expect(shell.removals.first?.reassigned == [ta.index])
        #expect(shell.task(held)?.index == ta.index, "the waiting member gets the micro-batch")
        #expect(shell.refusal(shell.sendChunk(a, ta)) == .unknownSession)
    }

    @Test func aClosedPipeDropsEveryMemberOnIt() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        _ = try shell.joined("b", pipe: 1)
        let c = try shell.joined("c", pipe: 2)
        let ta = try #require(shell.task(shell.askForWork(a)))
        shell.handle(.pipeClosed(1, now: 1))
        #expect(Set(shell.removals.map(\.name)) == ["a", "b"])
        #expect(shell.removals.allSatisfy { $0.reason == .disconnected })
        #expect(Array(shell.machine.membership.members.keys) == [c.session])
        #expect(shell.machine.round.assignee(of: ta.index) == nil)
    }

    @Test func aRunWithNoWorkerEndsAsFailedAfterWaitForWorkersSeconds() {
        let shell = makeShell { $0.waitForWorkersSeconds = 30 }
        shell.tick(at: 29.9)
        #expect(shell.finishes.isEmpty)
        shell.tick(at: 30)
        #expect(shell.finishes == [.failed])
        #expect(shell.finishMessages.first??.contains("wait_for_workers_seconds") == true)
        #expect(shell.checkpointRequests.isEmpty, "nothing was trained: nothing to write")
    }

    @Test func theWaitForWorkersCountsFromWhenTheLastMemberLeft() throws {
        let shell = makeShell { $0.waitForWorkersSeconds = 30 }
        _ = try shell.joined("a", pipe: 1)
        shell.tick(at: 20)
        shell.handle(.pipeClosed(1, now: 20))
        shell.tick(at: 49.9)
        #expect(shell.finishes.isEmpty)
        shell.tick(at: 50)
        #expect(shell.finishes == [.failed])
    }

    // MARK: Evaluations, checkpoints and the end

    @Test func anEvaluationFollowsEveryEvalEveryStepsAndItsScoresGoInTheStepsRecord() throws {
        let shell = makeShell(4) { $0.evalEverySteps = 2; $0.evalSets = ["dev": 3]; $0.evalBatch = 2 }
        var a = try shell.joined("a", pipe: 1)
        shell.train(&a, steps: 1)
        #expect(shell.machine.phase == .training(step: 1))
        shell.train(&a, steps: 1)
        #expect(shell.machine.phase == .evaluating(step: 2))
        #expect(shell.records.map(\.step) == [1], "step 2's line waits for its scores")
        for counts in [EvaluationCounts(wordEdits: 1, words: 10, utterances: 2), EvaluationCounts(wordEdits: 2, words: 5, utterances: 1)] {
            let t = try #require(shell.task(shell.askForWork(a)))
            #expect(t.kind == .eval(set: "dev"))
            #expect(t.weightsVersion == 3)
            shell.send(.evalResult(batch: t.index, set: "dev", weightsVersion: t.weightsVersion, counts: counts), from: shell.origin(a))
        }
        #expect(shell.machine.phase == .training(step: 2))
        #expect(shell.records.map(\.step) == [1, 2])
        #expect(shell.records.last?.validation == ["dev": EvaluationCounts(wordEdits: 3, words: 15, utterances: 3)])
        #expect(shell.records.first?.validation == nil)
    }

    @Test func aCheckpointIsAskedForEveryCheckpointEverySteps() throws {
        let shell = makeShell(5) { $0.checkpointEverySteps = 2 }
        var a = try shell.joined("a", pipe: 1)
        for _ in 0 ..< 5 {
            shell.train(&a, steps: 1)
            while !shell.checkpointsAsked.isEmpty { shell.reportCheckpoint(written: true) }
        }
        #expect(shell.checkpointRequests.map(\.step) == [2, 4, 5])
        #expect(shell.checkpointRequests.map(\.final) == [false, false, true])
    }

    @Test func theFinalCheckpointIsWrittenBeforeTheRunFinishesCompleted() throws {
        let shell = makeShell(1)
        var a = try shell.joined("a", pipe: 1)
        shell.train(&a, steps: 1)
        #expect(shell.machine.phase == .finishing(.completed))
        #expect(shell.checkpointRequests.map(\.step) == [1])
        #expect(shell.checkpointRequests.map(\.final) == [true])
        #expect(shell.finishes.isEmpty)
        shell.reportCheckpoint(written: true)
        #expect(shell.finishes == [.completed])
        #expect(shell.machine.phase == .finished(.completed))
    }

    @Test func aFailedFinalCheckpointMakesTheRunFailed() throws {
        let shell = makeShell(1)
        var a = try shell.joined("a", pipe: 1)
        shell.train(&a, steps: 1)
        shell.reportCheckpoint(written: false)
        #expect(shell.finishes == [.failed])
        #expect(shell.finishMessages.first??.contains("final checkpoint (step 1) could not be written") == true)
        #expect(shell.machine.phase == .finished(.failed))
    }

    @Test func threeFailedCheckpointsInARowStopTheRunWhenFailuresToStopIsThree() throws {
        let shell = makeShell(10) { $0.checkpointEverySteps = 1; $0.checkpointFailuresToStop = 3 }
        var a = try shell.joined("a", pipe: 1)
        for _ in 0 ..< 3 {
            #expect(shell.machine.phase == .training(step: shell.machine.step))
            shell.train(&a, steps: 1)
            shell.reportCheckpoint(written: false)
        }
        #expect(shell.machine.phase == .finishing(.failed))
        #expect(shell.checkpointRequests.last?.step == 3)
        #expect(shell.checkpointRequests.last?.final == true)
        shell.reportCheckpoint(written: true)
        #expect(shell.finishes == [.failed], "a final checkpoint written after the stop does not make the run completed")
    }

    @Test func failedCheckpointsKeepTheRunTrainingWhenFailuresToStopIsNil() throws {
        let shell = makeShell(10) { $0.checkpointEverySteps = 1; $0.checkpointFailuresToStop = nil }
        var a = try shell.joined("a", pipe: 1)
        for _ in 0 ..< 4 {
            shell.train(&a, steps: 1)
            shell.reportCheckpoint(written: false)
        }
        #expect(shell.machine.phase == .training(step: 4))
        #expect(shell.finishes.isEmpty)
    }

    @Test func aWrittenCheckpointResetsTheFailuresInARow() throws {
        let shell = makeShell(10) { $0.checkpointEverySteps = 1; $0.checkpointFailuresToStop = 3 }
        var a = try shell.joined("a", pipe: 1)
        for written in [false, false, true, false, false] {
            shell.train(&a, steps: 1)
            shell.reportCheckpoint(written: written)
        }
        #expect(shell.machine.phase == .training(step: 5))
    }

    @Test func aShutdownDuringTrainingWritesTheFinalCheckpointThenFinishesInterrupted() throws {
        let shell = makeShell(5)
        var a = try shell.joined("a", pipe: 1)
        shell.train(&a, steps: 2)
        let t = try #require(shell.task(shell.askForWork(a)))
        shell.handle(.shutdown(.interrupted, message: "SIGTERM", now: 1))
        #expect(shell.machine.phase == .finishing(.interrupted))
        #expect(shell.checkpointRequests.map(\.step) == [2])
        #expect(shell.checkpointRequests.map(\.final) == [true])
        let late = shell.sendChunk(a, t)
        #expect(shell.responses[late] == .ack(.stale), "no chunk is taken while finishing")
        let held = shell.askForWork(a)
        #expect(shell.responses[held] == nil)
        shell.reportCheckpoint(written: true)
        #expect(shell.finishes == [.interrupted])
        #expect(shell.folds == 16, "two steps of two micro-batches of four chunks")
        guard case .finished = shell.responses[held] else { throw HarnessError("the held request was not told the run is over") }
    }

    @Test func onceFinishedEveryWorkRequestIsToldTheRunIsOverMemberOrNot() throws {
        let shell = makeShell(1)
        var a = try shell.joined("a", pipe: 1)
        let b = try shell.joined("b", pipe: 2)
        shell.train(&a, steps: 1)
        shell.handle(.pipeClosed(2, now: 1))
        shell.reportCheckpoint(written: true)
        #expect(shell.machine.isFinished)
        for worker in [a, b] {
            guard case .finished = shell.response(shell.askForWork(worker)) else { throw HarnessError("\(worker.name) was not told") }
        }
    }

    @Test func aResumedRunAlreadyAtItsTotalFinishesAtStart() {
        let shell = SimulatedShell(TestRun.machine(TestRun.settings(totalSteps: 3), step: 3))
        let out = shell.start()
        #expect(out == [.finish(.completed, message: "already complete at step 3")])
        #expect(shell.machine.phase == .finished(.completed))
    }

    @Test func aFreshRunStartsWithoutFinishing() {
        let shell = SimulatedShell(TestRun.settings(totalSteps: 3))
        #expect(shell.start().isEmpty)
        #expect(shell.machine.phase == .waitingForWorkers)
    }
}
