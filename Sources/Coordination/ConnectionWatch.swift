/// Open connections and when each was last heard from, so that the shell can close those that
/// stay silent (`security.silent_connection_seconds`): a connection that finished nng's
/// handshake and never sends a request holds a file descriptor and a slot under
/// `security.max_connections` for nothing. A member's connection is never closed for silence
/// (a worker computing a long micro-batch is quiet; its deadline covers it).
public struct ConnectionWatch: Sendable {
    public let silentSeconds: Double
    private var lastHeard: [UInt32: Double] = [:]
    /// Connections closed for silence so far.
    public private(set) var closedSilent = 0

    public init(silentSeconds: Double) {
        self.silentSeconds = silentSeconds
    }

    public var openCount: Int { lastHeard.count }

    public mutating func opened(_ pipe: UInt32, now: Double) { lastHeard[pipe] = now }

    /// A request arrived on `pipe` (a pipe not seen opening, its event still on its way, is added).
    public mutating func heard(_ pipe: UInt32, now: Double) { lastHeard[pipe] = now }

    public mutating func closed(_ pipe: UInt32) { lastHeard.removeValue(forKey: pipe) }

    /// Connections silent for longer than the limit that carry no member, oldest first; they
    /// are forgotten here (the shell closes them).
    public mutating func silent(now: Double, memberPipes: Set<UInt32>) -> [UInt32] {
        let expired = lastHeard.filter { now - $0.value > silentSeconds && !memberPipes.contains($0.key) }
            .sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
        for pipe in expired { lastHeard.removeValue(forKey: pipe) }
        closedSilent += expired.count
        return expired
    }
}
