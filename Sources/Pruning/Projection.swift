import Tensors

/// The centralized projection step the coordinator runs after every optimizer update.
///
/// It receives the dense master weights and returns the weights to broadcast (for CSP, the
/// sparse Z). The coordinator calls it through this protocol only, so pruning methods slot in
/// without touching transport or coordination code.
public protocol ProjectionStep: Sendable {
    /// A short name for logs and summaries.
    var name: String { get }
    /// Projects `weights` (the dense master copy after the optimizer step of `step`) and writes
    /// the weights workers should use into `broadcast`.
    mutating func project(weights: UnsafeMutableBufferPointer<Float>, step: Int,
                          layout: ParameterLayout, broadcast: UnsafeMutableBufferPointer<Float>)
}

/// Pruning settings, composed into the run configuration.
public struct PruningSettings: Sendable, Equatable {
    public enum Method: String, Sendable, CaseIterable {
        /// No pruning: the broadcast weights are the master weights.
        case none
    }
    public var method: Method = .none
    public init() {}

    public func makeProjection() -> any ProjectionStep {
        switch method {
        case .none: IdentityProjection()
        }
    }
}

/// Broadcasts the master weights unchanged.
public struct IdentityProjection: ProjectionStep {
    public init() {}
    public var name: String { "none" }
    public func project(weights: UnsafeMutableBufferPointer<Float>, step: Int,
                        layout: ParameterLayout, broadcast: UnsafeMutableBufferPointer<Float>) {
        _ = broadcast.update(fromContentsOf: weights)
    }
}
