import Foundation

/// Join attempts (Hellos) per host in a fixed one-minute window (`security.join_attempts_per_minute`),
/// bounded in memory: a peer that tries token after token, or floods Hellos to fill the table of
/// open challenges, is refused once over the limit while other hosts join as usual.
public struct JoinRateLimit: Sendable {
    /// Attempts one host may make per minute; nil: no limit.
    public let perMinute: Int?
    /// Hosts tracked at once; past it, the host whose window is oldest is forgotten.
    public let maxHosts: Int
    public static let window = 60.0
    private var hosts: [String: (since: Double, attempts: Int)] = [:]

    public init(perMinute: Int?, maxHosts: Int = 4096) {
        self.perMinute = perMinute
        self.maxHosts = maxHosts
    }

    /// Counts an attempt from `host`; false when it is over the limit (the attempt is refused).
    public mutating func admit(host: String, now: Double) -> Bool {
        guard let perMinute else { return true }
        var entry = hosts[host] ?? (now, 0)
        if now - entry.since >= Self.window { entry = (now, 0) }
        entry.attempts += 1
        if hosts[host] == nil, hosts.count >= maxHosts { forgetOne(now: now) }
        hosts[host] = entry
        return entry.attempts <= perMinute
    }

    /// Seconds until `host` may try again.
    public func retryAfter(host: String, now: Double) -> Double {
        guard let entry = hosts[host] else { return 0 }
        return max(0, Self.window - (now - entry.since))
    }

    private mutating func forgetOne(now: Double) {
        let expired = hosts.filter { now - $0.value.since >= Self.window }.map(\.key)
        if !expired.isEmpty {
            for host in expired { hosts.removeValue(forKey: host) }
        } else if let oldest = hosts.min(by: { $0.value.since < $1.value.since })?.key {
            hosts.removeValue(forKey: oldest)
        }
    }

    /// The host part of a peer address as the shell prints it ("10.0.0.7:41234" → "10.0.0.7",
    /// "[fd00::7]:41234" → "[fd00::7]"); the whole string when it has no port.
    public static func host(ofPeer peer: String) -> String {
        if peer.hasPrefix("["), let close = peer.firstIndex(of: "]") { return String(peer[...close]) }
        guard let colon = peer.lastIndex(of: ":"), peer.firstIndex(of: ":") == colon else { return peer }
        return String(peer[..<colon])
    }
}
