import Tensors

/// Low-rank factorisation by truncated SVD, with the rank reduced step by step on the schedule.
///
/// Each pruned tensor is seen as a matrix (its first dimension by the rest; a convolution's
/// (out, in, kernel) weight is out × in·kernel). Stored as two factors, a rank-r matrix of
/// m × n costs r·(m + n) parameters, so the schedule's sparsity s_t is read as the fraction of
/// stored parameters removed, and the rank is
///     r_t = min(m, n, ⌊(1 − s_t) · m·n / (m + n)⌋)   (at least 1 once s_t > 0).
/// At each update step the matrix is replaced by its best rank-r_t approximation (SVD
/// truncation, Eckart–Young), and its column space L_r (m × r, orthonormal) is kept. Between
/// updates the optimizer moves W freely and the projection W ← L_r L_rᵀ W brings it back to rank
/// r_t: the column space stays, the row space follows training (the low-rank counterpart of a
/// fixed mask whose values still train). That costs 2·r·m·n multiply-adds per matrix per step.
/// The broadcast is the dense product: workers compute with it as with any weight.
public struct LowRankProjection: ProjectionStep {
    public struct Factor: Sendable {
        public let spec: TensorSpec
        public let rows: Int
        public let columns: Int
        /// Current rank (nil: not factored yet, or the rank would save nothing).
        public var rank: Int?
        /// L_r, (rows × rank) row-major.
        var basis: [Float] = []
        /// Parameters stored for this tensor: r·(m + n) when factored, m·n otherwise.
        public var storedParameters: Int { rank.map { $0 * (rows + columns) } ?? rows * columns }
    }

    public let settings: PruningSettings
    public private(set) var factors: [Factor]
    private var scratch: [Float] = []

    public init(settings: PruningSettings, layout: ParameterLayout) {
        self.settings = settings
        factors = PrunedLayers(layout: layout, exclude: settings.exclude).tensors.filter { $0.shape.count >= 2 }.map { spec in
            Factor(spec: spec, rows: spec.shape[0], columns: spec.count / spec.shape[0], rank: nil)
        }
    }

    public var name: String { settings.method.rawValue }

    /// Per factored tensor: its rank (0: not factored yet) and the left singular vectors kept.
    public var checkpointState: ProjectionState {
        var state = ProjectionState()
        for f in factors {
            state.integers["rank/\(f.spec.name)"] = Int64(f.rank ?? 0)
            if f.rank != nil { state.floats["basis/\(f.spec.name)"] = f.basis }
        }
        return state
    }

    public mutating func restore(_ state: ProjectionState) throws(PruningError) {
        var restored = factors
        for j in restored.indices {
            let name = restored[j].spec.name
            let r = Int(try state.integer("rank/\(name)"))
            guard r >= 0, r <= min(restored[j].rows, restored[j].columns) else {
                throw PruningError("pruning state 'rank/\(name)' is \(r), outside 0...\(min(restored[j].rows, restored[j].columns))")
            }
            restored[j].rank = r == 0 ? nil : r
            restored[j].basis = r == 0 ? [] : try state.floats("basis/\(name)", count: restored[j].rows * r)
        }
        factors = restored
    }

    /// The rank that removes (at least) the fraction `s` of an m × n matrix's parameters when
    /// stored as two factors; nil when even full rank saves nothing and s is 0.
    public static func rank(rows m: Int, columns n: Int, sparsity s: Double) -> Int? {
        guard s > 0 else { return nil }
        let budget = (1 - s) * Double(m * n) / Double(m + n)
        return max(1, min(min(m, n), Int(budget.rounded(.down))))
    }

    public mutating func project(weights: UnsafeMutableBufferPointer<Float>, gradient: UnsafeBufferPointer<Float>,
                                 step: Int, learningRate: Double, layout: ParameterLayout,
                                 broadcast: UnsafeMutableBufferPointer<Float>) -> SupportUpdate? {
        var update: SupportUpdate?
        if settings.schedule.isUpdateStep(step) {
            let s = settings.schedule.sparsity(atStep: step)
            var layers: [SupportUpdate.Layer] = []
            for j in factors.indices {
                let f = factors[j]
                let w = UnsafeMutableBufferPointer(rebasing: weights[f.spec.range])
                if let r = Self.rank(rows: f.rows, columns: f.columns, sparsity: s),
                   let svd = SVD(UnsafeBufferPointer(w), rows: f.rows, columns: f.columns) {
                    svd.truncated(r, into: w)
                    factors[j].rank = r
                    factors[j].basis = svd.leftColumns(r)
                }
                let stored = factors[j].storedParameters
                var layer = SupportUpdate.Layer(name: f.spec.name, density: Double(stored) / Double(f.spec.count))
                layer.rank = factors[j].rank
                layer.parameters = stored
                layers.append(layer)
            }
            update = SupportUpdate(step: step, sparsity: s, layers: layers)
        } else {
            for f in factors {
                guard let r = f.rank else { continue }
                projectOntoColumnSpace(UnsafeMutableBufferPointer(rebasing: weights[f.spec.range]), factor: f, rank: r)
            }
        }
        _ = broadcast.update(fromContentsOf: weights)
        return update
    }

    /// W ← L_r (L_rᵀ W).
    private mutating func projectOntoColumnSpace(_ w: UnsafeMutableBufferPointer<Float>, factor f: Factor, rank r: Int) {
        if scratch.count < r * f.columns { scratch = [Float](repeating: 0, count: r * f.columns) }
        f.basis.withUnsafeBufferPointer { l in
            scratch.withUnsafeMutableBufferPointer { c in
                VectorMath.gemm(transposeA: true, m: r, n: f.columns, k: f.rows, l.baseAddress!, w.baseAddress!, c.baseAddress!)
                VectorMath.gemm(m: f.rows, n: f.columns, k: r, l.baseAddress!, c.baseAddress!, w.baseAddress!)
            }
        }
    }

    /// Stored parameters against the dense count: factored tensors count r·(m + n), the other
    /// prunable tensors their non-zero values.
    public func sparsityReport(_ broadcast: [Float], layout: ParameterLayout) -> SparsityReport {
        let zeros = SparsityReport(broadcast, layout: layout)
        var prunableStored = Double(layout.prunableCount) * (1 - zeros.prunable)
        var overallStored = Double(layout.totalCount) * (1 - zeros.overall)
        for f in factors where f.rank != nil {
            let nonZero = broadcast[f.spec.range].reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            prunableStored += Double(f.storedParameters - nonZero)
            overallStored += Double(f.storedParameters - nonZero)
        }
        return SparsityReport(prunable: layout.prunableCount == 0 ? 0 : 1 - prunableStored / Double(layout.prunableCount),
                              overall: layout.totalCount == 0 ? 0 : 1 - overallStored / Double(layout.totalCount))
    }
}
