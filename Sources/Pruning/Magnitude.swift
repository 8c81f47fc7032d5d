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
///   ignored;
/// - `wanda`: |w_ij|·‖x_j‖ (‖x_j‖ = √G_jj from the workers' input statistics), compared within
///   each output row, as Sun et al. (2023) do;
/// - `reconstruction` (one-shot): per row the support and values that minimise the output error
///   (z − w)ᵀĜ(z − w) (``RowSparseRegression``); the kept master weights take the refitted values.
///
/// Methods that read statistics update only once every pruned tensor's inputs have been seen for
/// enough frames (8 per input dimension): an update step that comes earlier waits for them.
public struct MaskedProjection: ProjectionStep {
    public enum Criterion: Sendable { case magnitude, taylor, structured, wanda, reconstruction }
    public let settings: PruningSettings
    public let criterion: Criterion
    public let layers: PrunedLayers
    /// (total): 1 where a weight of a pruned layer is kept (unused outside pruned layers).
    public private(set) var mask: [UInt8]
    /// taylor: the moving average of |w · g| (total).
    public private(set) var saliency: [Float]
    public private(set) var active = false
    /// wanda, reconstruction: the inputs' second moments since the last update.
    public private(set) var statistics: InputStatistics?
    /// An update step passed while the statistics were short of frames.
    public private(set) var pendingUpdate = false

    public init(settings: PruningSettings, criterion: Criterion, layout: ParameterLayout, statistics: InputStatistics? = nil) {
        precondition((criterion == .wanda || criterion == .reconstruction) == (statistics != nil))
        self.settings = settings
        self.criterion = criterion
        self.statistics = statistics
        layers = PrunedLayers(layout: layout, exclude: settings.exclude)
        mask = [UInt8](repeating: 1, count: layout.totalCount)
        saliency = criterion == .taylor ? [Float](repeating: 0, count: layout.totalCount) : []
    }

    public var statisticSites: [StatisticSite] { statistics?.sites ?? [] }

    public mutating func observe(statistics step: UnsafeBufferPointer<Float>, examples: Int) {
        statistics?.add(step, examples: examples)
    }

    public var name: String { settings.method.rawValue }

    public var checkpointState: ProjectionState {
        var state = ProjectionState()
        state.masks["mask"] = mask
        if criterion == .taylor { state.floats["saliency"] = saliency }
        state.integers["active"] = active ? 1 : 0
        if let statistics {
            statistics.save(into: &state)
            state.integers["pending_update"] = pendingUpdate ? 1 : 0
        }
        return state
    }

    public mutating func restore(_ state: ProjectionState) throws(PruningError) {
        let m = try state.mask("mask", count: mask.count)
        if criterion == .taylor { saliency = try state.floats("saliency", count: saliency.count) }
        active = try state.integer("active") != 0
        if statistics != nil {
            try statistics!.restore(state)
            pendingUpdate = try state.integer("pending_update") != 0
        }
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
        var updating = settings.schedule.isUpdateStep(step) || pendingUpdate
        // A snapshot's size is set when its hold starts, from the statistics gathered so far.
        if updating, let statistics, !statistics.ready(for: layers),
           !(settings.schedule.startsHold(step) && statistics.seenAny(for: layers)) {
            pendingUpdate = true
            updating = false
        }
        if updating {
            pendingUpdate = false
            let s = criterion == .structured ? 1 - Double(settings.structuredKeep) / Double(settings.structuredGroup)
                                             : settings.schedule.sparsity(atStep: step)
            var reports: [String: SupportUpdate.Layer] = [:]
            if criterion == .reconstruction {
                reports = reconstruct(weights, sparsity: s)
            } else {
                selectMask(UnsafeBufferPointer(weights), sparsity: s)
            }
            statistics?.reset()
            active = true
            update = SupportUpdate(step: step, sparsity: s, layers: layers.tensors.map { spec in
                let kept = spec.range.reduce(0) { $0 + Int(mask[$1]) }
                var layer = reports[spec.name] ?? .init(name: spec.name, density: 0)
                layer.density = Double(kept) / Double(max(1, spec.count))
                return layer
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
        case .wanda: selectWanda(w, sparsity: s)
        case .reconstruction: break
        }
    }

    /// Wanda: per output row, the highest |w_ij|·√G_jj; the layer keeps exactly round((1 − s)·n).
    mutating func selectWanda(_ w: UnsafeBufferPointer<Float>, sparsity s: Double) {
        guard let statistics else { return }
        for spec in layers.tensors {
            guard let site = statistics.site(of: spec.name) else { continue }
            let d = statistics.sites[site].dimension
            let norms = statistics.diagonal(site).map { $0.squareRoot() }
            var scores = [Float](repeating: 0, count: spec.count)
            for i in 0 ..< spec.count { scores[i] = abs(w[spec.offset + i]) * norms[i % d] }
            let keeps = blockKeeps(count: spec.count, block: d, sparsity: s)
            var rowMask = [UInt8](repeating: 0, count: spec.count)
            for (r, k) in keeps.enumerated() { SparseRecovery.topK(scores, offset: r * d, count: d, k: k, into: &rowMask) }
            for i in 0 ..< spec.count { mask[spec.offset + i] = rowMask[i] }
        }
    }

    /// One-shot reconstruction: each row's support and refitted values under Ĝ, written into the
    /// master weights (the fine-tuning then starts from the refitted model).
    mutating func reconstruct(_ w: UnsafeMutableBufferPointer<Float>, sparsity s: Double) -> [String: SupportUpdate.Layer] {
        guard let statistics else { return [:] }
        var reports: [String: SupportUpdate.Layer] = [:]
        for spec in layers.tensors {
            guard let site = statistics.site(of: spec.name) else { continue }
            let d = statistics.sites[site].dimension, rows = spec.count / d
            let regression = RowSparseRegression(secondMoment: statistics.secondMoment(site), dimension: d,
                                                 damping: settings.damping, solver: settings.solver, iterations: settings.iterations,
                                                 warmStart: settings.warmStart, swaps: settings.swaps,
                                                 restarts: settings.restarts)
            let keeps = blockKeeps(count: spec.count, block: d, sparsity: s)
            let result = regression.solve(UnsafeBufferPointer(rebasing: w[spec.range]), rows: rows, keep: keeps)
            for i in 0 ..< spec.count {
                mask[spec.offset + i] = result.support[i]
                w[spec.offset + i] = result.values[i]
            }
            var layer = SupportUpdate.Layer(name: spec.name, density: 0)
            layer.outputError = result.denseEnergy > 0 ? result.outputError / result.denseEnergy : 0
            reports[spec.name] = layer
        }
        return reports
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
