/// How many replies that carry a model may be copied into messages at once, and when each copy
/// counts as gone (issue 11's memory bound).
///
/// nng keeps a reply's message until the connection has written it, and a REP context's send
/// completes as soon as the message is queued on its connection, not when it has left. With one
/// model-sized copy per worker waiting to be written, the coordinator's memory grew with the
/// number of workers (8 workers, 10 M parameters: +378 MiB over 1 worker's). So a copy counts
/// from the moment it is made until its connection shows that the weights arrived: a
/// WeightsReceipt, or any later request naming that version or a newer one (a chunk, a work
/// request, an evaluation result). It also ends when the connection closes, when its send
/// fails, or after `holdSeconds` (a worker that sends no receipts, or a receipt lost with its
/// connection), so a silent worker cannot hold the others' weights back for long.
///
/// A reply waits for its turn at most `maxWaitSeconds` (a third of `holdSeconds`), then goes
/// uncounted. A copy that went to a request its worker had already given up on (nng's REQ drops
/// the late reply, so no receipt ever comes) counts for the whole `holdSeconds`, which is the
/// workers' request timeout: a reply queued behind two such copies would leave just as its own
/// request timed out, its copy would never arrive either, and the run would stall (seen after a
/// 40 s one-shot reconstruction kept the coordinator from answering for longer than that timeout).
///
/// Pure: no clock, no continuations. Each call returns the tickets it admits; the caller resumes
/// whoever waits on them.
public struct WeightsCopies: Sendable {
    public typealias Ticket = Int

    /// Replies whose weights take fewer bytes are not counted (a sparse delta, a small model);
    /// workers send receipts only for larger ones.
    public static let countedBytes = 256 << 10

    struct Copy: Equatable {
        let pipe: UInt32
        let version: UInt64
        let until: Double
    }

    struct Waiting: Equatable {
        let ticket: Ticket
        let pipe: UInt32
        let version: UInt64
        let since: Double
    }

    /// Copies that may exist at once.
    public let capacity: Int
    /// The longest a copy counts without a sign that it arrived.
    public let holdSeconds: Double
    /// The longest a reply waits for its turn before it goes uncounted.
    public var maxWaitSeconds: Double { holdSeconds / 3 }
    private(set) var held: [Ticket: Copy] = [:]
    /// First come, first admitted.
    private(set) var waiting: [Waiting] = []
    private var nextTicket: Ticket = 0
    /// Copies that ended by `holdSeconds` rather than by a sign of their arrival.
    public private(set) var expired = 0
    /// Replies that went uncounted because too many waited (see `request`).
    public private(set) var uncounted = 0
    /// Replies that went uncounted because they waited `maxWaitSeconds` (see `expire`).
    public private(set) var waitedOut = 0
    /// After ``admitAll(now:)``: nobody waits any more.
    private var shuttingDown = false
    private var recentlyClosed: Set<UInt32> = []
    private var closedOrder: [UInt32] = []

    public init(capacity: Int, holdSeconds: Double) {
        precondition(capacity >= 1 && holdSeconds > 0)
        self.capacity = capacity
        self.holdSeconds = holdSeconds
    }

    /// Copies counted now.
    public var count: Int { held.count }
    /// Replies waiting for their turn to be copied.
    public var queued: Int { waiting.count }

    /// A reply carrying weights of `version` for connection `pipe` wants to be copied. Returns
    /// its ticket, and whether it may be copied now; otherwise it waits to be admitted.
    ///
    /// `maxWaiting`: with that many replies waiting already, this one goes at once, uncounted.
    /// Each waiting reply holds one of the coordinator's contexts; were all of them waiting, none
    /// would be left to receive the receipts that let them go (more workers joining at once than
    /// the coordinator has contexts). Memory then grows past the bound rather than the run stall.
    public mutating func request(pipe: UInt32, version: UInt64, now: Double, maxWaiting: Int = .max) -> (ticket: Ticket, admitted: Bool) {
        let ticket = nextTicket
        nextTicket += 1
        // Shutting down, or the connection closed already (nng drops the reply): no wait, no count.
        if shuttingDown || recentlyClosed.contains(pipe) { return (ticket, true) }
        if held.count < capacity && waiting.isEmpty {
            held[ticket] = Copy(pipe: pipe, version: version, until: now + holdSeconds)
            return (ticket, true)
        }
        if waiting.count >= maxWaiting {
            uncounted += 1
            return (ticket, true)
        }
        waiting.append(Waiting(ticket: ticket, pipe: pipe, version: version, since: now))
        return (ticket, false)
    }

    /// Connection `pipe` showed it holds weights of `version` (a receipt, or a request that
    /// names the version): its copies of that version or an older one are gone.
    /// Replies of that connection still waiting with such a version repeat what it has (a task
    /// answered again to nng's re-send of its request): they go at once, uncounted.
    public mutating func arrived(pipe: UInt32, version: UInt64, now: Double) -> [Ticket] {
        // Called for every request (each gradient chunk): nothing to do is the common case.
        let shown = { (p: UInt32, v: UInt64) in p == pipe && v <= version }
        guard held.values.contains(where: { shown($0.pipe, $0.version) }) || waiting.contains(where: { shown($0.pipe, $0.version) }) else {
            return []
        }
        held = held.filter { !shown($0.value.pipe, $0.value.version) }
        let repeats = waiting.filter { shown($0.pipe, $0.version) }.map(\.ticket)
        waiting.removeAll { shown($0.pipe, $0.version) }
        return repeats + admit(now: now)
    }

    /// Connection `pipe` closed: its copies are freed with it, and its replies still waiting go
    /// at once without counting (nng drops a reply to a closed connection; none is copied for
    /// long). Returns the tickets that may go.
    public mutating func closed(pipe: UInt32, now: Double) -> [Ticket] {
        remember(closed: pipe)
        held = held.filter { $0.value.pipe != pipe }
        let orphans = waiting.filter { $0.pipe == pipe }.map(\.ticket)
        waiting.removeAll { $0.pipe == pipe }
        return orphans + admit(now: now)
    }

    /// The copy of `ticket` was never made or its send failed.
    public mutating func release(_ ticket: Ticket, now: Double) -> [Ticket] {
        held[ticket] = nil
        return admit(now: now)
    }

    /// Ends copies held past `holdSeconds`, and lets replies that waited `maxWaitSeconds` go
    /// uncounted.
    public mutating func expire(now: Double) -> [Ticket] {
        let before = held.count
        held = held.filter { $0.value.until > now }
        expired += before - held.count
        let admitted = admit(now: now)
        let longest = maxWaitSeconds
        let late = waiting.filter { now - $0.since >= longest }.map(\.ticket)
        waiting.removeAll { now - $0.since >= longest }
        waitedOut += late.count
        return admitted + late
    }

    /// Admits everyone waiting, past the capacity, and from now on every reply at once: the
    /// service is shutting down and every reply's send is about to fail or finish.
    public mutating func admitAll(now: Double) -> [Ticket] {
        shuttingDown = true
        defer { waiting.removeAll() }
        for w in waiting { held[w.ticket] = Copy(pipe: w.pipe, version: w.version, until: now + holdSeconds) }
        return waiting.map(\.ticket)
    }

    /// Keeps the last `rememberedClosures` closed connections: a reply answered just before its
    /// connection closed can ask for its copy after the close was reported.
    private mutating func remember(closed pipe: UInt32) {
        guard recentlyClosed.insert(pipe).inserted else { return }
        closedOrder.append(pipe)
        if closedOrder.count > Self.rememberedClosures { recentlyClosed.remove(closedOrder.removeFirst()) }
    }

    static let rememberedClosures = 1024

    private mutating func admit(now: Double) -> [Ticket] {
        var admitted: [Ticket] = []
        while held.count < capacity, !waiting.isEmpty {
            let w = waiting.removeFirst()
            held[w.ticket] = Copy(pipe: w.pipe, version: w.version, until: now + holdSeconds)
            admitted.append(w.ticket)
        }
        return admitted
    }
}
