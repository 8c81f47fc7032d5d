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
///
/// A *sketched* site (`pruning.operator: activation-sketch`) reports S X / examples instead of
/// Σ x xᵀ / examples: m random combinations of the micro-batch's frames X (frames × d), with S
/// (m × frames) of independent ±1/√m entries drawn from a key of the run's seed, the step, the
/// micro-batch's number and its examples, so that whichever worker computes a micro-batch sends
/// the same sketch.
/// Sketches of different micro-batches and steps add up to the sketch of all their frames (S is
/// then the concatenation of independent blocks), and E[(S X)ᵀ(S X)] = Xᵀ X. The exact diagonal
/// of Σ x xᵀ (d values) follows the sketch, for the coordinator's shrinkage (InputStatistics):
/// (m + 1)·d values instead of d(d + 1)/2, fewer when m < (d − 1)/2.
public struct StatisticSite: Sendable, Equatable, Hashable {
    public var name: String
    public var dimension: Int
    /// The weight tensors that multiply this input.
    public var tensors: [String]
    /// Rows m of the sketch S X sent instead of Σ x xᵀ; 0: the second moment itself.
    public var sketchRows: Int
    /// Σ x xᵀ is diagonal by construction (a lookup table's site): a sketch would only add noise
    /// off the diagonal, so such a site is never sketched.
    public var diagonal: Bool

    public init(name: String, dimension: Int, tensors: [String], sketchRows: Int = 0, diagonal: Bool = false) {
        self.name = name
        self.dimension = dimension
        self.tensors = tensors
        self.sketchRows = diagonal ? 0 : sketchRows
        self.diagonal = diagonal
    }

    /// The same site, reported as a sketch of m rows (unchanged when its G is diagonal).
    public func sketched(rows m: Int) -> StatisticSite {
        StatisticSite(name: name, dimension: dimension, tensors: tensors, sketchRows: m, diagonal: diagonal)
    }

    /// Values of the measurement: the packed triangle of Σ x xᵀ, or the m × d sketch and the d
    /// values of diag Σ x xᵀ.
    public var measurementCount: Int { sketchRows > 0 ? (sketchRows + 1) * dimension : SymmetricMath.packedCount(dimension) }
    /// Values a site's record holds: the measurement and the frames per example.
    public var recordCount: Int { measurementCount + 1 }
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

/// Accumulates Σ x xᵀ (or, for a sketched site, S X) per site during a forward pass, for the
/// sites asked for.
public struct InputMomentRecorder: Sendable {
    public let sites: [StatisticSite]
    private var index: [String: Int] = [:]
    /// Full d × d sums (upper triangle filled), or the m × d sketch followed by diag Σ x xᵀ.
    private var sums: [[Float]]
    public private(set) var frames: [Int]
    /// Sketched sites: the micro-batch's key, and the record calls so far per site (each call
    /// draws its block of S from the key, the site and its number).
    private let sketchKey: UInt64
    private var calls: [UInt64]

    /// `sketchKey`: for sketched sites, a key that names the micro-batch (``sketchKey(seed:step:microBatch:examples:)``).
    public init(sites: [StatisticSite], sketchKey: UInt64 = 0) {
        self.sites = sites
        for (i, s) in sites.enumerated() { index[s.name] = i }
        sums = sites.map { [Float](repeating: 0, count: $0.sketchRows > 0 ? $0.measurementCount : $0.dimension * $0.dimension) }
        frames = [Int](repeating: 0, count: sites.count)
        self.sketchKey = sketchKey
        calls = [UInt64](repeating: 0, count: sites.count)
    }

    /// The key of a micro-batch's sketches: the run's seed, the step, the micro-batch's number
    /// in the step and its examples, so that any worker that computes the micro-batch draws the
    /// same S, and two micro-batches of a step never do (even with the same examples, as when a
    /// step's batch wraps around a small corpus: their sketches must be independent).
    public static func sketchKey(seed: UInt64, step: UInt64, microBatch: Int, examples: [Int]) -> UInt64 {
        SeededRandom.key([seed, 0x534B_4554_4348, step, UInt64(microBatch), UInt64(examples.count)]
                         + examples.map { UInt64(bitPattern: Int64($0)) })
    }

    public var isEmpty: Bool { sites.isEmpty }

    /// True when `site` is asked for (the model can skip building its rows otherwise).
    public func wants(_ site: String) -> Bool { index[site] != nil }

    /// Adds Σ x xᵀ over `rows` rows of x (rows × d, row-major; all-zero padding rows add nothing)
    /// and `frames` real frames.
    public mutating func record(_ site: String, rows x: UnsafeBufferPointer<Float>, count rows: Int, frames real: Int) {
        guard let i = index[site] else { return }
        let d = sites[i].dimension, m = sites[i].sketchRows
        precondition(x.count >= rows * d)
        if m > 0 {
            guard rows > 0 else { return }
            // S (m × rows) of ±1/√m, 64 signs per draw, frame by frame (a frame's signs do not
            // depend on the frames after it, such as padding); then sketch += S X.
            var rng = SeededRandom(sketchKey, UInt64(i), calls[i])
            calls[i] += 1
            let scale = 1 / Float(m).squareRoot()
            var s = [Float](repeating: 0, count: m * rows)
            var bits: UInt64 = 0, left = 0
            for f in 0 ..< rows {
                for r in 0 ..< m {
                    if left == 0 { bits = rng.next(); left = 64 }
                    s[r * rows + f] = bits & 1 == 0 ? scale : -scale
                    bits >>= 1
                    left -= 1
                }
            }
            s.withUnsafeBufferPointer { sp in
                sums[i].withUnsafeMutableBufferPointer { sum in
                    VectorMath.gemm(m: m, n: d, k: rows, sp.baseAddress!, x.baseAddress!, beta: 1, sum.baseAddress!)
                    for r in 0 ..< rows {
                        for c in 0 ..< d { sum[m * d + c] += x[r * d + c] * x[r * d + c] }
                    }
                }
            }
        } else {
            sums[i].withUnsafeMutableBufferPointer { SymmetricMath.accumulateSecondMoment(x.baseAddress!, rows: rows, columns: d, into: $0.baseAddress!) }
        }
        frames[i] += real
    }

    /// Every site's record, in site order: the packed Σ x xᵀ / examples (sketched: S X / examples,
    /// then diag Σ x xᵀ / examples), then frames / examples.
    public func write(into out: UnsafeMutableBufferPointer<Float>, examples: Int) {
        var o = 0
        for (i, site) in sites.enumerated() {
            let d = site.dimension, n = site.measurementCount
            let scale = examples > 0 ? 1 / Float(examples) : 0
            if site.sketchRows > 0 {
                for j in 0 ..< n { out[o + j] = sums[i][j] }
            } else {
                sums[i].withUnsafeBufferPointer { SymmetricMath.packUpper($0, n: d, into: UnsafeMutableBufferPointer(rebasing: out[o ..< o + n])) }
            }
            for j in o ..< o + n { out[j] *= scale }
            out[o + n] = examples > 0 ? Float(frames[i]) / Float(examples) : 0
            o += n + 1
        }
    }
}
