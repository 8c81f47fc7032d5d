import CKernels
import Synchronization
import Tensors

/// Sparse rows that keep a linear layer's output: for every row w of W (rows × d) and the second
/// moment G = Σ x xᵀ of the layer's inputs, the k-sparse z with the least output error
///
///     e(z) = (z − w)ᵀ Ĝ (z − w),    Ĝ = G + λ·mean(diag G)·I.
///
/// This is the layer objective of Optimal Brain Surgeon and OBC (Frantar & Alistarh, 2022), which
/// CHITA (Benbaki et al., 2023) solves by iterative hard thresholding. Read as compressed sensing,
/// the measurements of a row are the layer's responses y = X w to its input frames X (AᵀA = Ĝ up
/// to the damping), so the solvers of ``SparseRecovery`` run on the Gram matrix Ĝ and the proxies
/// Aᵀy = Ĝ w alone: no frame is kept. The damping λ keeps Ĝ positive definite and stands in for the
/// frames the statistics have not seen.
///
/// The support starts from Optimal Brain Surgeon's backward elimination (one entry at a time,
/// the others compensating; Hassibi & Stork, 1993), then the configured solver refines it where
/// that lowers the error. Every result is refitted: z takes the least-squares values on its
/// support (G_SS z_S = (G w)_S, solved in double precision), so the weights kept make up for the
/// ones removed.
public struct RowSparseRegression: Sendable {
    public let dimension: Int
    /// Ĝ, row-major d × d.
    public let gram: [Float]
    public let solver: SparseRecovery.Solver
    public let iterations: Int
    public let warmStart: WarmStart
    /// Swap rounds per row after the solver (`csp_swap_search`): each exchanges the kept and the
    /// dropped entry whose exchange lowers the row's error most, while one does.
    public let swaps: Int
    /// Iterated-local-search restarts per row after the swap rounds: the best support kicked by two
    /// random exchanges (seeded by the row), swap rounds again, the lower error kept.
    public let restarts: Restarts

    /// How many restarts a row gets.
    public enum Restarts: Sendable, Equatable {
        /// ⌊1024/k²⌋ for a row that keeps k, at most 32: each restart costs O(k²) per candidate
        /// scored, and small rows, whose local optima lie furthest from the best support, get
        /// the most; rows that keep more than 32 get none (measured in Sources/Pruning/README.md,
        /// "Restarts").
        case auto
        case count(Int)

        public func count(kept k: Int) -> Int {
            switch self {
            case .auto: k < 1 ? 0 : min(32, 1024 / (k * k))
            case let .count(n): max(0, n)
            }
        }
    }

    /// Where the solver starts.
    public enum WarmStart: String, Sendable, CaseIterable {
        /// Optimal Brain Surgeon's backward elimination: the better start, O((d − k)·d²) per row in
        /// double precision (measured: about 3 minutes for the reference speech model's pruned
        /// layers at 80% on a loaded 2-core machine; BENCHMARKS.md).
        case obs
        /// The support of the diagonal problem, |w_i|·√Ĝ_ii (Wanda's score), refitted: O(d log d)
        /// per row, for methods that update supports often.
        case diagonal
    }

    /// `secondMoment`: G, full and symmetric (d × d). `damping`: λ, relative to mean(diag G).
    public init(secondMoment: [Float], dimension d: Int, damping: Double, solver: SparseRecovery.Solver, iterations: Int,
                warmStart: WarmStart = .obs, swaps: Int = 16, restarts: Restarts = .auto) {
        precondition(secondMoment.count == d * d && d > 0)
        var g = secondMoment
        var trace = 0.0
        for i in 0 ..< d { trace += Double(g[i * d + i]) }
        // An all-zero G (a layer whose inputs were all zero) leaves the plain Euclidean problem.
        let shift = trace > 0 ? damping * trace / Double(d) : 1
        for i in 0 ..< d { g[i * d + i] += Float(shift) }
        dimension = d
        gram = g
        self.solver = solver
        self.iterations = iterations
        self.warmStart = warmStart
        self.swaps = swaps
        self.restarts = restarts
    }

    public struct Result: Sendable {
        /// (rows, d): the refitted sparse rows.
        public var values: [Float]
        /// (rows, d): 1 where a row keeps the entry.
        public var support: [UInt8]
        /// Σ over rows of the output error e(z) and of wᵀĜw (the error of removing everything).
        public var outputError: Double
        public var denseEnergy: Double
    }

    /// The sparse rows for `rows` rows of W, each keeping `keep[r]` entries.
    public func solve(_ w: UnsafeBufferPointer<Float>, rows: Int, keep: [Int]) -> Result {
        let d = dimension
        precondition(w.count >= rows * d && keep.count == rows)
        let proxy = product(w, rows: rows)
        let start = warmStart == .obs ? eliminate(w, rows: rows, keep: keep) : diagonalSupport(w, rows: rows, keep: keep)
        var support = start
        var values: [Float] = [], errors: [Double] = []
        if rows > 0 {
            values = refit(w, rows: rows, support: start, proxy: proxy)
            errors = rowErrors(values, w, rows: rows)
            let recovery = SparseRecovery(gram: gram, columns: d, solver: solver, iterations: iterations)
            let found = recovery.recover(proxy: proxy, blocks: rows, k: keep, start: solver == .niht ? values : nil)
            // A solver's support (and its refit) is kept only where it lowers the row's error
            // against the start; each support is refitted once.
            let candidate = refit(w, rows: rows, support: found.support, proxy: proxy)
            let after = rowErrors(candidate, w, rows: rows)
            for r in 0 ..< rows where after[r] <= errors[r] {
                for i in r * d ..< (r + 1) * d {
                    support[i] = found.support[i]
                    values[i] = candidate[i]
                }
                errors[r] = after[r]
            }
        }
        if rows > 0, swaps > 0 {
            // Swap rounds end at a local optimum that depends on where they start: from backward
            // elimination's support, also from the diagonal one (cheap), keeping the better.
            var starts = [support]
            if warmStart == .obs { starts.append(diagonalSupport(w, rows: rows, keep: keep)) }
            for var start in starts {
                guard exchange(&start, proxy: proxy, rows: rows) || start != support else { continue }
                let candidate = refit(w, rows: rows, support: start, proxy: proxy)
                let after = rowErrors(candidate, w, rows: rows)
                for r in 0 ..< rows where after[r] < errors[r] {
                    for i in r * d ..< (r + 1) * d {
                        support[i] = start[i]
                        values[i] = candidate[i]
                    }
                    errors[r] = after[r]
                }
            }
        }
        let zero = [Float](repeating: 0, count: rows * d)
        let energy = rowErrors(zero, w, rows: rows)
        return Result(values: values, support: support, outputError: errors.reduce(0, +), denseEnergy: energy.reduce(0, +))
    }

    /// Optimal Brain Surgeon's backward elimination, row by row (`csp_obs_eliminate`): from the
    /// dense row, remove one entry at a time, the one whose removal raises e least given that the
    /// others move to compensate, until k are left. O((d − k)·d²) per row in the worst case; Ĝ⁻¹
    /// is computed once for the layer. Without an inverse (Ĝ singular: no damping and rank-deficient
    /// inputs), the support of the diagonal problem, |w_i|·√Ĝ_ii (Wanda's score).
    func eliminate(_ w: UnsafeBufferPointer<Float>, rows: Int, keep: [Int]) -> [UInt8] {
        let d = dimension
        var support = [UInt8](repeating: 0, count: rows * d)
        guard let inverse = SymmetricMath.inversePositiveDefinite(gram.map(Double.init), n: d) else {
            return diagonalSupport(w, rows: rows, keep: keep)
        }
        support.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(rows) { r in
                var h = inverse
                var x = (0 ..< d).map { Double(w[r * d + $0]) }
                var perm = [Int32](repeating: 0, count: d)
                h.withUnsafeMutableBufferPointer { hp in
                    x.withUnsafeMutableBufferPointer { xp in
                        perm.withUnsafeMutableBufferPointer { pp in
                            csp_obs_eliminate(hp.baseAddress!, xp.baseAddress!, pp.baseAddress!, Int32(d), Int32(keep[r]),
                                              out.baseAddress! + r * d)
                        }
                    }
                }
            }
        }
        return support
    }

    /// Dropped entries a swap round considers (those with the largest residual gradient): each
    /// costs O(k²) per round, so a round stays far below one elimination's O((d − k)·d²).
    static let swapCandidates = 32

    /// Swap rounds and restarts on every row's support (`csp_swap_search`, in double precision): the local
    /// search that the one-entry-at-a-time elimination and the thresholding solvers lack (on
    /// ill-conditioned rows, backward elimination alone ends up to 1.8 × the best support's
    /// error). Returns whether any support changed.
    func exchange(_ support: inout [UInt8], proxy: [Float], rows: Int) -> Bool {
        let d = dimension
        let g = gram.map(Double.init)
        let changed = Mutex(false)
        support.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(rows) { r in
                let gw = (0 ..< d).map { Double(proxy[r * d + $0]) }
                let k = (0 ..< d).reduce(0) { $0 + (out[r * d + $1] != 0 ? 1 : 0) }
                var scratch = [Double](repeating: 0, count: Int(csp_swap_scratch(Int32(d), Int32(k))))
                var index = [Int32](repeating: 0, count: Int(csp_swap_indices(Int32(d), Int32(Self.swapCandidates))))
                // Seeded by the row alone, so the result does not depend on the threads.
                let made = csp_swap_search(g, gw, Int32(d), out.baseAddress! + r * d, &scratch, &index,
                                           Int32(Self.swapCandidates), Int32(clamping: swaps), Int32(clamping: restarts.count(kept: k)),
                                           0x5EED_0000_0000 &+ UInt64(r))
                if made > 0 { changed.withLock { $0 = true } }
            }
        }
        return changed.withLock { $0 }
    }

    /// Per row, the k largest |w_i|·√Ĝ_ii: the exact support when Ĝ is diagonal.
    func diagonalSupport(_ w: UnsafeBufferPointer<Float>, rows: Int, keep: [Int]) -> [UInt8] {
        let d = dimension
        var support = [UInt8](repeating: 0, count: rows * d)
        var score = [Float](repeating: 0, count: d)
        for r in 0 ..< rows {
            for i in 0 ..< d { score[i] = abs(w[r * d + i]) * gram[i * d + i].squareRoot() }
            var mask = [UInt8](repeating: 0, count: d)
            SparseRecovery.topK(score, offset: 0, count: d, k: keep[r], into: &mask)
            for i in 0 ..< d { support[r * d + i] = mask[i] }
        }
        return support
    }

    /// The least-squares values of every row on `support` (rows × d, 1 = kept): z_S = Ĝ_SS⁻¹(Ĝw)_S.
    public func refit(_ w: UnsafeBufferPointer<Float>, rows: Int, support: [UInt8], proxy given: [Float]? = nil) -> [Float] {
        let d = dimension
        let proxy = given ?? product(w, rows: rows)
        var out = [Float](repeating: 0, count: rows * d)
        out.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(rows) { r in
                let s = (0 ..< d).filter { support[r * d + $0] != 0 }
                let k = s.count
                guard k > 0 else { return }
                var a = [Double](repeating: 0, count: k * k)
                var b = [Double](repeating: 0, count: k)
                for (p, i) in s.enumerated() {
                    b[p] = Double(proxy[r * d + i])
                    for (q, j) in s.enumerated() { a[p * k + q] = Double(gram[i * d + j]) }
                }
                guard SymmetricMath.solvePositiveDefinite(&a, &b, n: k) else {
                    // Ĝ is positive definite whenever λ > 0; without damping a rank-deficient G can
                    // leave Ĝ_SS singular: keep w's values there, as a mask would.
                    for i in s { out[r * d + i] = w[r * d + i] }
                    return
                }
                for (p, i) in s.enumerated() { out[r * d + i] = Float(b[p]) }
            }
        }
        return out
    }

    /// e(z) per row: D = Z − W, (D Ĝ) by one matrix product, then each row's D·(DĜ) in double.
    public func rowErrors(_ z: [Float], _ w: UnsafeBufferPointer<Float>, rows: Int) -> [Double] {
        let d = dimension
        var difference = [Float](repeating: 0, count: rows * d)
        for i in 0 ..< rows * d { difference[i] = z[i] - w[i] }
        let weighted = difference.withUnsafeBufferPointer { product($0, rows: rows) }
        var errors = [Double](repeating: 0, count: rows)
        for r in 0 ..< rows {
            var e = 0.0
            for i in r * d ..< (r + 1) * d { e += Double(difference[i]) * Double(weighted[i]) }
            errors[r] = e
        }
        return errors
    }

    /// W Ĝ (rows × d).
    func product(_ w: UnsafeBufferPointer<Float>, rows: Int) -> [Float] {
        let d = dimension
        var out = [Float](repeating: 0, count: rows * d)
        guard rows > 0 else { return out }
        gram.withUnsafeBufferPointer { g in
            out.withUnsafeMutableBufferPointer { VectorMath.gemm(m: rows, n: d, k: d, w.baseAddress!, g.baseAddress!, $0.baseAddress!) }
        }
        return out
    }
}
