
import Pruning
import Tensors
import Training

/// The numbers of a run: gradient accumulation, the mean, clipping, the optimizer, the
/// projection that makes the weights sparse, and the encoding of the weights workers receive.
/// It knows nothing of members, sockets or files.
///
/// It owns a *range* of the flat parameter buffer (the whole of it today), so a later version can
/// run several, each owning a shard, as BytePS shards its servers. Work that splits by position
/// (the mean, the clip norm's partial sums, the optimizer, the encoding) runs on `Blocks` fixed by
/// the parameter layout, never by the thread count, and the clip norm adds the blocks' partial
/// sums in block order: deterministic runs stay bit for bit on any machine.
public final class ParameterServer {
    public struct Settings: Sendable {
        public var optimizer: OptimizerSettings
        public var totalSteps: Int
        /// Exact int64 fixed-point sums (deterministic mode).
        public var fixedPoint: Bool
        /// Broadcast values rounded to binary16.
        public var halfBroadcast: Bool
        public init(optimizer: OptimizerSettings, totalSteps: Int, fixedPoint: Bool, halfBroadcast: Bool) {
            self.optimizer = optimizer
            self.totalSteps = totalSteps
            self.fixedPoint = fixedPoint
            self.halfBroadcast = halfBroadcast
        }
    }

    /// What applying a step produced.
    public struct StepNumbers: Sendable {
        public var loss: Double
        public var examples: Int
        public var gradNorm: Double
        public var learningRate: Double
        public var sparsity: SparsityReport
        public var supportUpdate: SupportUpdate?
        /// Seconds of the projection alone (measured by the caller's clock through `timer`).
        public var projectionSeconds: Double
    }

    public let layout: ParameterLayout
    /// What workers send: the gradient of `layout`, then the projection's input statistics.
    public let exchange: ExchangeLayout
    public let range: Range<Int>
    public let settings: Settings
    let blocks: Blocks
    /// The optimizer's dense master weights.
    public private(set) var weights: [Float]
    /// What workers compute with: the projection of `weights` (binary16-rounded when asked).
    public private(set) var broadcast: [Float]
    public private(set) var optimizer: Optimizer
    public private(set) var projection: any ProjectionStep
    var accumulator: GradientAccumulator
    /// The mean gradient of the step being applied (kept to avoid an allocation per step).
    var gradient: [Float]
    /// The step's mean input statistics (empty when the projection reads none).
    var statistics: [Float]
    /// The weights version `broadcast` is, and its encodings (built once per version).
    public private(set) var version: UInt64
    var encodedFull: EncodedWeights?
    /// The broadcast of the previous version (what a worker one version behind holds); its
    /// buffer and `broadcast`'s trade places at every step.
    var lastSent: [Float]
    var encodedDelta: EncodedWeights?
    /// How many times weights were encoded (the tests check it is once per version and kind).
    public private(set) var encodings = 0
    /// A monotonic clock in seconds, for the projection's time only.
    let timer: @Sendable () -> Double

    public init(layout: ParameterLayout, settings: Settings, weights: [Float], broadcast: [Float], optimizer: Optimizer,
                projection: any ProjectionStep, version: UInt64, timer: @escaping @Sendable () -> Double) {
        precondition(weights.count == layout.totalCount && broadcast.count == layout.totalCount)
        self.layout = layout
        exchange = ExchangeLayout(parameters: layout, sites: projection.statisticSites)
        range = 0 ..< layout.totalCount
        self.settings = settings
        blocks = Blocks(layout: layout, range: range)
        self.weights = weights
        self.broadcast = broadcast
        lastSent = broadcast
        self.optimizer = optimizer
        self.projection = projection
        self.version = version
        self.timer = timer
        accumulator = GradientAccumulator(parameterCount: exchange.totalCount, mode: settings.fixedPoint ? .fixedPoint : .float)
        gradient = [Float](repeating: 0, count: layout.totalCount)
        statistics = [Float](repeating: 0, count: exchange.statisticsRange.count)
    }

    // MARK: Gradients

    /// Folds little-endian float32 `bytes` (a chunk, read where it was received) at `offset`,
    /// weighted by the micro-batch's examples. False when they do not fit.
    public func fold(_ bytes: UnsafeRawBufferPointer, at offset: Int, examples: Int, bf16: Bool = false) -> Bool {
        bf16 ? accumulator.fold(bf16Bytes: bytes, at: offset, weight: examples)
            : accumulator.fold(littleEndianBytes: bytes, at: offset, weight: examples)
    }

    /// Chunks folded from a copy rather than in place (see `GradientAccumulator.copiedFolds`).
    public var copiedFolds: Int { accumulator.copiedFolds }

    public func addMicroBatch(_ index: Int, examples: Int, lossSum: Double) {
        accumulator.addMicroBatch(index, examples: examples, lossSum: lossSum)
    }

    // MARK: Steps

    public enum StepFailure: Error, CustomStringConvertible {
        /// Deterministic mode's fixed-point sum overflowed in `tensor`.
        case overflow(count: Int, tensor: String)
        /// The mean gradient's norm is not finite.
        case nonFinite(tensor: String)

        public var description: String {
            switch self {
            case let .overflow(count, tensor):
                "its gradient sum left the range of deterministic mode's fixed-point accumulator (|Σ examples × gradient| ≥ 2^23 at \(count) value(s), first in tensor '\(tensor)'): the model is diverging"
            case let .nonFinite(tensor):
                "its mean gradient is not finite (first in tensor '\(tensor)'): the model is diverging"
            }
        }
    }

    /// Applies step `step` (0-based) from the folded gradients: mean, clip, optimizer, projection;
    /// the weights become version `version + 1`. On a failure nothing changes but the
    /// accumulator, which is cleared.
    public func apply(step: Int) throws(StepFailure) -> StepNumbers {
        defer { accumulator.reset() }
        if accumulator.overflows > 0 {
            let offset = accumulator.firstOverflowOffset ?? 0
            throw .overflow(count: accumulator.overflows, tensor: exchange.combined.tensors.first { $0.range.contains(offset) }?.name ?? "?")
        }
        let loss = accumulator.meanLoss
        let examples = accumulator.examples
        // The mean, and the clip norm's per-block partial sums of squares in float64 while each
        // block is in cache; the partial sums are added in block order.
        let partials = accumulator.meanAndSumsOfSquares(blocks: blocks.ranges, into: &gradient)
        let norm = partials.reduce(0, +).squareRoot()
        guard norm.isFinite else {
            let bad = gradient.firstIndex { !$0.isFinite } ?? 0
            throw .nonFinite(tensor: layout.tensors.first { $0.range.contains(bad) }?.name ?? "?")
        }
        let clip = settings.optimizer.clipNorm
        if clip > 0, norm > clip {
            let factor = Float(clip / norm)
            blocks.update(&gradient) { g in for i in g.indices { g[i] *= factor } }
        }
        let lr = settings.optimizer.learningRate * settings.optimizer.schedule.factor(step: step, totalSteps: settings.totalSteps)
        weights.withUnsafeMutableBufferPointer { w in
            gradient.withUnsafeBufferPointer { g in optimizer.apply(gradient: g, to: w, learningRate: lr, blocks: blocks) }
        }
        let layout = self.layout
        if !statistics.isEmpty {
            let range = exchange.statisticsRange
            statistics.withUnsafeMutableBufferPointer { accumulator.mean(range: range, toStartOf: $0) }
            statistics.withUnsafeBufferPointer { projection.observe(statistics: $0, examples: examples) }
        }
        let started = timer()
        // The previous version's buffer takes this version's weights (the projection writes
        // every value), and this version's stays as `lastSent`: no model-sized copy per step.
        swap(&broadcast, &lastSent)
        let update = broadcast.withUnsafeMutableBufferPointer { b in
            weights.withUnsafeMutableBufferPointer { w in
                gradient.withUnsafeBufferPointer { g in
                    projection.project(weights: w, gradient: g, step: step, learningRate: lr, layout: layout, broadcast: b)
                }
            }
        }
        if settings.halfBroadcast { broadcast.withUnsafeMutableBufferPointer { FloatEncoding.roundToHalf($0) } }
        let projectionSeconds = timer() - started
        // The delta against the version workers hold now, encoded once for every reply.
        let delta = encode(version: version + 1, previous: lastSent)
        version += 1
        encodedDelta = delta
        encodedFull = nil
        return StepNumbers(loss: loss, examples: examples, gradNorm: norm, learningRate: lr,
                           sparsity: projection.sparsityReport(broadcast, layout: layout), supportUpdate: update,
                           projectionSeconds: projectionSeconds)
    }


    // MARK: The weights workers receive

    // Dense tensors are encoded without their values: frame them with `broadcast` as the source.

    /// The current weights for a receiver holding the previous version (values only where the
    /// support did not change), if this version came from a step.
    public var delta: EncodedWeights? { encodedDelta?.version == version ? encodedDelta : nil }

    /// The current weights whole, encoded on first demand and kept for the version.
    public var full: EncodedWeights {
        if let encodedFull, encodedFull.version == version { return encodedFull }
        let e = encode(version: version, previous: nil)
        encodedFull = e
        return e
    }

    func encode(version: UInt64, previous: [Float]?) -> EncodedWeights {
        encodings += 1
        let half = settings.halfBroadcast
        var tensors = [EncodedTensor?](repeating: nil, count: layout.tensors.count)
        broadcast.withUnsafeBufferPointer { all in
            let prev = previous
            tensors.withUnsafeMutableBufferPointer { out in
                let outBase = out.baseAddress!
                Parallel.forEach(layout.tensors.count) { i in
                    let r = layout.tensors[i].range
                    let v = UnsafeBufferPointer(rebasing: all[r])
                    let encoded: EncodedTensor
                    if let prev {
                        encoded = prev.withUnsafeBufferPointer { p in
                            EncodedTensor.encode(v, half: half, previous: UnsafeBufferPointer(rebasing: p[r]), denseValues: false)
                        }
                    } else {
                        encoded = EncodedTensor.encode(v, half: half, denseValues: false)
                    }
                    outBase[i] = encoded
                }
            }
        }
        return EncodedWeights(version: version, tensors: tensors.map { $0! })
    }

}
