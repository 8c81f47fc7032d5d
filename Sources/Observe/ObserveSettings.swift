import Foundation

/// `observe:` in the run configuration: the coordinator's HTTP endpoint (Prometheus `/metrics`,
/// the live page, the status API). Off unless `http` is given.
public struct ObserveSettings: Sendable, Equatable {
    /// `host:port` to serve HTTP on (`127.0.0.1:9400`; port 0 picks a free one). Empty: off.
    public var http = ""
    /// A file holding a bearer token that every route but `/metrics` requires. Empty: none.
    public var tokenFile = ""
    /// A worker that left keeps its labelled series this long, then they are removed.
    public var departedSeriesSeconds = 300.0
    /// A validation WER to reach, drawn as a goal line (0: none).
    public var goalWer = 0.0

    public init() {}

    /// Whether `host` (of `host:port`) is a loopback address: anything else without TLS is
    /// readable by whoever is on the path.
    public static func isLoopback(_ address: String) -> Bool {
        var host = address
        if let colon = address.lastIndex(of: ":") { host = String(address[..<colon]) }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}
