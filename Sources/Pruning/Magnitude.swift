import CompressedSensing
import Tensors

/// Mask-based pruning: at each update step of the schedule a mask keeps, per pruned layer (or,
/// with `scope: global`, over all of them), the weights with the highest score; between updates
/// the master weights are held at zero outside the mask, so what the optimizer moves there is
/// undone, and the broadcast is the masked weights. Criteria:
/// - `magnitude` (one-shot-magnitude, gradual-magnitude): |w|;
/// - `taylor`: the first-order estimate of the loss change from removing w, |w · g|, averaged
///   over recent steps as an exponential moving average (weight `taylorDecay` per step) of the
///   aggregated gradient, so one noisy batch does not decide;
/// - `structured`: N:M sparsity, in every group of M consecutive weights of a row keep the N of
///   largest |w| (2:4 by default: the pattern sparse tensor cores run); the sparsity is exactly
///   1 − N/M on each layer whose rows hold a multiple of M weights, and the schedule's target is
///   ignored.
public struct MaskedProjection: ProjectionStep {
    public enum Criterion: Sendable { case magnitude, taylor, structured }
    public let settings: PruningSettings
    public let criterion: Criterion
    public let layers: PrunedLayers
    /// (total): 1 where a weight of a pruned layer is kept (unused outside pruned layers).
    public private(set) var mask: [UInt8]
    /// taylor: the moving average of |w · g| (total).
    public private(set) var saliency: [Float]
    public private(set) var active = false

    public init(settings: PruningSettings, criterion: Criterion, layout: ParameterLayout) {
        self.settings = settings
        self.criterion = criterion
        layers = PrunedLayers(layout: layout, exclude: settings.exclude)
        mask = [UInt8](repeating: 1, count: layout.totalCount)
        saliency = criterion == .taylor ? [Float](repeating: 0, count: layout.totalCount) : []
    }

    public var name: String { settings.method.rawValue }

    public var checkpointState: ProjectionState {
        var state = ProjectionState()
        state.masks["mask"] = mask
        if criterion == .taylor { state.floats["saliency"] = saliency }
        state.integers["active"] = active ? 1 : 0
        return state
    }

    public mutating func restore(_ state: ProjectionState) throws(PruningError) {
        let m = try state.mask("mask", count: mask.count)
        if criterion == .taylor { saliency = try state.floats("saliency", count: saliency.count) }
        active = try state.integer("active") != 0
        mask = m
    }

    public mutating func project(weights: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                                 step: Int, learningRate: Double, layout: ParameterLayout,
                                 broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate? {
        if criterion == .taylor, gradient.count == weights.count {
            let decay = Float(settings.taylorDecay)
            for spec in layers.tensors {
                for i in spec.range { saliency[i] = decay * saliency[i] + (1 - decay) * abs(weights[i] * gradient[i]) }
            }
        }
        var update: SupportUpdate?
        if settings.schedule.isUpdateStep(step) {
            let s = criterion == .structured ? 1 - Double(settings.structuredKeep) / Double(settings.structuredGroup)
                                             : settings.schedule.sparsity(atStep: step)
            selectMask(UnsafeBufferPointer(weights), sparsity: s)
            active = true
            update = SupportUpdate(step: step, sparsity: s, layers: layers.tensors.map { spec in
                let kept = spec.range.reduce(0) { $0 + Int(mask[$1]) }
                return .init(name: spec.name, density: Double(kept) / Double(max(1, spec.count)))
            })
        }
        if active {
            for spec in layers.tensors { for i in spec.range where mask[i] == 0 { weights[i] = 0 } }
        }
        _ = broadcast.update(fromContentsOf: weights)
        return update
    }

    mutating func selectMask(_ w: UnsafeBufferPointer<Float>, sparsity s: Double) {
        switch criterion {
        case .magnitude: selectByScore(w, sparsity: s)
        case .taylor:
            let scores = saliency
            scores.withUnsafeBufferPointer { selectByScore($0, sparsity: s) }
        case .structured: selectStructured(w)
        }
    }

    /// N of every M consecutive weights of a row (a shorter tail keeps the same fraction, rounded).
    mutating func selectStructured(_ w: UnsafeBufferPointer<Float>) {
        let n = settings.structuredKeep, m = settings.structuredGroup
        var scratch = [Float](repeating: 0, count: m)
        for spec in layers.tensors {
            let row = spec.shape.count > 1 ? spec.count / spec.shape[0] : spec.count
            for i in spec.range { mask[i] = 0 }
            for r in stride(from: spec.offset, to: spec.offset + spec.count, by: row) {
                for g in stride(from: r, to: r + row, by: m) {
                    let size = min(m, r + row - g)
                    let keep = size == m ? n : keptCount(size, sparsity: 1 - Double(n) / Double(m))
                    mask.withUnsafeMutableBufferPointer { mk in
                        scratch.withUnsafeMutableBufferPointer { sc in
                            Selection.markTopK(UnsafeBufferPointer(rebasing: w[g ..< g + size]), k: keep,
                                               into: UnsafeMutableBufferPointer(rebasing: mk[g ..< g + size]), scratch: sc)
                        }
                    }
                }
            }
        }
    }

    /// The highest `scores` per layer, or above one threshold over all pruned layers.
    mutating func selectByScore(_ scores: UnsafeBufferPointer<Float>, sparsity s: Double) {
        switch settings.scope {
        case .layer:
            for spec in layers.tensors { magnitudeMask(scores, spec: spec, keep: keptCount(spec.count, sparsity: s), into: &mask) }
        case .global:
            // One threshold over every pruned score: gather them, select, then mark per layer.
            var all: [Float] = []
            all.reserveCapacity(layers.count)
            for spec in layers.tensors { all += scores[spec.range] }
            let keep = keptCount(all.count, sparsity: s)
            var joint = [UInt8](repeating: 0, count: all.count)
            all.withUnsafeBufferPointer { magnitudeMask($0, spec: TensorSpec(name: "all", shape: [all.count], offset: 0, prunable: true), keep: keep, into: &joint) }
            var n = 0
            for spec in layers.tensors { for i in spec.range { mask[i] = joint[n]; n += 1 } }
        }
    }
}
