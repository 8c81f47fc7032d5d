import Foundation
import Testing
@testable import Coordination
import Tensors

/// The count of model-carrying reply copies (issue 11's memory bound): one behaviour per test,
/// then seeded random event sequences against the invariants.
struct WeightsCopiesTests {
    @Test func twoCopiesGoAtOnceAndTheThirdWaitsForAReceipt() {
        var c = WeightsCopies(capacity: 2, holdSeconds: 30)
        let a = c.request(pipe: 1, version: 5, now: 0), b = c.request(pipe: 2, version: 5, now: 0)
        let third = c.request(pipe: 3, version: 5, now: 0)
        #expect(a.admitted && b.admitted && !third.admitted)
        #expect(c.count == 2 && c.queued == 1)
        // Another connection's receipt, or an older version on the right one, frees nothing.
        #expect(c.arrived(pipe: 4, version: 5, now: 1).isEmpty)
        #expect(c.arrived(pipe: 3, version: 4, now: 1).isEmpty)
        #expect(c.arrived(pipe: 1, version: 4, now: 1).isEmpty)
        #expect(c.arrived(pipe: 1, version: 5, now: 1) == [third.ticket])
        #expect(c.count == 2 && c.queued == 0)
    }

    @Test func aLaterVersionShownCountsAsArrivalOfAnOlderCopy() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 30)
        _ = c.request(pipe: 1, version: 5, now: 0)
        let next = c.request(pipe: 2, version: 5, now: 0)
        // A chunk computed at version 6 shows the worker holds 5's successor.
        #expect(c.arrived(pipe: 1, version: 6, now: 1) == [next.ticket])
    }

    @Test func waitersAreAdmittedFirstComeFirstServed() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 30)
        _ = c.request(pipe: 1, version: 1, now: 0)
        let w = (2 ... 5).map { c.request(pipe: UInt32($0), version: 1, now: 0).ticket }
        var order: [WeightsCopies.Ticket] = []
        for pipe in 1 ... 4 { order += c.arrived(pipe: UInt32(pipe), version: 1, now: 1) }
        #expect(order == w)
        // A newcomer does not overtake a waiter even when a place is free for a moment.
        var d = WeightsCopies(capacity: 1, holdSeconds: 30)
        let first = d.request(pipe: 1, version: 1, now: 0)
        let waiter = d.request(pipe: 2, version: 1, now: 0)
        #expect(d.release(first.ticket, now: 0) == [waiter.ticket])
        #expect(!d.request(pipe: 3, version: 1, now: 0).admitted)
    }

    @Test func aClosedConnectionFreesItsCopiesAndLetsItsWaitersGoUncounted() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 30)
        _ = c.request(pipe: 1, version: 1, now: 0)
        let mine = c.request(pipe: 1, version: 2, now: 0), other = c.request(pipe: 2, version: 2, now: 0)
        let admitted = c.closed(pipe: 1, now: 1)
        #expect(admitted == [mine.ticket, other.ticket])
        // Only the other connection's copy counts: nng drops a reply to a closed connection.
        #expect(c.count == 1 && c.queued == 0)
        #expect(c.arrived(pipe: 2, version: 2, now: 2).isEmpty && c.count == 0)
    }

    @Test func aCopyWithoutAnySignOfArrivalEndsAfterTheHoldTime() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 10)
        _ = c.request(pipe: 1, version: 1, now: 0)
        let waiter = c.request(pipe: 2, version: 1, now: 8)
        #expect(c.expire(now: 9.9).isEmpty)
        #expect(c.expire(now: 10) == [waiter.ticket])
        #expect(c.expired == 1)
        // The admitted copy's own hold starts when it is admitted.
        #expect(c.expire(now: 19.9).isEmpty && c.expire(now: 20).isEmpty && c.count == 0)
    }

    /// Two copies went to requests their workers had given up on (REQ drops the late replies: no
    /// receipt will come). The replies to the workers' new requests must not wait the whole hold,
    /// the workers' request timeout, or they too arrive after their requests timed out, forever.
    @Test func aReplyWaitsAtMostAThirdOfTheHoldThenGoesUncounted() {
        var c = WeightsCopies(capacity: 2, holdSeconds: 30)
        _ = c.request(pipe: 1, version: 9, now: 40)
        _ = c.request(pipe: 2, version: 9, now: 40)
        let again1 = c.request(pipe: 1, version: 9, now: 40.5), again2 = c.request(pipe: 2, version: 9, now: 41)
        #expect(!again1.admitted && !again2.admitted)
        #expect(c.expire(now: 50.4).isEmpty)
        #expect(c.expire(now: 50.5) == [again1.ticket])
        #expect(c.expire(now: 51) == [again2.ticket])
        // They went uncounted: the two copies without a receipt still hold the places.
        #expect(c.waitedOut == 2 && c.uncounted == 0 && c.count == 2 && c.queued == 0 && c.expired == 0)
        #expect(c.expire(now: 70).count == 0 && c.count == 0 && c.expired == 2)
    }

    @Test func pastTheLongestQueueARepliesGoesUncounted() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 10)
        _ = c.request(pipe: 1, version: 1, now: 0, maxWaiting: 2)
        #expect(!c.request(pipe: 2, version: 1, now: 0, maxWaiting: 2).admitted)
        #expect(!c.request(pipe: 3, version: 1, now: 0, maxWaiting: 2).admitted)
        let past = c.request(pipe: 4, version: 1, now: 0, maxWaiting: 2)
        #expect(past.admitted && c.count == 1 && c.queued == 2 && c.uncounted == 1)
        // Its arrival or a release of its ticket changes nothing.
        #expect(c.arrived(pipe: 4, version: 1, now: 1).isEmpty && c.release(past.ticket, now: 1).isEmpty && c.count == 1)
    }

    @Test func shuttingDownAdmitsEveryoneAndEveryoneAfter() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 10)
        _ = c.request(pipe: 1, version: 1, now: 0)
        let waiters = (2 ... 4).map { c.request(pipe: UInt32($0), version: 1, now: 0).ticket }
        #expect(c.admitAll(now: 1) == waiters)
        #expect(c.queued == 0)
        // A reply framed just before the end does not wait for a tick that no longer comes.
        #expect(c.request(pipe: 5, version: 1, now: 2).admitted && c.queued == 0)
    }

    @Test func aReplyForAConnectionThatClosedAlreadyGoesUncounted() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 10)
        _ = c.closed(pipe: 7, now: 0)
        let late = c.request(pipe: 7, version: 1, now: 1)
        #expect(late.admitted && c.count == 0)
        // Only the last 1,024 closed connections are remembered.
        for pipe in 100 ..< UInt32(100 + WeightsCopies.rememberedClosures) { _ = c.closed(pipe: pipe, now: 2) }
        #expect(c.request(pipe: 7, version: 1, now: 3).admitted && c.count == 1)
    }

    @Test func aRepeatWaitingForAVersionItsConnectionShowsGoesAtOnce() {
        var c = WeightsCopies(capacity: 1, holdSeconds: 10)
        let first = c.request(pipe: 1, version: 3, now: 0)
        // nng's re-send of the request got the same task again; it waits behind the first copy.
        let repeated = c.request(pipe: 1, version: 3, now: 0), other = c.request(pipe: 2, version: 3, now: 0)
        #expect(first.admitted && !repeated.admitted && !other.admitted)
        // The receipt ends the first copy, lets the repeat go uncounted and admits the other.
        #expect(c.arrived(pipe: 1, version: 3, now: 1) == [repeated.ticket, other.ticket])
        #expect(c.count == 1 && c.queued == 0)
    }

    @Test func theMachineAcknowledgesAMembersReceiptAndChangesNothingElse() throws {
        let shell = SimulatedShell(TestRun.settings(totalSteps: 3))
        let a = try shell.joined("a", pipe: 1)
        let task = try #require(shell.task(shell.askForWork(a)))
        let before = shell.machine.round.assignee(of: task.index)
        #expect(shell.response(shell.send(.receipt(weightsVersion: task.weightsVersion), from: shell.origin(a))) == .ack(.accepted))
        #expect(shell.machine.round.assignee(of: task.index) == before && shell.folds == 0)
        // A stranger's receipt is refused like any request of an unknown session.
        let stranger = shell.origin(pipe: 7, session: SessionID(Data(repeating: 3, count: 16)))
        #expect(shell.refusal(shell.send(.receipt(weightsVersion: 1), from: stranger)) == .unknownSession)
    }

    @Test func everyRequestThatNamesAWeightsVersionShowsIt() {
        let header = ChunkHeader(microBatch: 0, tensor: 0, chunkIndex: 0, chunkCount: 1, exampleCount: 1, lossSum: 0,
                                 weightsVersion: 9, valueCount: 1, sumOfSquares: 0)
        #expect(Inbound.receipt(weightsVersion: 4).weightsVersionShown == 4)
        #expect(Inbound.work(haveVersion: 5).weightsVersionShown == 5)
        #expect(Inbound.chunk(header).weightsVersionShown == 9)
        #expect(Inbound.evalResult(batch: 0, set: "valid", weightsVersion: 6, counts: EvaluationCounts()).weightsVersionShown == 6)
        #expect(Inbound.leave(reason: "bye").weightsVersionShown == nil)
        #expect(Inbound.hello(workerName: "w", clientNonce: Data()).weightsVersionShown == nil)
    }

    /// Thousands of seeded random sequences of requests, receipts, chunks, closed connections,
    /// failed sends and ticks. After every event: never more copies than the capacity, nobody
    /// waits while a place is free, no ticket is admitted twice or both held and waiting. At the
    /// end, once time passes the hold, every reply has gone.
    @Test func seededRandomSequencesKeepTheInvariants() {
        for seed in 0 ..< 2000 {
            var rng = SplitMix64(seed: UInt64(seed))
            let capacity = 1 + Int(rng.next() % 3)
            var c = WeightsCopies(capacity: capacity, holdSeconds: 5)
            var now = 0.0
            var requested: Set<WeightsCopies.Ticket> = [], admitted: Set<WeightsCopies.Ticket> = []
            var ok = true
            func admit(_ tickets: [WeightsCopies.Ticket]) {
                for t in tickets {
                    if admitted.contains(t) || !requested.contains(t) { ok = false }
                    admitted.insert(t)
                }
            }
            for _ in 0 ..< 60 {
                let pipe = UInt32(1 + rng.next() % 4), version = UInt64(1 + rng.next() % 4)
                switch rng.next() % 6 {
                case 0, 1:
                    let (t, now_) = c.request(pipe: pipe, version: version, now: now, maxWaiting: 5)
                    requested.insert(t)
                    if now_ { admit([t]) }
                case 2: admit(c.arrived(pipe: pipe, version: version, now: now))
                case 3: admit(c.closed(pipe: pipe, now: now))
                case 4:
                    if let t = admitted.randomElement(using: &rng) { admit(c.release(t, now: now)) }
                default:
                    now += Double(rng.next() % 3)
                    admit(c.expire(now: now))
                    // Nobody waits longer than the longest wait once the clock has ticked.
                    ok = ok && c.waiting.allSatisfy { now - $0.since < c.maxWaitSeconds }
                }
                let heldTickets = Set(c.held.keys), waitingTickets = Set(c.waiting.map(\.ticket))
                ok = ok && c.count <= capacity && (c.queued == 0 || c.count == capacity)
                    && heldTickets.isDisjoint(with: waitingTickets) && heldTickets.isSubset(of: admitted)
                    && waitingTickets.isDisjoint(with: admitted) && requested == admitted.union(waitingTickets) && c.queued <= 5
                if !ok { break }
            }
            // Time passes the hold as often as there are waiters: everyone goes.
            for _ in 0 ... requested.count where ok {
                now += 6
                admit(c.expire(now: now))
            }
            #expect(ok && admitted == requested && c.queued == 0, "seed \(seed)")
            if !ok { return }
        }
    }
}
