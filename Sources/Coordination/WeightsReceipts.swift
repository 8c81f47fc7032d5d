/// Copies of the weights on their way to workers, each held until its worker confirms it.
///
/// nng keeps a reply in memory until the connection has taken all of it, and a reply carrying
/// weights (the whole model, or a values-only delta of the same size for a dense model) is a copy
/// of them: eight workers asking at once held eight copies. The coordinator's service admits a
/// few such replies at a time (a gate of slots); a slot is let go here when the copy's worker
/// sends its receipt (`WeightsReceived`, with that version or a later one), when its connection
/// closes, or when no receipt comes in time. Pure: the service feeds it events and the clock.
///
/// A connection that has never sent a receipt gets `patience` per copy; one whose first copy
/// expired without a receipt is taken for a worker built before receipts, and its copies are
/// not held past their send again. A connection that has sent receipts gets `confirmedPatience`
/// (a receipt lost, or stuck behind a busy coordinator). A copy of a version the connection has
/// already confirmed (an answer to a REQ re-send, which the worker drops) is not held.
public struct WeightsReceipts: Sendable {
    public let patience: Double
    public let confirmedPatience: Double
    private var held: [UInt32: [Copy]] = [:]
    /// The newest version each connection has confirmed.
    private var confirmed: [UInt32: UInt64] = [:]
    /// Connections whose copy expired before they ever sent a receipt.
    private var silent: Set<UInt32> = []

    struct Copy: Sendable {
        let version: UInt64
        let since: Double
    }

    public init(patience: Double, confirmedPatience: Double) {
        self.patience = patience
        self.confirmedPatience = confirmedPatience
    }

    /// Copies sent and not yet let go.
    public var outstanding: Int { held.values.reduce(0) { $0 + $1.count } }

    /// A reply carrying the weights of `version` leaves on connection `pipe`. Returns whether its
    /// slot stays held until a receipt (false: let it go once the reply is sent).
    public mutating func sent(pipe: UInt32, version: UInt64, now: Double) -> Bool {
        if silent.contains(pipe) { return false }
        if let done = confirmed[pipe], version <= done { return false }
        held[pipe, default: []].append(Copy(version: version, since: now))
        return true
    }

    /// The worker on `pipe` holds `version`: lets go of that connection's copies up to it.
    /// Returns how many slots to release.
    public mutating func received(pipe: UInt32, version: UInt64) -> Int {
        confirmed[pipe] = max(confirmed[pipe] ?? 0, version)
        silent.remove(pipe)
        guard let copies = held[pipe] else { return 0 }
        let left = copies.filter { $0.version > version }
        held[pipe] = left.isEmpty ? nil : left
        return copies.count - left.count
    }

    /// The reply of `version` on `pipe` could not be sent after all: lets go of its slot (1), or
    /// of nothing (0) when it was let go already.
    public mutating func withdraw(pipe: UInt32, version: UInt64) -> Int {
        guard var copies = held[pipe], let i = copies.lastIndex(where: { $0.version == version }) else { return 0 }
        copies.remove(at: i)
        held[pipe] = copies.isEmpty ? nil : copies
        return 1
    }

    /// The connection closed: whatever was on its way there is gone.
    public mutating func closed(pipe: UInt32) -> Int {
        confirmed[pipe] = nil
        silent.remove(pipe)
        return held.removeValue(forKey: pipe)?.count ?? 0
    }

    /// Lets go of copies whose receipt is overdue.
    public mutating func expire(now: Double) -> Int {
        var released = 0
        for (pipe, copies) in held {
            let limit = confirmed[pipe] == nil ? patience : confirmedPatience
            let left = copies.filter { now - $0.since < limit }
            guard left.count < copies.count else { continue }
            released += copies.count - left.count
            held[pipe] = left.isEmpty ? nil : left
            if confirmed[pipe] == nil { silent.insert(pipe) }
        }
        return released
    }
}
