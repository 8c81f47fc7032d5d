import Coordination
import Synchronization

/// Who may copy a model into a reply now (``WeightsCopies``, shared by the service that sends
/// and the shell that hears the receipts). Its calls do not suspend except `enter`, so the
/// shell can report what each request shows from inside its synchronous request handling.
final class WeightsCopyGate: Sendable {
    private struct State {
        var copies: WeightsCopies
        var waiters: [WeightsCopies.Ticket: CheckedContinuation<Void, Never>] = [:]
        /// Admitted before their `enter` got to wait (another thread released between the two).
        var early: Set<WeightsCopies.Ticket> = []
    }

    private let state: Mutex<State>
    private let clock: @Sendable () -> Double

    init(capacity: Int, holdSeconds: Double, clock: @escaping @Sendable () -> Double) {
        state = Mutex(State(copies: WeightsCopies(capacity: capacity, holdSeconds: holdSeconds)))
        self.clock = clock
    }

    /// Waits until a reply of `version` for connection `pipe` may be copied; returns its ticket.
    /// `maxWaiting`: see ``WeightsCopies/request(pipe:version:now:maxWaiting:)``.
    func enter(pipe: UInt32, version: UInt64, maxWaiting: Int) async -> WeightsCopies.Ticket {
        let (ticket, admitted) = state.withLock { $0.copies.request(pipe: pipe, version: version, now: clock(), maxWaiting: maxWaiting) }
        if admitted { return ticket }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.early.remove(ticket) != nil { return true }
                s.waiters[ticket] = continuation
                return false
            }
            if now { continuation.resume() }
        }
        return ticket
    }

    /// The reply of `ticket` was not sent (its send failed).
    func release(_ ticket: WeightsCopies.Ticket) { let now = clock(); resume { $0.release(ticket, now: now) } }
    /// Connection `pipe` showed it holds weights of `version` or newer.
    func arrived(pipe: UInt32, version: UInt64) { let now = clock(); resume { $0.arrived(pipe: pipe, version: version, now: now) } }
    func closed(pipe: UInt32) { let now = clock(); resume { $0.closed(pipe: pipe, now: now) } }
    func expire() { let now = clock(); resume { $0.expire(now: now) } }
    /// Shutting down: nobody waits any more.
    func admitAll() { let now = clock(); resume { $0.admitAll(now: now) } }

    /// Copies counted now, replies waiting, copies ended by time rather than by a receipt, and
    /// replies sent uncounted past the longest queue.
    var counts: (held: Int, queued: Int, expired: Int, uncounted: Int, waitedOut: Int) {
        state.withLock { ($0.copies.count, $0.copies.queued, $0.copies.expired, $0.copies.uncounted, $0.copies.waitedOut) }
    }

    private func resume(_ change: (inout WeightsCopies) -> [WeightsCopies.Ticket]) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            change(&s.copies).compactMap { ticket in
                if let waiter = s.waiters.removeValue(forKey: ticket) { return waiter }
                s.early.insert(ticket)
                return nil
            }
        }
        for waiter in ready { waiter.resume() }
    }
}

/// At most `capacity` holders at once; the others wait in order. A lock, not an actor: entering
/// with a place free and leaving never suspend, so a gradient chunk that passes through it costs
/// no hop to another executor (two per chunk with an actor, and a task for each leave).
final class AsyncGate: Sendable {
    private struct State {
        var holders = 0
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = capacity }

    func enter() async {
        let free = state.withLock { s -> Bool in
            guard s.holders < capacity else { return false }
            s.holders += 1
            return true
        }
        if free { return }
        // Checked again under the lock that registers the wait: a leave in between is not missed.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.holders < capacity {
                    s.holders += 1
                    return true
                }
                s.waiting.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Hands the place to the first waiter, if any.
    func leave() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.holders -= 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
