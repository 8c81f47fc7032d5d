/// Limits that keep a coordinator serving its workers while strangers connect to its port
/// (`security:` in the run configuration). Every refusal they cause names its key.
public struct SecuritySettings: Sendable, Equatable {
    /// Connections open at once; past it, new ones are closed as they arrive (the coordinator
    /// also never lets connections take the descriptors its files need: see CoordinatorService).
    public var maxConnections = 512
    /// A connection that carries no member and sends no request for this long is closed.
    public var silentConnectionSeconds = 10.0
    /// Join attempts (Hellos) one host may make per minute (0: no limit).
    public var joinAttemptsPerMinute = 300
    /// Workers in the run at once (0: no limit).
    public var maxWorkers = 1024

    public init() {}
}
