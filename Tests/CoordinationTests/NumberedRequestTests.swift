import Foundation
import Testing
@testable import Coordination
import Tensors

/// Work requests numbered by the worker (`Origin.sequence`): nng's REQ re-sends a request with the
/// same bytes, so the same number is a re-send (answered as its original was, with no second
/// effect) and a new number is the worker's next request, whatever state its last task is in.
struct NumberedRequestTests {
    func makeShell(_ change: (inout RunStateMachine.Settings) -> Void = { _ in }) -> SimulatedShell {
        SimulatedShell(TestRun.settings(totalSteps: 3, change), microBatches: 3)
    }

    /// Seed 767's case: the re-send comes after its original's task has left and a chunk of it
    /// is in, so "nothing of it has arrived" cannot tell it from a new request; the number can.
    /// REQ took the task that went first on the connection: the re-send is told to wait, with no
    /// second assignment and no second copy of the model.
    @Test func aReSentRequestAfterItsOriginalsTaskLeftIsToldToWait() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        shell.sendChunk(a, task)
        #expect(shell.response(shell.askForWork(a, sequence: 1)) == .wait)
        #expect(shell.machine.round.microBatches[task.index].assignments == 1)
        let assigned = shell.machine.round.microBatches.indices.filter { shell.machine.round.assignee(of: $0) == a.session }
        #expect(assigned == [task.index], "the re-send took a second micro-batch")
        #expect(shell.machine.resentRequests == 1)
    }

    @Test func aNewNumberWithChunksInIsTheNextTask() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let first = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        shell.sendChunk(a, first)
        let next = try #require(shell.task(shell.askForWork(a, sequence: 2)))
        #expect(next.index != first.index)
        #expect(shell.machine.round.assignee(of: first.index) == a.session, "the first keeps its chunks' owner")
        #expect(shell.machine.resentRequests == 0)
        // Asked beside the first's send (a pipelined worker): counted as such.
        #expect(shell.machine.overlappedWorkRequests == 1)
    }

    /// Only a request beside a send in progress counts as overlapped: not one after the whole
    /// micro-batch is in, nor one whose last task has no chunk in yet.
    @Test func onlyARequestBesideASendInProgressCountsAsOverlapped() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let first = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        _ = shell.sendAllChunks(a, first)
        let second = try #require(shell.task(shell.askForWork(a, sequence: 2)))
        _ = try #require(shell.task(shell.askForWork(a, sequence: 3)))
        #expect(shell.machine.overlappedWorkRequests == 0)
        _ = second
    }

    /// A request beside a send that is held (nothing left to hand out) counts once, however many
    /// times the machine looks at it again before answering.
    @Test func aHeldOverlappedRequestCountsOnce() throws {
        let shell = SimulatedShell(TestRun.settings(totalSteps: 3) { $0.pollHoldSeconds = 2 }, microBatches: 1)
        let a = try shell.joined("a", pipe: 1)
        let only = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        shell.sendChunk(a, only)
        let next = shell.askForWork(a, sequence: 2)
        #expect(shell.response(next) == nil, "held: the step's only micro-batch is out")
        for k in 1 ... 15 { _ = shell.tick(at: shell.now + 0.1 * Double(k)) }
        #expect(shell.machine.overlappedWorkRequests == 1)
    }

    /// A worker that dropped its task (its weights did not decode) asks again with a new number
    /// and the same version: the unstarted task goes back to the pool instead of being repeated.
    @Test func aNewNumberWithTheSameVersionIsNotTakenForAReSend() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        _ = try #require(shell.task(shell.askForWork(a, have: 0, sequence: 1)))
        _ = try #require(shell.task(shell.askForWork(a, have: 0, sequence: 2)))
        #expect(shell.machine.resentRequests == 0)
        let held = shell.machine.round.microBatches.indices.filter { shell.machine.round.assignee(of: $0) == a.session }
        #expect(held.count == 1, "an unstarted task was kept beside the new one: \(held)")
    }

    @Test func aReSentRequestHeldBehindItsOriginalsUnsentReplyIsToldToWaitOnceItLeft() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        shell.holdReplies = true
        let original = shell.askForWork(a, sequence: 1)
        let task = try #require(shell.task(original))
        let resend = shell.askForWork(a, sequence: 1)
        #expect(shell.response(resend) == nil, "held until the original's reply has left")
        shell.sendReplies()
        #expect(shell.response(resend) == .wait)
        #expect(shell.machine.round.microBatches[task.index].assignments == 1)
        #expect(shell.machine.round.assignee(of: task.index) == a.session)
    }

    /// The original's reply was lost after all (it left, but never arrived): the worker's next
    /// request, with a new number, gets the task back, since nothing of it has arrived.
    @Test func aLostTaskComesBackToTheNextRequest() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        #expect(shell.response(shell.askForWork(a, sequence: 1)) == .wait)
        #expect(shell.machine.round.assignee(of: task.index) == a.session, "the re-send took the task from its member")
        _ = try #require(shell.task(shell.askForWork(a, sequence: 2)))
        // The lost one went back to the pool (or straight back to its member): the member holds one.
        let held = shell.machine.round.microBatches.indices.filter { shell.machine.round.assignee(of: $0) == a.session }
        #expect(held.count == 1)
    }

    /// The original's reply waits its turn to copy the weights past the poll hold (and past REQ's
    /// re-send time): its re-send is not told to wait before it has left, which would take the
    /// task's place in REQ and waste the task and its copy of the model.
    @Test func aReSentRequestWaitsForItsOriginalsUnsentReplyPastThePollHold() throws {
        let shell = makeShell { $0.pollHoldSeconds = 2 }
        let a = try shell.joined("a", pipe: 1)
        shell.holdReplies = true
        let task = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        let resend = shell.askForWork(a, sequence: 1)
        _ = shell.tick(at: shell.now + 30)
        #expect(shell.response(resend) == nil, "answered while its original's task had not left")
        shell.sendReplies()
        #expect(shell.response(resend) == .wait)
        #expect(shell.machine.round.assignee(of: task.index) == a.session)
        // The worker's next request (nothing of the task arrived) gets a task, whose reply does
        // not leave either; a request after it, held behind that unsent task, is still told to
        // wait after the poll hold.
        _ = try #require(shell.task(shell.askForWork(a, sequence: 2)))
        let next = shell.askForWork(a, sequence: 3)
        #expect(shell.response(next) == nil)
        _ = shell.tick(at: shell.now + 30)
        #expect(shell.response(next) == .wait)
    }

    /// Both the original and its re-send wait for a task (no member may start yet): the first
    /// task goes to the original, and the re-send, held until that reply has left, is told to
    /// wait, also when the task comes after the re-send's own hold has run out (its being a
    /// re-send is decided when it is answered, not when it was held).
    @Test(arguments: [0.0, 10.0]) func aReSentRequestHeldBesideItsOriginalIsToldToWaitOnceTheTaskLeft(late: Double) throws {
        let shell = makeShell { $0.minWorkers = 2; $0.pollHoldSeconds = 5 }
        let a = try shell.joined("a", pipe: 1)
        let original = shell.askForWork(a, sequence: 1), resend = shell.askForWork(a, sequence: 1)
        #expect(shell.response(original) == nil && shell.response(resend) == nil)
        shell.holdReplies = true
        shell.now += late
        _ = try shell.joined("b", pipe: 2)
        let task = try #require(shell.task(original))
        #expect(shell.response(resend) == nil, "answered before the original's task left")
        shell.sendReplies()
        #expect(shell.response(resend) == .wait)
        let held = shell.machine.round.microBatches.indices.filter { shell.machine.round.assignee(of: $0) == a.session }
        #expect(held == [task.index])
    }

    /// A re-send of request 1 that reaches the machine after request 2 (contexts decode in
    /// parallel) is not a new request: it is told to wait and leaves request 2's task with the
    /// member; held behind an unsent task, it is told to wait once that has left.
    @Test func aReSentOlderRequestArrivingLateHasNoEffect() throws {
        let shell = makeShell()
        let a = try shell.joined("a", pipe: 1)
        let first = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        shell.sendChunk(a, first)
        let second = try #require(shell.task(shell.askForWork(a, sequence: 2)))
        #expect(shell.response(shell.askForWork(a, sequence: 1)) == .wait)
        #expect(shell.machine.round.assignee(of: second.index) == a.session)
        #expect(shell.machine.round.microBatches[second.index].assignments == 1)
        shell.sendChunk(a, second)
        shell.holdReplies = true
        let third = try #require(shell.task(shell.askForWork(a, sequence: 3)))
        let late = shell.askForWork(a, sequence: 2)
        #expect(shell.response(late) == nil, "answered before request 3's task left")
        shell.sendReplies()
        #expect(shell.response(late) == .wait)
        #expect(shell.machine.round.microBatches[third.index].assignments == 1)
    }

    /// The re-send of a request whose task is done (the step was applied): the worker took the
    /// original's answer (REQ drops this one), so it is told to wait rather than given work.
    @Test func aReSentRequestWhoseTaskIsDoneIsToldToWait() throws {
        let shell = SimulatedShell(TestRun.settings(totalSteps: 3), microBatches: 1)
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a, sequence: 1)))
        shell.sendAllChunks(a, task)
        #expect(shell.machine.step == 1)
        #expect(shell.response(shell.askForWork(a, have: 0, sequence: 1)) == .wait)
        #expect(shell.machine.round.assignee(of: 0) == nil, "the re-send took the next step's micro-batch")
        #expect(shell.task(shell.askForWork(a, have: task.weightsVersion, sequence: 2)) != nil)
    }
}
