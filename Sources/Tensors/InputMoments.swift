/// Second moments of the inputs of a model's linear maps, measured by workers for the pruning
/// methods that weigh a weight by what it multiplies (Sources/Pruning/README.md, "Activations").
///
/// A *site* is one input: the im2col patches of a convolution, the input or the previous hidden
/// state of an LSTM layer's products, the input of the output layer. Each site feeds one or more
/// weight matrices, read as (rows, d) with d the site's dimension. For a micro-batch a worker
/// reports, per site, the packed upper triangle of Σ x xᵀ / examples (d(d + 1)/2 values) followed
/// by frames / examples. The coordinator's example-weighted mean over micro-batches, times the
/// step's examples, is then exactly Σ x xᵀ and the frame count over the whole step, as one process
/// would have measured them; values stay of the size of (frames per example) · x², well inside
/// deterministic mode's fixed-point range (an overflow is refused naming `statistics/<site>`).
public struct StatisticSite: Sendable, Equatable, Hashable {
    public var name: String
    public var dimension: Int
    /// The weight tensors that multiply this input.
    public var tensors: [String]

    public init(name: String, dimension: Int, tensors: [String]) {
        self.name = name
        self.dimension = dimension
        self.tensors = tensors
    }

    /// Values a site's record holds: the packed triangle and the frames per example.
    public var recordCount: Int { SymmetricMath.packedCount(dimension) + 1 }
}

/// What travels from workers to the coordinator each micro-batch: the gradient (the model's own
/// layout) and, after it, one record per statistic site as a tensor `statistics/<site>`. Chunks,
/// their exactly-once accounting and their (fixed-point) sums are the gradient's.
public struct ExchangeLayout: Sendable, Equatable {
    public let parameters: ParameterLayout
    public let sites: [StatisticSite]
    /// The parameters' tensors, then one per site.
    public let combined: ParameterLayout

    public init(parameters: ParameterLayout, sites: [StatisticSite] = []) {
        self.parameters = parameters
        self.sites = sites
        var combined = parameters
        for site in sites { _ = combined.append("statistics/\(site.name)", shape: [site.recordCount], prunable: false) }
        self.combined = combined
    }

    public var parameterCount: Int { parameters.totalCount }
    public var totalCount: Int { combined.totalCount }
    /// Where the statistics sit in the exchanged buffer.
    public var statisticsRange: Range<Int> { parameters.totalCount ..< combined.totalCount }
    /// Site `i`'s record, counted from the start of the statistics.
    public func recordRange(_ i: Int) -> Range<Int> {
        let spec = combined.tensors[parameters.tensors.count + i]
        return spec.offset - parameters.totalCount ..< spec.offset - parameters.totalCount + spec.count
    }
}

/// Accumulates Σ x xᵀ per site during a forward pass, for the sites asked for.
public struct InputMomentRecorder: Sendable {
    public let sites: [StatisticSite]
    private var index: [String: Int] = [:]
    /// Full d × d sums (upper triangle filled).
    private var sums: [[Float]]
    public private(set) var frames: [Int]

    public init(sites: [StatisticSite]) {
        self.sites = sites
        for (i, s) in sites.enumerated() { index[s.name] = i }
        sums = sites.map { [Float](repeating: 0, count: $0.dimension * $0.dimension) }
        frames = [Int](repeating: 0, count: sites.count)
    }

    public var isEmpty: Bool { sites.isEmpty }

    /// True when `site` is asked for (the model can skip building its rows otherwise).
    public func wants(_ site: String) -> Bool { index[site] != nil }

    /// Adds Σ x xᵀ over `rows` rows of x (rows × d, row-major; all-zero padding rows add nothing)
    /// and `frames` real frames.
    public mutating func record(_ site: String, rows x: UnsafeBufferPointer<Float>, count rows: Int, frames real: Int) {
        guard let i = index[site] else { return }
        let d = sites[i].dimension
        precondition(x.count >= rows * d)
        sums[i].withUnsafeMutableBufferPointer { SymmetricMath.accumulateSecondMoment(x.baseAddress!, rows: rows, columns: d, into: $0.baseAddress!) }
        frames[i] += real
    }

    /// Every site's record, in site order: the packed Σ x xᵀ / examples, then frames / examples.
    public func write(into out: UnsafeMutableBufferPointer<Float>, examples: Int) {
        var o = 0
        for (i, site) in sites.enumerated() {
            let d = site.dimension, n = SymmetricMath.packedCount(d)
            let scale = examples > 0 ? 1 / Float(examples) : 0
            sums[i].withUnsafeBufferPointer { SymmetricMath.packUpper($0, n: d, into: UnsafeMutableBufferPointer(rebasing: out[o ..< o + n])) }
            for j in o ..< o + n { out[j] *= scale }
            out[o + n] = examples > 0 ? Float(frames[i]) / Float(examples) : 0
            o += n + 1
        }
    }
}
