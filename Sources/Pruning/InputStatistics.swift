import CompressedSensing
import Tensors

/// The coordinator's running sums of the workers' input second moments (``StatisticSite``),
/// since the last support update: G = Σ x xᵀ over every frame of those steps, per site. The
/// pruning methods that weigh a weight by what it multiplies read them at their update steps.
public struct InputStatistics: Sendable, Equatable {
    public let sites: [StatisticSite]
    /// Site of each pruned tensor, by name.
    let siteOf: [String: Int]
    /// Per site: Σ x xᵀ, packed upper triangle.
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
        sums = sites.map { [Float](repeating: 0, count: SymmetricMath.packedCount($0.dimension)) }
        frames = [Double](repeating: 0, count: sites.count)
        self.framesPerDimension = framesPerDimension
    }

    /// Adds one step's statistics: per site Σ x xᵀ / examples and frames / examples, averaged
    /// over the step's micro-batches by examples (``InputMomentRecorder``), so that `examples`
    /// times them are the step's sums.
    public mutating func add(_ step: UnsafeBufferPointer<Float>, examples: Int) {
        var o = 0
        for i in sites.indices {
            let n = SymmetricMath.packedCount(sites[i].dimension)
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

    /// G of `site` as a full d × d matrix, per frame (Σ x xᵀ / frames).
    public func secondMoment(_ site: Int) -> [Float] {
        let d = sites[site].dimension
        var full = sums[site].withUnsafeBufferPointer { SymmetricMath.unpackUpper($0, n: d) }
        let scale = frames[site] > 0 ? Float(1 / frames[site]) : 0
        for i in full.indices { full[i] *= scale }
        return full
    }

    /// diag G of `site`, per frame.
    public func diagonal(_ site: Int) -> [Float] {
        let d = sites[site].dimension
        var out = [Float](repeating: 0, count: d)
        var o = 0
        let scale = frames[site] > 0 ? Float(1 / frames[site]) : 0
        for r in 0 ..< d { out[r] = sums[site][o] * scale; o += d - r }
        return out
    }

    /// For checkpoints: the sums and frame counts by site.
    func save(into state: inout ProjectionState) {
        for (i, site) in sites.enumerated() {
            state.floats["statistics/\(site.name)"] = sums[i]
            state.integers["statistics/\(site.name)/frames"] = Int64(frames[i])
        }
    }

    mutating func restore(_ state: ProjectionState) throws(PruningError) {
        for (i, site) in sites.enumerated() {
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
