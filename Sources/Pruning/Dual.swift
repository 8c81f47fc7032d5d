import CompressedSensing
import Foundation
import Tensors

/// The dual (ADMM-style) projection shared by `csp` and `admm-magnitude`; the two differ only in
/// how a new support is chosen. The formulation, defaults and this project's own choices are in
/// Sources/Pruning/README.md. Per pruned layer, with master weights W (after the optimizer step),
/// dual variable U (the accumulated compression error) and support mask M:
///
///     W ← W − min(1, lr·ρ') · (W − Z + U)   proximal pull on the pruned entries (M = 0),
///                                            decoupled from the optimizer's scaling
///     every `interval` steps: M ← support(W + U)  (csp: recovered from block measurements;
///                                                  admm-magnitude: top-k of each block)
///     Z ← M ⊙ (W + U)
///     U ← U + W − Z                          every `dualInterval` steps
///     after a support change to sparsity s:  ρ' ← ρ / (1 − s),  U ← U · ρ'_old / ρ'
///                                            (`rho_growth: sparsity`; ρ' = ρ under `none`)
///
/// and the workers receive Z. Layers are cut into blocks of b consecutive weights (the last one
/// zero-padded); each block keeps k_b = round((1 − s) · b) entries at the scheduled sparsity s.
public struct DualProjection: ProjectionStep {
    public let settings: PruningSettings
    public let layers: PrunedLayers
    let seed: UInt64
    /// (total) U, Z and M; only the pruned layers' ranges are used.
    public private(set) var dual: [Float]
    public private(set) var sparse: [Float]
    public private(set) var mask: [UInt8]
    public private(set) var active = false
    /// Recovery set-ups by (layer, m), built on first use.
    private var recoveries: [String: SparseRecovery] = [:]
    /// `operator: activations`: the inputs' second moments since the last support update.
    public private(set) var statistics: InputStatistics?
    /// An update step passed while the statistics were short of frames.
    public private(set) var pendingUpdate = false
    /// The sparsity of the current support (0 before the first): sets ρ' under `rho_growth`.
    public private(set) var supportSparsity = 0.0

    /// ρ', the pull's strength under the current support.
    public var effectiveRho: Double { settings.rho * settings.rhoGrowth.scale(sparsity: supportSparsity) }

    public init(settings: PruningSettings, layout: ParameterLayout, seed: UInt64, statistics: InputStatistics? = nil) {
        self.settings = settings
        self.seed = seed
        self.statistics = statistics
        layers = PrunedLayers(layout: layout, exclude: settings.exclude)
        dual = [Float](repeating: 0, count: layout.totalCount)
        sparse = [Float](repeating: 0, count: layout.totalCount)
        mask = [UInt8](repeating: 1, count: layout.totalCount)
    }

    public var name: String { settings.method.rawValue }

    public var statisticSites: [StatisticSite] { statistics?.sites ?? [] }

    public mutating func observe(statistics step: UnsafeBufferPointer<Float>, examples: Int) {
        statistics?.add(step, examples: examples)
    }

    /// The measurement operators are a pure function of (seed, layer, m) and rebuilt on demand.
    public var checkpointState: ProjectionState {
        var state = ProjectionState()
        state.floats["dual"] = dual
        state.floats["sparse"] = sparse
        state.masks["mask"] = mask
        state.integers["active"] = active ? 1 : 0
        if settings.rhoGrowth != .none { state.integers["support_sparsity_bits"] = Int64(bitPattern: supportSparsity.bitPattern) }
        if let statistics {
            statistics.save(into: &state)
            state.integers["pending_update"] = pendingUpdate ? 1 : 0
        }
        return state
    }

    public mutating func restore(_ state: ProjectionState) throws(PruningError) {
        let u = try state.floats("dual", count: dual.count)
        let z = try state.floats("sparse", count: sparse.count)
        let m = try state.mask("mask", count: mask.count)
        active = try state.integer("active") != 0
        if settings.rhoGrowth != .none {
            if let bits = state.integers["support_sparsity_bits"] {
                supportSparsity = Double(bitPattern: UInt64(bitPattern: bits))
            } else {
                // A checkpoint from before rho_growth (resumed with --allow-changed-settings):
                // the support's sparsity as its mask has it.
                var pruned = 0, total = 0
                for spec in layers.tensors { for i in spec.range { total += 1; pruned += m[i] == 0 ? 1 : 0 } }
                supportSparsity = active && total > 0 ? Double(pruned) / Double(total) : 0
            }
        }
        if statistics != nil {
            try statistics!.restore(state)
            pendingUpdate = try state.integer("pending_update") != 0
        }
        (dual, sparse, mask) = (u, z, m)
    }

    public mutating func project(weights w: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                                 step: Int, learningRate: Double, layout: ParameterLayout,
                                 broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate? {
        var updating = settings.schedule.isUpdateStep(step) || pendingUpdate
        // A snapshot's size is set when its hold starts, from the statistics gathered so far.
        if updating, let statistics, !statistics.ready(for: layers),
           !(settings.schedule.startsHold(step) && statistics.seenAny(for: layers)) {
            pendingUpdate = true
            updating = false
        }
        guard active || updating else {
            _ = broadcast.update(fromContentsOf: w)
            return nil
        }
        if active {
            // The fraction of the gap closed this step; above 1 the pull would overshoot. Only
            // pruned entries are pulled: on a kept entry Z − U is last step's W, so the pull would
            // only slow (at a = 1, freeze) the weights the model keeps.
            let pull = Float(min(1, learningRate * effectiveRho))
            for spec in layers.tensors {
                for i in spec.range where mask[i] == 0 { w[i] -= pull * (w[i] - sparse[i] + dual[i]) }
            }
        }
        var update: SupportUpdate?
        if updating {
            pendingUpdate = false
            let s = settings.schedule.sparsity(atStep: step)
            update = SupportUpdate(step: step, sparsity: s, layers: layers.tensors.map { spec in
                var layer = settings.measurementOperator.readsActivations
                    ? chooseSupportByOutput(spec, weights: w, sparsity: s)
                    : chooseSupport(spec, weights: UnsafeBufferPointer(w), sparsity: s)
                var uu = 0.0, ww = 0.0
                for i in spec.range { uu += Double(dual[i]) * Double(dual[i]); ww += Double(w[i]) * Double(w[i]) }
                layer.dualNorm = ww > 0 ? (uu / ww).squareRoot() : 0
                return layer
            })
            statistics?.reset()
            active = true
        }
        let accumulate = settings.dualInterval <= 1 || step % settings.dualInterval == 0
        _ = broadcast.update(fromContentsOf: w)
        for spec in layers.tensors {
            for i in spec.range {
                let v = w[i] + dual[i]
                let z = mask[i] != 0 ? v : 0
                sparse[i] = z
                broadcast[i] = z
                if accumulate { dual[i] = v - z }
            }
        }
        if let update {
            // ρ' changes with the support's size; U is the scaled dual (the multiplier over ρ'),
            // so it is rescaled to leave the multiplier itself unchanged.
            let before = effectiveRho
            supportSparsity = update.sparsity
            let ratio = Float(before / effectiveRho)
            if ratio != 1 { for spec in layers.tensors { for i in spec.range { dual[i] *= ratio } } }
        }
        return update
    }

    /// Picks the layer's new support from V = W + U and reports how.
    mutating func chooseSupport(_ spec: TensorSpec, weights w: UnsafeBufferPointer<Float>, sparsity s: Double) -> SupportUpdate.Layer {
        let b = settings.block, n = spec.count
        let blocks = (n + b - 1) / b
        var v = [Float](repeating: 0, count: blocks * b)   // (blocks, b), zero-padded
        for i in 0 ..< n { v[i] = w[spec.offset + i] + dual[spec.offset + i] }
        // Entries each block keeps (the layer keeps exactly round((1 − s)·n)); padding holds nothing.
        let k = blockKeeps(count: n, block: b, sparsity: s)
        var topK = [UInt8](repeating: 0, count: blocks * b)
        for j in 0 ..< blocks { SparseRecovery.topK(v, offset: j * b, count: min(b, n - j * b), k: k[j], into: &topK) }
        var report = SupportUpdate.Layer(name: spec.name, density: 0)
        var chosen = topK
        if settings.method == .csp {
            let lengths = (0 ..< blocks).map { min(b, n - $0 * b) }
            let estimates: [Float], m: Int
            switch settings.recover {
            case .signal:
                // W + U is about as sparse as the current support (the pull holds the pruned
                // entries near zero; before the first support it is dense): measure and recover
                // it at that sparsity, then keep the largest k_j of the estimate.
                // A block whose new size exceeds what it holds (rounding as the sparsity rises)
                // is asked for its new size: the extra pick then goes to the largest estimate.
                let held = (0 ..< blocks).map { j in max(k[j], (0 ..< lengths[j]).reduce(0) { $0 + Int(mask[spec.offset + j * b + $1]) }) }
                m = settings.measurements.rows(block: b, held: held.max() ?? b)
                if m >= b {
                    estimates = v  // as many measurements as weights: nothing to compress, read as is
                } else {
                    estimates = sense(v, layer: spec.name, rows: m, blocks: blocks, k: held, lengths: lengths).estimates
                }
                chosen = [UInt8](repeating: 0, count: blocks * b)
                for j in 0 ..< blocks { SparseRecovery.topK(estimates, offset: j * b, count: lengths[j], k: k[j], into: &chosen) }
            case .target:
                m = settings.measurements.rows(block: b, kept: keptCount(b, sparsity: s))
                let result = sense(v, layer: spec.name, rows: m, blocks: blocks, k: k, lengths: lengths)
                (estimates, chosen) = (result.estimates, result.support)
            }
            // A chosen position where W + U is exactly zero would keep a zero: the block would
            // end sparser than its target. Such picks give way to the largest entries left out
            // (W + U is exactly sparse when the pull closes the whole gap, lr·ρ ≥ 1).
            for j in 0 ..< blocks {
                let range = j * b ..< j * b + lengths[j]
                var dropped = 0
                for i in range where chosen[i] != 0 && v[i] == 0 { chosen[i] = 0; dropped += 1 }
                guard dropped > 0 else { continue }
                let candidates = range.filter { chosen[$0] == 0 && v[$0] != 0 }.sorted { abs(v[$0]) > abs(v[$1]) }
                for i in candidates.prefix(dropped) { chosen[i] = 1 }
            }
            var errorSquared = 0.0, normSquared = 0.0
            for i in 0 ..< n {
                let d = Double(estimates[i] - v[i])
                errorSquared += d * d
                normSquared += Double(v[i]) * Double(v[i])
            }
            report.measurementRatio = Double(m) / Double(b)
            report.recoveryError = normSquared > 0 ? (errorSquared / normSquared).squareRoot() : 0
        }
        var kept = 0, shared = 0
        for i in 0 ..< n {
            mask[spec.offset + i] = chosen[i]
            kept += Int(chosen[i])
            if chosen[i] != 0, topK[i] != 0 { shared += 1 }
        }
        report.density = Double(kept) / Double(max(1, n))
        report.overlapWithTopK = kept > 0 ? Double(shared) / Double(kept) : 1
        return report
    }

    /// Measures the blocks of `v` with the layer's m × b operator and recovers k_j-sparse estimates.
    mutating func sense(_ v: [Float], layer: String, rows m: Int, blocks: Int, k: [Int], lengths: [Int]) -> SparseRecovery.Result {
        let recovery = recovery(for: layer, rows: m)
        var y = [Float](repeating: 0, count: blocks * m)
        v.withUnsafeBufferPointer { vv in y.withUnsafeMutableBufferPointer { recovery.phi!.measure(vv, blocks: blocks, into: $0) } }
        return y.withUnsafeBufferPointer { recovery.recover($0, blocks: blocks, k: k, lengths: lengths) }
    }

    mutating func recovery(for layer: String, rows m: Int) -> SparseRecovery {
        let key = "\(layer)/\(m)"
        if let r = recoveries[key] { return r }
        var h: UInt64 = 0
        for byte in layer.utf8 { h = SeededRandom.mix(h ^ UInt64(byte)) }
        // The block size was validated when the projection was made, so this cannot fail.
        let phi = try! MeasurementOperator(kind: settings.measurementOperator.random ?? .gaussian, rows: m, columns: settings.block,
                                           seed: SeededRandom.key([seed, 0x4353_50, h]))
        let r = SparseRecovery(phi: phi, solver: settings.solver, iterations: settings.iterations)
        recoveries[key] = r
        return r
    }

    /// `operator: activations`: per row of V = W + U, the support and values with the least
    /// output error under the layer's inputs, (z − v)ᵀĜ(z − v) (``RowSparseRegression``). The
    /// kept master weights move so that W + U equals the refitted values there: Z then carries
    /// them, and the dual scheme goes on as before (Euclidean pull and dual; Sources/Pruning/README.md).
    mutating func chooseSupportByOutput(_ spec: TensorSpec, weights w: UnsafeMutableBufferPointer<Float>, sparsity s: Double) -> SupportUpdate.Layer {
        var report = SupportUpdate.Layer(name: spec.name, density: 0)
        guard let statistics, let site = statistics.site(of: spec.name) else { return report }
        let d = statistics.sites[site].dimension, n = spec.count, rows = n / d
        var v = [Float](repeating: 0, count: n)
        for i in 0 ..< n { v[i] = w[spec.offset + i] + dual[spec.offset + i] }
        let keeps = blockKeeps(count: n, block: d, sparsity: s)
        let regression = RowSparseRegression(secondMoment: statistics.secondMoment(site), dimension: d,
                                             damping: settings.damping, solver: settings.solver, iterations: settings.iterations,
                                                 warmStart: settings.warmStart, swaps: settings.swaps,
                                                 restarts: settings.restarts)
        let result = v.withUnsafeBufferPointer { regression.solve($0, rows: rows, keep: keeps) }
        var topK = [UInt8](repeating: 0, count: n)
        for (r, k) in keeps.enumerated() { SparseRecovery.topK(v, offset: r * d, count: d, k: k, into: &topK) }
        var kept = 0, shared = 0
        for i in 0 ..< n {
            mask[spec.offset + i] = result.support[i]
            if result.support[i] != 0 {
                w[spec.offset + i] = result.values[i] - dual[spec.offset + i]
                kept += 1
                if topK[i] != 0 { shared += 1 }
            }
        }
        report.density = Double(kept) / Double(max(1, n))
        report.overlapWithTopK = kept > 0 ? Double(shared) / Double(kept) : 1
        report.outputError = result.denseEnergy > 0 ? result.outputError / result.denseEnergy : 0
        return report
    }
}
