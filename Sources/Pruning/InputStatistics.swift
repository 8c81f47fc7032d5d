import CompressedSensing
import Tensors

/// The coordinator's running sums of the workers' input second moments (``StatisticSite``),
/// since the last support update: G = Σ x xᵀ over every frame of those steps, per site, or for
/// a sketched site the sketch A = S X of those frames and diag G. The pruning methods that weigh
/// a weight by what it multiplies read them at their update steps.
///
/// A sketch's AᵀA is unbiased but noisy: with m rows it has rank m, and its off-diagonal entries
/// carry noise of the order of √(G_ii G_jj / m). Read raw, it did worse at m = d/4 than at d/16
/// (Sources/Pruning/README.md, "Sketch"). G is therefore estimated by shrinking the sketch
/// towards the exact diagonal (Ledoit & Wolf, 2004, with the diagonal as the target):
///
///     Ĝ_ii = G_ii,    Ĝ_ij = (1 − α)·(AᵀA)_ij  (i ≠ j),    α = d / (d + m),
///
/// the diagonal problem (Wanda's score) as m → 0, and AᵀA's off-diagonal as m → ∞.
public struct InputStatistics: Sendable, Equatable {
    public let sites: [StatisticSite]
    /// Site of each pruned tensor, by name.
    let siteOf: [String: Int]
    /// Per site: Σ x xᵀ, packed upper triangle; sketched sites: S X (m × d), then diag Σ x xᵀ.
    public private(set) var sums: [[Float]]
    /// Per site: frames summed.
    public private(set) var frames: [Double]
    /// Frames a site needs per input dimension before its G is used (8: the floor).
    public let framesPerDimension: Double

    public init(sites: [StatisticSite], framesPerDimension: Double = 8) {
        self.sites = sites
        var siteOf: [String: Int] = [:]
        for (i, site) in sites.enumerated() { for t in site.tensors { siteOf[t] = i } }
        self.siteOf = siteOf
        sums = sites.map { [Float](repeating: 0, count: $0.measurementCount) }
        frames = [Double](repeating: 0, count: sites.count)
        self.framesPerDimension = framesPerDimension
    }

    /// Adds one step's statistics: per site Σ x xᵀ / examples and frames / examples, averaged
    /// over the step's micro-batches by examples (``InputMomentRecorder``), so that `examples`
    /// times them are the step's sums.
    public mutating func add(_ step: UnsafeBufferPointer<Float>, examples: Int) {
        var o = 0
        for i in sites.indices {
            let n = sites[i].measurementCount
            // Frames are whole: the mean frames per example times the examples, rounded.
            let stepFrames = (Double(step[o + n]) * Double(examples)).rounded()
            let weight = Float(examples)
            sums[i].withUnsafeMutableBufferPointer { s in
                for j in 0 ..< n { s[j] += weight * step[o + j] }
            }
            frames[i] += stepFrames
            o += n + 1
        }
    }

    public mutating func reset() {
        for i in sums.indices { sums[i].withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        frames = frames.map { _ in 0 }
    }

    /// The site `tensor` reads, and whether it has seen enough frames.
    public func site(of tensor: String) -> Int? { siteOf[tensor] }

    public func isReady(_ site: Int) -> Bool { frames[site] >= framesPerDimension * Double(sites[site].dimension) }

    /// Every site a pruned tensor reads has enough frames.
    public func ready(for layers: PrunedLayers) -> Bool {
        layers.tensors.allSatisfy { spec in siteOf[spec.name].map(isReady) ?? true }
    }

    /// Every site a pruned tensor reads has seen at least one frame (G exists, if not yet well estimated).
    public func seenAny(for layers: PrunedLayers) -> Bool {
        layers.tensors.allSatisfy { spec in siteOf[spec.name].map { frames[$0] > 0 } ?? true }
    }

    /// The shrinkage α of a sketch of m rows of a d-input site.
    public static func shrinkage(rows m: Int, dimension d: Int) -> Float { Float(d) / Float(d + m) }

    /// G of `site` as a full d × d matrix, per frame (Σ x xᵀ / frames); for a sketched site the
    /// shrunk estimate above, from AᵀA / frames and the exact diagonal.
    public func secondMoment(_ site: Int) -> [Float] {
        let d = sites[site].dimension, m = sites[site].sketchRows
        let scale = frames[site] > 0 ? Float(1 / frames[site]) : 0
        if m > 0 {
            var full = [Float](repeating: 0, count: d * d)
            let kept = 1 - Self.shrinkage(rows: m, dimension: d)
            sums[site].withUnsafeBufferPointer { a in
                full.withUnsafeMutableBufferPointer {
                    VectorMath.gemm(transposeA: true, m: d, n: d, k: m, alpha: scale * kept, a.baseAddress!, a.baseAddress!, $0.baseAddress!)
                }
            }
            for i in 0 ..< d { full[i * d + i] = sums[site][m * d + i] * scale }
            return full
        }
        var full = sums[site].withUnsafeBufferPointer { SymmetricMath.unpackUpper($0, n: d) }
        for i in full.indices { full[i] *= scale }
        return full
    }

    /// diag G of `site`, per frame (exact for a sketched site too).
    public func diagonal(_ site: Int) -> [Float] {
        let d = sites[site].dimension, m = sites[site].sketchRows
        var out = [Float](repeating: 0, count: d)
        let scale = frames[site] > 0 ? Float(1 / frames[site]) : 0
        if m > 0 {
            for c in 0 ..< d { out[c] = sums[site][m * d + c] * scale }
            return out
        }
        var o = 0
        for r in 0 ..< d { out[r] = sums[site][o] * scale; o += d - r }
        return out
    }

    /// For checkpoints: the sums and frame counts by site.
    func save(into state: inout ProjectionState) {
        for (i, site) in sites.enumerated() {
            state.floats["statistics/\(site.name)"] = sums[i]
            state.integers["statistics/\(site.name)/frames"] = Int64(frames[i])
            if site.sketchRows > 0 { state.integers["statistics/\(site.name)/sketch_rows"] = Int64(site.sketchRows) }
        }
    }

    mutating func restore(_ state: ProjectionState) throws(PruningError) {
        for (i, site) in sites.enumerated() {
            // The packed G and a sketch can hold the same number of values (d(d + 1)/2 = (m + 1)·d
            // when m = (d − 1)/2): the layout is checked by name, not by length.
            let saved = Int(state.integers["statistics/\(site.name)/sketch_rows"] ?? 0)
            guard saved == site.sketchRows else {
                let what = { (m: Int) in m > 0 ? "a sketch of \(m) rows (pruning.operator activation-sketch)" : "the full second moment" }
                throw PruningError("the checkpoint's statistics for \(site.name) are \(what(saved)), this run measures \(what(site.sketchRows)): resume with the checkpoint's pruning.operator and pruning.measurements")
            }
            sums[i] = try state.floats("statistics/\(site.name)", count: sums[i].count)
            frames[i] = Double(try state.integer("statistics/\(site.name)/frames"))
        }
    }
}

extension PrunedLayers {
    /// The sites whose inputs a pruned tensor reads, in the model's order.
    public func sites(among all: [StatisticSite]) -> [StatisticSite] {
        let names = Set(tensors.map(\.name))
        return all.filter { $0.tensors.contains(where: names.contains) }
    }
}
