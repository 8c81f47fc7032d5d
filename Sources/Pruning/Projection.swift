import CompressedSensing
import Tensors

/// The centralized projection step the coordinator runs after every optimizer update.
///
/// It receives the dense master weights and returns the weights to broadcast (for CSP, the
/// sparse Z). The coordinator calls it through this protocol only, so pruning methods slot in
/// without touching transport or coordination code.
public protocol ProjectionStep: Sendable {
    /// A short name for logs and summaries.
    var name: String { get }
    /// Projects `weights` (the dense master copy after the optimizer step of `step`, which ran
    /// at `learningRate` on the aggregated `gradient`) and writes the weights workers should use
    /// into `broadcast`, every value of it (it holds an older version's weights on entry).
    /// Methods may also change the master weights (magnitude pruning zeroes them; the dual
    /// methods pull them towards Z). Returns what happened when the support changed, nil
    /// otherwise.
    mutating func project(weights: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                          step: Int, learningRate: Double, layout: ParameterLayout,
                          broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate?
    /// How sparse the broadcast weights are, as stored: by default the fraction of zeros;
    /// factorising methods count the parameters of their factors instead.
    func sparsityReport(_ broadcast: [Float], layout: ParameterLayout) -> SparsityReport
    /// Everything the method carries from step to step (masks, dual variable, running averages,
    /// factors), for checkpoints: restoring it continues the run exactly.
    var checkpointState: ProjectionState { get }
    /// Restores state saved by ``checkpointState`` for the same settings and layout; the error
    /// names what is missing or does not fit.
    mutating func restore(_ state: ProjectionState) throws(PruningError)
    /// The inputs whose second moments the method reads (empty for most methods): workers
    /// measure them and the coordinator hands each step's to ``observe(statistics:examples:)``
    /// before ``project``.
    var statisticSites: [StatisticSite] { get }
    /// One step's input statistics (``ExchangeLayout``: a record per site of ``statisticSites``),
    /// averaged over the step's `examples` examples.
    mutating func observe(statistics: UnsafeBufferPointer<Float>, examples: Int)
}

/// A projection step's state between steps, by name.
public struct ProjectionState: Sendable, Equatable {
    public var floats: [String: [Float]] = [:]
    /// 0/1 per value.
    public var masks: [String: [UInt8]] = [:]
    public var integers: [String: Int64] = [:]
    public init() {}

    func floats(_ key: String, count: Int) throws(PruningError) -> [Float] {
        guard let v = floats[key] else { throw PruningError("the checkpoint has no pruning state '\(key)'") }
        guard v.count == count else { throw PruningError("pruning state '\(key)' holds \(v.count) values, the model needs \(count)") }
        return v
    }

    func mask(_ key: String, count: Int) throws(PruningError) -> [UInt8] {
        guard let v = masks[key] else { throw PruningError("the checkpoint has no pruning mask '\(key)'") }
        guard v.count == count else { throw PruningError("pruning mask '\(key)' holds \(v.count) values, the model needs \(count)") }
        return v
    }

    func integer(_ key: String) throws(PruningError) -> Int64 {
        guard let v = integers[key] else { throw PruningError("the checkpoint has no pruning value '\(key)'") }
        return v
    }
}

extension ProjectionStep {
    public var statisticSites: [StatisticSite] { [] }
    public mutating func observe(statistics: UnsafeBufferPointer<Float>, examples: Int) {}

    public func sparsityReport(_ broadcast: [Float], layout: ParameterLayout) -> SparsityReport {
        SparsityReport(broadcast, layout: layout)
    }
}

/// A support change: per pruned layer, what the new mask keeps and how it was found.
public struct SupportUpdate: Sendable, Equatable, Codable {
    public struct Layer: Sendable, Equatable, Codable {
        public var name: String
        /// Fraction of the layer's entries kept.
        public var density: Double
        /// m / b (compressed sensing only).
        public var measurementRatio: Double?
        /// ‖x̂ − v‖ / ‖v‖ of the solver's estimates against the blocks they measured (CSP only).
        public var recoveryError: Double?
        /// Fraction of the chosen support that the top-k by magnitude also holds (1: CSP chose
        /// exactly what magnitude pruning would have).
        public var overlapWithTopK: Double?
        /// low-rank: the rank kept (nil: the tensor is not factored).
        public var rank: Int?
        /// Parameters stored for the tensor (low-rank: r·(m + n)).
        public var parameters: Int?
        /// Methods that read input statistics: the output error the new weights leave,
        /// Σ_rows (z − w)ᵀĜ(z − w) / Σ_rows wᵀĜw (0: the layer's output is unchanged; 1: as if
        /// the layer were removed).
        public var outputError: Double?
        /// Dual methods: ‖U‖ / ‖W‖ over the layer at the update (the dual's growth).
        public var dualNorm: Double?

        public init(name: String, density: Double, measurementRatio: Double? = nil, recoveryError: Double? = nil,
                    overlapWithTopK: Double? = nil) {
            self.name = name
            self.density = density
            self.measurementRatio = measurementRatio
            self.recoveryError = recoveryError
            self.overlapWithTopK = overlapWithTopK
        }
    }
    public var step: Int
    public var sparsity: Double
    public var layers: [Layer]
}

/// Broadcasts the master weights unchanged.
public struct IdentityProjection: ProjectionStep {
    public init() {}
    public var name: String { "none" }
    public func project(weights: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                        step: Int, learningRate: Double, layout: ParameterLayout,
                        broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate? {
        _ = broadcast.update(fromContentsOf: weights)
        return nil
    }
    public var checkpointState: ProjectionState { ProjectionState() }
    public mutating func restore(_ state: ProjectionState) throws(PruningError) {}
}

/// Pruning settings, composed into the run configuration (`pruning:` in YAML).
public struct PruningSettings: Sendable, Equatable {
    public enum Method: String, Sendable, CaseIterable {
        /// No pruning: the broadcast weights are the master weights.
        case none
        /// Compressed-sensing projection: the dual scheme with supports recovered from block
        /// measurements (see Sources/Pruning/README.md).
        case csp
        /// The same dual scheme with Φ = identity: supports are the top-k of W + U per block.
        case admmMagnitude = "admm-magnitude"
        /// Magnitude pruning on the cubic schedule, masks recomputed every `schedule.interval` steps.
        case gradualMagnitude = "gradual-magnitude"
        /// Magnitude pruning at once, at `schedule.start_step`; the mask then stays.
        case oneShotMagnitude = "one-shot-magnitude"
        /// The first-order Taylor criterion |w · g| (averaged over recent steps) on the schedule.
        case taylor
        /// N:M structured sparsity (`structured_keep` of every `structured_group` consecutive
        /// weights of a row), imposed at the schedule's update steps.
        case structured
        /// Truncated SVD with the rank reduced on the schedule (target: 1 − stored/dense
        /// parameters of the factored tensors).
        case lowRank = "low-rank"
        /// Wanda (Sun et al., 2023): |w|·‖x‖ per output row, ‖x‖ from diag G of the workers'
        /// input statistics, on the schedule.
        case wanda
        /// OBS/SparseGPT-style: once, at `schedule.start_step`, each row's support and values
        /// minimise its output error under G (the activations objective); then fine-tuning
        /// with the mask fixed.
        case oneShotReconstruction = "one-shot-reconstruction"
    }
    /// How `csp` measures W + U: through a seeded random operator per layer, or through the
    /// layer's own inputs (the activations objective; Sources/Pruning/README.md).
    public enum Operator: String, Sendable, CaseIterable {
        case gaussian, rademacher, srht, activations
        /// The layer's own inputs through a sketch: workers send S X (m random combinations of the
        /// frames) instead of Σ x xᵀ, and each row is recovered from its m measurements S X w.
        case activationSketch = "activation-sketch"
        var random: MeasurementOperator.Kind? { MeasurementOperator.Kind(rawValue: rawValue) }
        /// The activations objective, from G or from a sketch of the inputs.
        public var readsActivations: Bool { self == .activations || self == .activationSketch }
    }
    /// How the dual methods' ρ follows the support's size (Sources/Pruning/README.md, "The
    /// collapse at 90%").
    public enum RhoGrowth: String, Sendable, CaseIterable {
        /// ρ throughout (before 2026-11-30). At 90% the pull is too weak for the pruned mass: U
        /// grows to the size of W and the model collapses.
        case none
        /// ρ / (1 − s) once the support has sparsity s, with U rescaled by the ratio of the old
        /// ρ to the new one at each change (the scaled dual of Boyd et al. 2011, §3.4.1): the
        /// pull grows with the mass it holds at zero, 10× at 90%.
        case sparsity

        /// ρ's multiplier under a support of sparsity `s` (capped at 100, s = 0.99).
        public func scale(sparsity s: Double) -> Double {
            self == .sparsity ? 1 / max(0.01, 1 - s) : 1
        }
    }
    /// What `csp` with a random operator asks of its measurements (Sources/Pruning/README.md,
    /// "What compressed sensing can and cannot do here").
    public enum Recovery: String, Sendable, CaseIterable {
        /// Recover W + U at the sparsity it has, that of the current support (measurements
        /// sized for it: all of a block's while W + U is still dense), then keep the largest
        /// k of the estimate.
        case signal
        /// Ask the solver for a k-sparse estimate at the new size directly, with measurements
        /// sized for k (before 2026-11-30): a model of the signal sparser than it is.
        case target
    }
    public enum Scope: String, Sendable, CaseIterable {
        /// Every pruned layer reaches the target sparsity.
        case layer
        /// One magnitude threshold over all pruned layers (magnitude methods only).
        case global
    }

    public var method: Method = .none
    public var scope: Scope = .layer
    public var schedule = SparsitySchedule()
    /// Tensor-name patterns never pruned (e.g. `conv.0.*`, `output.*`).
    public var exclude: [String] = []
    /// Dual methods: values per block (the last block of a layer is zero-padded).
    public var block = 256
    /// csp: measurements per block.
    public var measurements = Measurements.auto
    public var measurementOperator: Operator = .gaussian
    /// csp with a random operator: what is recovered from the measurements.
    public var recover = Recovery.signal
    /// Methods that read input statistics: λ of Ĝ = G + λ·mean(diag G)·I.
    public var damping = 0.01
    /// csp with activations, one-shot-reconstruction: where each row's solver starts.
    public var warmStart: RowSparseRegression.WarmStart = .obs
    /// csp with activations, one-shot-reconstruction: swap rounds per row after the solver.
    public var swaps = 16
    /// csp with activations, one-shot-reconstruction: iterated-local-search restarts per row after
    /// the swap rounds (the best support kicked by two random exchanges, then swap rounds again).
    public var restarts = RowSparseRegression.Restarts.auto
    public var solver: SparseRecovery.Solver = .niht
    public var iterations = 30
    /// Dual methods: ρ, the strength of the proximal pull ρ(W − Z + U), applied decoupled from the
    /// optimizer's scaling as W ← W − lr · ρ · (W − Z + U). lr·ρ is the fraction of the gap closed
    /// per step; it must not be tiny, or U integrates the pruned weights for hundreds of steps
    /// before W follows and the next support picks them back (measured: ρ = 1 at lr 3e-4 took a
    /// trained speech model from 6.7% to 47% WER). With lr·ρ = a the pruned (W, U) pair evolves by
    /// a matrix with eigenvalues of modulus √(1 − a): a ≈ 0.1–0.3 damps it within tens of steps.
    public var rho = 300.0
    /// Dual methods: how ρ follows the support's size.
    public var rhoGrowth = RhoGrowth.sparsity
    /// Dual methods: the dual variable U accumulates W − Z every this many steps.
    public var dualInterval = 1
    /// Seeds the measurement operators (with each layer's name).
    public var seed: UInt64 = 0
    /// taylor: weight of the previous average in the moving average of |w · g| per step.
    public var taylorDecay = 0.9
    /// structured: N and M of N:M sparsity.
    public var structuredKeep = 2
    public var structuredGroup = 4

    public init() {}

    /// The dual (ADMM-style) methods: csp and admm-magnitude.
    public var isDual: Bool { method == .csp || method == .admmMagnitude }

    /// Settings that run but cannot do what they are for, said once at the start of a run.
    public var advisories: [String] {
        var out: [String] = []
        // A fixed ratio of measurements under `recover: signal`: NIHT recovers a block only
        // while it holds at most m/5.5 values (Measurements.rows(block:held:)); `auto` sizes m
        // for each update, a ratio does not.
        if method == .csp, !measurementOperator.readsActivations, recover == .signal, case let .ratio(r) = measurements {
            let m = Measurements.ratio(r).rows(block: block, kept: 0)
            let exactFrom = 1 - Double(m) / 5.5 / Double(block)
            if exactFrom > schedule.initial {
                out.append("pruning.measurements: \(r) (\(m) of a block's \(block) values) with pruning.recover: signal recovers W + U exactly only once a block holds at most \(Int(Double(m) / 5.5)) values (sparsity \(String(format: "%.0f", exactFrom * 100))% and above); the support updates below that recover it inexactly (NIHT recovered 0–75% of Gaussian-measured blocks past k/m = 0.23, scripts/niht-phase-transition.py). Use pruning.measurements: auto, which sizes the measurements for each update (all of a block's values while W + U is dense)")
            }
        }
        if solvesRows, swaps == 0, restarts != .count(0) {
            out.append("pruning.restarts does nothing with pruning.swaps: 0 (each restart runs the swap rounds again); set pruning.swaps above 0 or pruning.restarts: 0")
        }
        if method == .csp, measurementOperator == .activationSketch, case let .ratio(r) = measurements, r >= 0.5 {
            out.append("pruning.measurements: \(r) with pruning.operator activation-sketch sends (m + 1)·d values per input, as many as the full Σ x xᵀ (d(d + 1)/2) or more from m = d/2: use pruning.operator activations, which is exact, or fewer measurements")
        }
        return out
    }

    /// True when the method solves each row's output-error problem (``RowSparseRegression``):
    /// the only methods `warm_start`, `swaps` and `restarts` change.
    public var solvesRows: Bool {
        method == .oneShotReconstruction || (method == .csp && measurementOperator.readsActivations)
    }

    /// True when the method reads the second moments of the pruned layers' inputs.
    public var needsInputStatistics: Bool {
        switch method {
        case .wanda, .oneShotReconstruction: true
        case .csp: measurementOperator.readsActivations
        default: false
        }
    }

    /// The inputs workers measure for this method: those of the pruned tensors among `available`
    /// (the model's ``TrainableModel.statisticSites``), or none when the method reads none.
    public func statisticSites(layout: ParameterLayout, available: [StatisticSite]) -> [StatisticSite] {
        guard needsInputStatistics else { return [] }
        let sites = PrunedLayers(layout: layout, exclude: exclude).sites(among: available)
        guard method == .csp, measurementOperator == .activationSketch else { return sites }
        return sites.map { $0.sketched(rows: measurements.sketchRows(dimension: $0.dimension)) }
    }

    /// `sites`: the inputs the model can measure (``TrainableModel.statisticSites``); the
    /// methods that need statistics read those of the pruned tensors.
    public func makeProjection(layout: ParameterLayout, seed runSeed: UInt64, sites: [StatisticSite] = []) throws -> any ProjectionStep {
        var statistics: InputStatistics?
        if needsInputStatistics {
            guard damping >= 0 else { throw PruningError("pruning.damping must be at least 0 (got \(damping))") }
            guard scope == .layer else { throw PruningError("pruning.scope global is for the magnitude methods; methods that read the inputs' statistics work per row") }
            let layers = PrunedLayers(layout: layout, exclude: exclude)
            let used = statisticSites(layout: layout, available: sites)
            let missing = layers.tensors.filter { spec in !used.contains { $0.tensors.contains(spec.name) } }.map(\.name)
            guard missing.isEmpty else {
                let what = method == .csp ? "pruning.operator \(measurementOperator.rawValue)" : "pruning.method \(method.rawValue)"
                throw PruningError("\(what) needs the inputs of every pruned tensor, and the model cannot measure those of \(missing.joined(separator: ", ")) (exclude them, or choose another method)")
            }
            statistics = InputStatistics(sites: used)
        }
        if let problem = schedule.problem, method != .none { throw PruningError("pruning.schedule: \(problem)") }
        switch method {
        case .none:
            return IdentityProjection()
        case .gradualMagnitude, .oneShotMagnitude:
            var s = self
            if method == .oneShotMagnitude { s.schedule.kind = .oneShot }
            return MaskedProjection(settings: s, criterion: .magnitude, layout: layout)
        case .wanda:
            return MaskedProjection(settings: self, criterion: .wanda, layout: layout, statistics: statistics)
        case .oneShotReconstruction:
            var s = self
            s.schedule.kind = .oneShot
            return MaskedProjection(settings: s, criterion: .reconstruction, layout: layout, statistics: statistics)
        case .taylor:
            guard (0 ..< 1).contains(taylorDecay) else { throw PruningError("pruning.taylor_decay must be in [0, 1) (got \(taylorDecay))") }
            return MaskedProjection(settings: self, criterion: .taylor, layout: layout)
        case .structured:
            guard structuredKeep >= 1, structuredGroup > structuredKeep else {
                throw PruningError("pruning.structured_keep (\(structuredKeep)) must be at least 1 and below pruning.structured_group (\(structuredGroup))")
            }
            return MaskedProjection(settings: self, criterion: .structured, layout: layout)
        case .lowRank:
            guard scope == .layer else { throw PruningError("pruning.scope global is for the magnitude methods; low-rank works per layer") }
            return LowRankProjection(settings: self, layout: layout)
        case .csp, .admmMagnitude:
            guard block >= 2 else { throw PruningError("pruning.block must be at least 2 (got \(block))") }
            if case let .ratio(r) = measurements, !(r > 0 && r <= 1) {
                throw PruningError("pruning.measurements must be auto or a ratio in (0, 1] (got \(r))")
            }
            if method == .csp, measurementOperator == .srht, block & (block - 1) != 0 {
                throw PruningError("pruning.operator srht needs pruning.block to be a power of two (got \(block))")
            }
            guard scope == .layer else {
                throw PruningError("pruning.scope global is for the magnitude methods; \(method.rawValue) works per layer and block")
            }
            return DualProjection(settings: self, layout: layout, seed: seed == 0 ? runSeed : seed, statistics: statistics)
        }
    }
}

/// Measurements per block of b values.
public enum Measurements: Sendable, Equatable {
    /// m = min(b, ⌈2·k·ln(b/k)⌉) for the block's k.
    case auto
    /// m = round(ratio · b).
    case ratio(Double)

    /// `operator: activation-sketch`: rows m of a d-input site's sketch S X; `auto` is ⌈d/4⌉,
    /// half the values of the packed Σ x xᵀ (Sources/Pruning/README.md, "Sketch").
    public func sketchRows(dimension d: Int) -> Int {
        switch self {
        case .auto: max(1, (d + 3) / 4)
        case let .ratio(r): max(1, min(d, Int((r * Double(d)).rounded())))
        }
    }

    public func rows(block b: Int, kept k: Int) -> Int {
        switch self {
        case .auto: MeasurementOperator.automaticRows(columns: b, sparsity: k)
        case let .ratio(r): max(1, min(b, Int((r * Double(b)).rounded())))
        }
    }

    /// Measurements to recover a block that holds `held` values (`recover: signal`): `auto`
    /// adds the floor m ≥ 5.5·k to 2k·ln(b/k), where NIHT recovers exactly sparse 256-weight
    /// Gaussian-measured blocks in 30 iterations (k/m ≤ 0.18; scripts/niht-phase-transition.py:
    /// 95–100% recovered at k/m ≈ 0.2, 0–75% above 0.23).
    public func rows(block b: Int, held k: Int) -> Int {
        guard case .auto = self, k > 0 else { return rows(block: b, kept: k) }
        return min(b, max(rows(block: b, kept: k), Int((5.5 * Double(k)).rounded(.up))))
    }
}

public struct PruningError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
