import Tensors

/// Sparse recovery of many blocks at once: given y_j = Φ v_j for every block j, estimate k_j-sparse
/// x_j and its support.
///
/// Every solver works from the proxy P = Φᵀy and the Gram matrix G = ΦᵀΦ, so its products over
/// all blocks are (blocks, b) · (b, b) matrix products through BLAS; only thresholding and the
/// small per-block least squares of CoSaMP run block by block.
///
/// - `niht`: normalised iterative hard thresholding (Blumensath & Davies, 2010): a gradient step
///   whose size is exact for the current support, hard thresholding to k, and a step-size
///   backtracking whenever the support changes.
/// - `cosamp`: CoSaMP (Needell & Tropp, 2009): merge the 2k largest proxy entries with the current
///   support, least squares on that set (by conjugate gradients on its normal equations, as the
///   paper suggests), keep the k largest.
/// - `fista`: the l1 relaxation min ½‖y − Φx‖² + λ‖x‖₁ by FISTA (Beck & Teboulle, 2009) with
///   λ = `l1Fraction` · ‖Φᵀy‖_∞ per block; the support is the k largest magnitudes of the result.
public struct SparseRecovery: Sendable {
    public enum Solver: String, Sendable, CaseIterable {
        case niht, cosamp, fista
    }

    /// The operator the measurements came through; nil when the solver was given its Gram matrix
    /// directly (``init(gram:columns:solver:iterations:)``).
    public let phi: MeasurementOperator?
    /// b: values per block.
    public let columns: Int
    public let solver: Solver
    public let iterations: Int
    /// fista only: λ as a fraction of each block's ‖Φᵀy‖_∞.
    public var l1Fraction: Float = 0.05
    let gram: [Float]
    /// Largest eigenvalue of G (the Lipschitz constant of the least-squares gradient).
    let lipschitz: Float

    public init(phi: MeasurementOperator, solver: Solver, iterations: Int) {
        self.init(phi: phi, gram: phi.gram(), columns: phi.columns, solver: solver, iterations: iterations)
    }

    /// A solver for measurements known only through their Gram matrix G = AᵀA (b × b, symmetric
    /// positive semi-definite, row-major) and proxies Aᵀy: use ``recover(proxy:blocks:k:lengths:start:)``.
    public init(gram: [Float], columns: Int, solver: Solver, iterations: Int) {
        precondition(gram.count == columns * columns)
        self.init(phi: nil, gram: gram, columns: columns, solver: solver, iterations: iterations)
    }

    private init(phi: MeasurementOperator?, gram: [Float], columns: Int, solver: Solver, iterations: Int) {
        self.phi = phi
        self.columns = columns
        self.solver = solver
        self.iterations = max(1, iterations)
        self.gram = gram
        // Power iteration approaches λ_max from below; 2% headroom keeps FISTA's step under 1/L.
        lipschitz = 1.02 * Self.largestEigenvalue(gram, n: columns)
    }

    public struct Result: Sendable {
        /// (blocks, b): the solver's estimates.
        public var estimates: [Float]
        /// (blocks, b): 1 where the recovered support holds the entry.
        public var support: [UInt8]
        /// Iterations run (the most any block needed).
        public var iterations: Int
    }

    /// Recovers `blocks` blocks from their measurements y (blocks, m); `k[j]` is block j's
    /// sparsity. `lengths[j]` (default b) is how many of block j's leading values exist: a
    /// zero-padded tail is never part of a support or an estimate.
    public func recover(_ y: UnsafeBufferPointer<Float>, blocks: Int, k: [Int], lengths: [Int]? = nil) -> Result {
        guard let phi else { preconditionFailure("recover(_:) needs the measurement operator; use recover(proxy:)") }
        var proxy = [Float](repeating: 0, count: blocks * columns)
        proxy.withUnsafeMutableBufferPointer { phi.adjoint(y, blocks: blocks, into: $0) }
        return recover(proxy: proxy, blocks: blocks, k: k, lengths: lengths)
    }

    /// Recovers `blocks` blocks from their proxies Aᵀy (blocks, b). `start` (NIHT only) is an
    /// initial k-sparse estimate per block, (blocks, b) with zeros off its support; without it
    /// NIHT starts from the top-k of the proxy.
    public func recover(proxy: [Float], blocks: Int, k: [Int], lengths: [Int]? = nil, start: [Float]? = nil) -> Result {
        precondition(k.count == blocks && (lengths?.count ?? blocks) == blocks && proxy.count == blocks * columns)
        let b = columns
        let lengths = lengths?.map { max(0, min(b, $0)) } ?? Array(repeating: b, count: blocks)
        switch solver {
        case .niht: return niht(proxy: proxy, blocks: blocks, k: k, lengths: lengths, start: start)
        case .cosamp: return cosamp(proxy: proxy, blocks: blocks, k: k, lengths: lengths)
        case .fista: return fista(proxy: proxy, blocks: blocks, k: k, lengths: lengths)
        }
    }

    // MARK: NIHT

    func niht(proxy: [Float], blocks: Int, k: [Int], lengths: [Int], start: [Float]?) -> Result {
        let b = columns, n = blocks * b
        // Working buffers as raw pointers: the loops below run over every weight of a layer many
        // times, and array accesses there cost uniqueness checks.
        func buffer<T>(_ value: T) -> UnsafeMutableBufferPointer<T> {
            let p = UnsafeMutableBufferPointer<T>.allocate(capacity: max(1, n))
            p.initialize(repeating: value)
            return p
        }
        let x = buffer(Float(0)), gradient = buffer(Float(0)), masked = buffer(Float(0)), gMasked = buffer(Float(0))
        let candidate = buffer(Float(0)), difference = buffer(Float(0)), differenceG = buffer(Float(0))
        let support = buffer(UInt8(0)), candidateSupport = buffer(UInt8(0))
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, b))
        defer {
            for p in [x, gradient, masked, gMasked, candidate, difference, differenceG] { p.deallocate() }
            support.deallocate(); candidateSupport.deallocate(); scratch.deallocate()
        }
        func markTopK(_ values: UnsafeMutableBufferPointer<Float>, _ mask: UnsafeMutableBufferPointer<UInt8>, block j: Int) {
            let o = j * b
            Selection.markTopK(UnsafeBufferPointer(rebasing: values[o ..< o + lengths[j]]), k: k[j],
                               into: UnsafeMutableBufferPointer(rebasing: mask[o ..< o + lengths[j]]), scratch: scratch)
        }
        proxy.withUnsafeBufferPointer { p in
            for i in 0 ..< n { gradient[i] = p[i] }
        }
        if let start {
            precondition(start.count == n)
            for i in 0 ..< n { x[i] = start[i]; support[i] = start[i] != 0 ? 1 : 0 }
        } else {
            for j in 0 ..< blocks { markTopK(gradient, support, block: j) }
        }
        var mu = [Float](repeating: 0, count: blocks)
        var done = [Bool](repeating: false, count: blocks)
        var used = 0
        for _ in 0 ..< iterations {
            used += 1
            // g = Φᵀ(y − Φx) = P − x·G (G symmetric), and G·g restricted to the support: two
            // products over every block at once.
            proxy.withUnsafeBufferPointer { p in for i in 0 ..< n { gradient[i] = p[i] } }
            gramProduct(UnsafeBufferPointer(x), blocks: blocks, into: gradient, alpha: -1, beta: 1)
            for i in 0 ..< n { masked[i] = support[i] != 0 ? gradient[i] : 0 }
            gramProduct(UnsafeBufferPointer(masked), blocks: blocks, into: gMasked, alpha: 1, beta: 0)
            // The step that is exact on the current support: μ = ‖g_Γ‖² / ‖Φ g_Γ‖².
            var pending = [Bool](repeating: false, count: blocks)
            for j in 0 ..< blocks where !done[j] {
                var numerator: Float = 0, denominator: Float = 0
                for i in j * b ..< (j + 1) * b { numerator += masked[i] * masked[i]; denominator += masked[i] * gMasked[i] }
                if numerator > 1e-30, denominator > 0 { mu[j] = numerator / denominator; pending[j] = true } else { done[j] = true }
            }
            // Candidates H_k(x + μg); where the support changes the step must satisfy
            // μ ≤ (1 − c)‖Δ‖² / ‖ΦΔ‖² (c = 0.01), else μ is halved (κ = 2) and the block tried again.
            var accepted = pending.map { !$0 }
            for _ in 0 ..< 8 {
                var checks = false
                for j in 0 ..< blocks where !accepted[j] {
                    let o = j * b
                    for i in o ..< o + b { candidate[i] = x[i] + mu[j] * gradient[i]; candidateSupport[i] = 0 }
                    markTopK(candidate, candidateSupport, block: j)
                    var changed = false
                    for i in o ..< o + b {
                        if candidateSupport[i] == 0 { candidate[i] = 0 }
                        if candidateSupport[i] != support[i] { changed = true }
                        difference[i] = candidate[i] - x[i]
                    }
                    if changed { checks = true } else { accepted[j] = true }
                }
                guard checks else { break }
                gramProduct(UnsafeBufferPointer(difference), blocks: blocks, into: differenceG, alpha: 1, beta: 0)
                var retry = false
                for j in 0 ..< blocks where !accepted[j] {
                    var dd: Float = 0, dGd: Float = 0
                    for i in j * b ..< (j + 1) * b { dd += difference[i] * difference[i]; dGd += difference[i] * differenceG[i] }
                    if dGd <= 0 || mu[j] <= 0.99 * dd / dGd { accepted[j] = true } else { mu[j] /= 2 * 0.99; retry = true }
                }
                for j in 0 ..< blocks where accepted[j] { for i in j * b ..< (j + 1) * b { difference[i] = 0 } }
                guard retry else { break }
            }
            var allDone = true
            for j in 0 ..< blocks where pending[j] {
                // A block whose step still failed its check after 8 halvings keeps its estimate.
                guard accepted[j] else { allDone = false; continue }
                var change: Float = 0, norm: Float = 0
                for i in j * b ..< (j + 1) * b {
                    change += (candidate[i] - x[i]) * (candidate[i] - x[i])
                    norm += candidate[i] * candidate[i]
                    x[i] = candidate[i]
                    support[i] = candidateSupport[i]
                }
                if change <= 1e-12 * max(norm, 1e-30) { done[j] = true } else { allDone = false }
            }
            if allDone { break }
        }
        return Result(estimates: Array(x.prefix(n)), support: Array(support.prefix(n)), iterations: used)
    }

    // MARK: CoSaMP

    func cosamp(proxy: [Float], blocks: Int, k: [Int], lengths: [Int]) -> Result {
        let b = columns
        var x = [Float](repeating: 0, count: blocks * b)
        var support = [UInt8](repeating: 0, count: blocks * b)
        var used = 0
        var merged = [UInt8](repeating: 0, count: b)
        var u = [Float](repeating: 0, count: b)
        for j in 0 ..< blocks {
            let o = j * b
            var blockUsed = 0
            for _ in 0 ..< iterations {
                blockUsed += 1
                // u = Φᵀ(y − Φx) = P − G x (x is sparse: only its support's columns of G).
                for i in 0 ..< b { u[i] = proxy[o + i] }
                for c in 0 ..< b where x[o + c] != 0 {
                    let v = x[o + c]
                    for r in 0 ..< b { u[r] -= gram[c * b + r] * v }
                }
                for i in 0 ..< b { merged[i] = support[o + i] }
                Self.topK(u, offset: 0, count: lengths[j], k: min(lengths[j], 2 * k[j]), into: &merged)
                let t = (0 ..< b).filter { merged[$0] != 0 }
                // Least squares on T: G_TT z = P_T, by conjugate gradients from the current x.
                let z = conjugateGradient(indices: t, rhs: t.map { proxy[o + $0] }, start: t.map { x[o + $0] })
                var estimate = [Float](repeating: 0, count: b)
                for (n, i) in t.enumerated() { estimate[i] = z[n] }
                var newSupport = [UInt8](repeating: 0, count: b)
                Self.topK(estimate, offset: 0, count: lengths[j], k: k[j], into: &newSupport)
                var same = true
                for i in 0 ..< b {
                    if newSupport[i] != support[o + i] { same = false }
                    support[o + i] = newSupport[i]
                    x[o + i] = newSupport[i] != 0 ? estimate[i] : 0
                }
                if same && blockUsed > 1 { break }
            }
            used = max(used, blockUsed)
        }
        return Result(estimates: x, support: support, iterations: used)
    }

    /// Solves G_TT z = rhs (symmetric positive semi-definite) by conjugate gradients.
    func conjugateGradient(indices t: [Int], rhs: [Float], start: [Float]) -> [Float] {
        let n = t.count, b = columns
        guard n > 0 else { return [] }
        func apply(_ v: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: n)
            for (r, i) in t.enumerated() {
                var s: Float = 0
                for (c, jj) in t.enumerated() { s += gram[i * b + jj] * v[c] }
                out[r] = s
            }
            return out
        }
        var z = start
        let gz = apply(z)
        var r = (0 ..< n).map { rhs[$0] - gz[$0] }
        var p = r
        var rr = r.reduce(0) { $0 + $1 * $1 }
        let target = 1e-10 * max(rhs.reduce(0) { $0 + $1 * $1 }, 1e-30)
        for _ in 0 ..< min(n, 30) where rr > target {
            let ap = apply(p)
            let pap = zip(p, ap).reduce(0) { $0 + $1.0 * $1.1 }
            guard pap > 0 else { break }
            let alpha = rr / pap
            for i in 0 ..< n { z[i] += alpha * p[i]; r[i] -= alpha * ap[i] }
            let next = r.reduce(0) { $0 + $1 * $1 }
            let beta = next / rr
            rr = next
            for i in 0 ..< n { p[i] = r[i] + beta * p[i] }
        }
        return z
    }

    // MARK: FISTA

    func fista(proxy: [Float], blocks: Int, k: [Int], lengths: [Int]) -> Result {
        let b = columns
        let step = 1 / max(lipschitz, 1e-12)
        var lambda = [Float](repeating: 0, count: blocks)
        for j in 0 ..< blocks {
            var peak: Float = 0
            for i in j * b ..< (j + 1) * b { peak = max(peak, abs(proxy[i])) }
            lambda[j] = l1Fraction * peak
        }
        var x = [Float](repeating: 0, count: blocks * b)
        var z = x
        var gradient = [Float](repeating: 0, count: blocks * b)
        var t: Float = 1
        var used = 0
        for _ in 0 ..< iterations {
            used += 1
            // ∇ = G z − P for every block at once.
            gradient = proxy
            multiplyByGram(z, blocks: blocks, into: &gradient, alpha: 1, beta: -1)
            let tNext = (1 + (1 + 4 * t * t).squareRoot()) / 2
            let momentum = (t - 1) / tNext
            var change: Float = 0, norm: Float = 0
            for j in 0 ..< blocks {
                let threshold = lambda[j] * step
                for i in j * b ..< j * b + lengths[j] {
                    let v = z[i] - step * gradient[i]
                    let shrunk = v > threshold ? v - threshold : (v < -threshold ? v + threshold : 0)
                    change += (shrunk - x[i]) * (shrunk - x[i])
                    norm += shrunk * shrunk
                    z[i] = shrunk + momentum * (shrunk - x[i])
                    x[i] = shrunk
                }
            }
            t = tNext
            if change <= 1e-12 * max(norm, 1e-30) { break }
        }
        var support = [UInt8](repeating: 0, count: blocks * b)
        // Non-zero entries by |x|, then the zeros by |Φᵀy|, so that the support has k entries
        // even when λ left fewer than k non-zero.
        var rank = [Float](repeating: 0, count: b)
        for j in 0 ..< blocks {
            let o = j * b
            var peakX: Float = 0, peakP: Float = 0
            for i in o ..< o + b { peakX = max(peakX, abs(x[i])); peakP = max(peakP, abs(proxy[i])) }
            for i in 0 ..< b {
                rank[i] = x[o + i] != 0 ? 1 + abs(x[o + i]) / peakX : (peakP > 0 ? abs(proxy[o + i]) / peakP : 0)
            }
            var blockSupport = [UInt8](repeating: 0, count: b)
            Self.topK(rank, offset: 0, count: lengths[j], k: k[j], into: &blockSupport)
            for i in 0 ..< b { support[o + i] = blockSupport[i] }
        }
        return Result(estimates: x, support: support, iterations: used)
    }

    // MARK: Helpers

    /// out = alpha · X (blocks, b) · G + beta · out.
    func gramProduct(_ x: UnsafeBufferPointer<Float>, blocks: Int, into out: UnsafeMutableBufferPointer<Float>, alpha: Float, beta: Float) {
        let b = columns
        guard blocks > 0 else { return }
        gram.withUnsafeBufferPointer { g in
            VectorMath.gemm(m: blocks, n: b, k: b, alpha: alpha, x.baseAddress!, g.baseAddress!, beta: beta, out.baseAddress!)
        }
    }

    /// out = alpha · X (blocks, b) · G + beta · out, for arrays.
    func multiplyByGram(_ x: [Float], blocks: Int, into out: inout [Float], alpha: Float, beta: Float) {
        x.withUnsafeBufferPointer { xv in
            out.withUnsafeMutableBufferPointer { gramProduct(xv, blocks: blocks, into: $0, alpha: alpha, beta: beta) }
        }
    }

    /// Sets `mask[offset + i] = 1` for the k entries of `values[offset ..< offset + count]` with the
    /// largest magnitudes (ties: lower index first). Does not clear the mask first.
    public static func topK(_ values: [Float], offset: Int, count: Int, k: Int, into mask: inout [UInt8]) {
        guard count > 0, k > 0 else { return }
        var scratch = [Float](repeating: 0, count: count)
        values.withUnsafeBufferPointer { v in
            mask.withUnsafeMutableBufferPointer { m in
                scratch.withUnsafeMutableBufferPointer { s in
                    Selection.markTopK(UnsafeBufferPointer(rebasing: v[offset ..< offset + count]), k: k,
                                       into: UnsafeMutableBufferPointer(rebasing: m[offset ..< offset + count]), scratch: s)
                }
            }
        }
    }

    /// Power iteration on a symmetric positive semi-definite n × n matrix.
    static func largestEigenvalue(_ g: [Float], n: Int) -> Float {
        var v = [Float](repeating: 1 / Float(n).squareRoot(), count: n)
        var value: Float = 0
        for _ in 0 ..< 100 {
            var w = [Float](repeating: 0, count: n)
            for r in 0 ..< n { var s: Float = 0; for c in 0 ..< n { s += g[r * n + c] * v[c] }; w[r] = s }
            let norm = w.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm > 0 else { return 0 }
            if abs(norm - value) <= 1e-6 * norm { value = norm; break }
            value = norm
            v = w.map { $0 / norm }
        }
        return value
    }
}
