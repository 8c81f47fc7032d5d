/// Keeps a warning that repeats from flooding the log: the first of a kind is logged at once,
/// the same line again within `every` seconds is only counted, and once `every` seconds have
/// passed the count is reported in one line ("... (12 more like this in the last 10 s)").
/// A burst of identical refusals after a long projection step (every worker's REQ re-sends
/// counted as requests in flight) was 36 identical lines in one second.
///
/// Pure: the caller passes the time and logs what comes back.
struct RepeatedWarnings {
    struct Line: Equatable {
        let message: String
        let peer: String?
        /// Lines like it suppressed since the last one logged (0 for a first).
        let more: Int
    }

    private struct Seen {
        var logged: Double
        var suppressed: Int
    }

    let every: Double
    private var seen: [String: Seen] = [:]
    private var peers: [String: String?] = [:]

    init(every: Double = 10) { self.every = every }

    /// A warning to log now, or nil while lines like it are being counted.
    mutating func warn(_ message: String, peer: String?, now: Double) -> Line? {
        let key = message + "\u{0}" + (peer ?? "")
        if var s = seen[key], now - s.logged < every {
            s.suppressed += 1
            seen[key] = s
            return nil
        }
        let more = seen[key]?.suppressed ?? 0
        seen[key] = Seen(logged: now, suppressed: 0)
        peers[key] = peer
        return Line(message: message, peer: peer, more: more)
    }

    /// Counts due for a line of their own (their kind last logged `every` seconds ago or more);
    /// forgets kinds quiet for a minute.
    mutating func due(now: Double) -> [Line] {
        var out: [Line] = []
        for (key, s) in seen where now - s.logged >= every {
            if s.suppressed > 0 {
                let message = String(key.prefix { $0 != "\u{0}" })
                out.append(Line(message: message, peer: peers[key] ?? nil, more: s.suppressed))
                seen[key] = Seen(logged: now, suppressed: 0)
            } else if now - s.logged >= 60 {
                seen[key] = nil
                peers[key] = nil
            }
        }
        return out.sorted { $0.message < $1.message }
    }
}
