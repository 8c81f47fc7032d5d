import Coordination
import Foundation
@testable import Runtime
import Synchronization
import Testing

/// The gate's continuations under concurrency: every waiter is resumed exactly once (a second
/// resume traps), including those admitted before they got to wait, and no more than the
/// capacity hold a copy at once.
@Suite(.timeLimit(.minutes(1)))
struct WeightsCopyGateTests {
    final class Tally: Sendable {
        let state = Mutex((now: 0, most: 0, done: 0))
        func entered() { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) } }
        func left() { state.withLock { $0.now -= 1; $0.done += 1 } }
    }

    @Test func manyRepliesAtOnceAreAdmittedTwoAtATimeAndAllGo() async {
        let gate = WeightsCopyGate(capacity: 2, holdSeconds: 3600, clock: { 0 })
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            for i in 0 ..< 400 {
                group.addTask {
                    let pipe = UInt32(i)
                    let ticket = await gate.enter(pipe: pipe, version: 1, maxWaiting: .max)
                    tally.entered()
                    if i % 7 == 0 { await Task.yield() }
                    tally.left()
                    // Half by a receipt, a quarter by a failed send, a quarter by a closed connection.
                    switch i % 4 {
                    case 0, 1: gate.arrived(pipe: pipe, version: 1)
                    case 2: gate.release(ticket)
                    default: gate.closed(pipe: pipe)
                    }
                }
            }
        }
        let t = tally.state.withLock { $0 }
        #expect(t.done == 400 && t.most <= 2, "\(t)")
        #expect(gate.counts.held == 0 && gate.counts.queued == 0)
    }

    @Test func afterShutdownNobodyWaits() async {
        let gate = WeightsCopyGate(capacity: 1, holdSeconds: 3600, clock: { 0 })
        _ = await gate.enter(pipe: 1, version: 1, maxWaiting: .max)
        let waiter = Task { await gate.enter(pipe: 2, version: 1, maxWaiting: .max) }
        while gate.counts.queued == 0 { await Task.yield() }
        gate.admitAll()
        _ = await waiter.value
        _ = await gate.enter(pipe: 3, version: 1, maxWaiting: .max)
    }

    /// The receive gate: at most its capacity inside at once under 400 concurrent entrants,
    /// everyone gets in (a lost wake-up would hang the test until its time limit), and the count
    /// returns to zero.
    @Test func theReceiveGateLetsAtMostItsCapacityInAndEveryoneThrough() async {
        let gate = AsyncGate(capacity: 3)
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            for i in 0 ..< 400 {
                group.addTask {
                    await gate.enter()
                    tally.entered()
                    if i % 5 == 0 { await Task.yield() }
                    tally.left()
                    gate.leave()
                }
            }
        }
        let t = tally.state.withLock { $0 }
        #expect(t.done == 400 && t.most <= 3, "\(t)")
        // All places are free again: three enter at once without waiting.
        for _ in 0 ..< 3 { await gate.enter() }
        for _ in 0 ..< 3 { gate.leave() }
    }
}
