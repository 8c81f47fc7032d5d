import Foundation
import Pruning
import Tensors
import Training

/// The projection step's cost on the coordinator as the model grows: a support update (the
/// expensive part, every `interval` steps) and a plain step (proximal pull, Z and U) for each
/// parameter count, against one pass of the optimizer over the same parameters (memory-bound,
/// the floor any per-step work over the weights pays).
public enum ProjectionBenchmark {
    public struct Row: Sendable {
        public var parameters: Int
        public var method: String
        public var supportUpdateSeconds: Double
        public var stepSeconds: Double
        /// One Adam step over the same parameters, for scale.
        public var optimizerSeconds: Double
    }

    /// `sizes` in parameters; each model is square-ish matrices of 1024 columns, all prunable.
    public static func run(sizes: [Int], settings: PruningSettings) throws -> [Row] {
        // The coordinator runs its BLAS work on one thread (CoordinatorService); so does this.
        VectorMath.setThreadCount(1)
        var rows: [Row] = []
        for size in sizes {
            let layers = max(1, size / (1024 * 1024))
            let layout = ParameterLayout((0 ..< layers).map { ("layer\($0).weight", [size / layers / 1024, 1024], true) })
            var rng = SeededRandom(1, UInt64(size))
            var weights = (0 ..< layout.totalCount).map { _ in rng.nextGaussian() * 0.05 }
            var broadcast = weights
            var s = settings
            s.schedule.kind = .oneShot
            s.schedule.startStep = 0
            var projection = try s.makeProjection(layout: layout, seed: 1)
            func project(_ step: Int) -> Double {
                let start = ContinuousClock.now
                _ = weights.withUnsafeMutableBufferPointer { w in
                    broadcast.withUnsafeMutableBufferPointer { projection.project(weights: w, gradient: UnsafeBufferPointer(w), step: step, learningRate: 1e-3, layout: layout, broadcast: $0) }
                }
                return (ContinuousClock.now - start).seconds
            }
            let update = project(0)
            let step = (1 ... 3).map(project).min()!
            var optimizerSettings = OptimizerSettings()
            optimizerSettings.kind = .adam
            var optimizer = Optimizer(settings: optimizerSettings, parameterCount: weights.count)
            let gradient = weights
            let start = ContinuousClock.now
            weights.withUnsafeMutableBufferPointer { w in
                gradient.withUnsafeBufferPointer { g in optimizer.apply(gradient: g, to: w, learningRate: 1e-3) }
            }
            let optimizerSeconds = (ContinuousClock.now - start).seconds
            rows.append(Row(parameters: layout.totalCount, method: s.method.rawValue, supportUpdateSeconds: update,
                            stepSeconds: step, optimizerSeconds: optimizerSeconds))
        }
        return rows
    }
}
