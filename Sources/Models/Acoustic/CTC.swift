#if canImport(Glibc)
import Glibc
#endif

/// Connectionist temporal classification (Graves et al., 2006): the negative log-probability of
/// a label sequence summed over all its alignments, and its gradient with respect to the
/// unnormalised logits. Computed in log space in double precision. Label 0 is the blank.
public enum CTC {
    public struct Result: Sendable {
        /// −log p(labels | logits); +∞ when no alignment fits in the frames.
        public let loss: Double
        /// ∂loss/∂logits, (T, V) row-major (zero when the loss is infinite).
        public let gradient: [Float]
    }

    /// `logits` is (T, V) row-major; `labels` hold values in 1..<V.
    public static func loss(logits: UnsafeBufferPointer<Float>, frames T: Int, classes V: Int, labels: [Int]) -> Result {
        precondition(logits.count >= T * V)
        let S = 2 * labels.count + 1
        // Extended labels: blank, l1, blank, l2, ..., blank.
        let ext = (0 ..< S).map { $0 % 2 == 0 ? 0 : labels[$0 / 2] }
        // Log-softmax per frame.
        var logProb = [Double](repeating: 0, count: T * V)
        for t in 0 ..< T {
            var m = -Double.infinity
            for k in 0 ..< V { m = max(m, Double(logits[t * V + k])) }
            var sum = 0.0
            for k in 0 ..< V { sum += exp(Double(logits[t * V + k]) - m) }
            let lse = m + log(sum)
            for k in 0 ..< V { logProb[t * V + k] = Double(logits[t * V + k]) - lse }
        }
        guard T > 0 else {
            return Result(loss: labels.isEmpty ? 0 : .infinity, gradient: [])
        }
        // α_t(s): log-probability of the prefixes ending in ext[s] at frame t (emission included).
        var alpha = [Double](repeating: -.infinity, count: T * S)
        alpha[0] = logProb[ext[0]]
        if S > 1 { alpha[1] = logProb[ext[1]] }
        for t in 1 ..< max(1, T) {
            for s in 0 ..< S {
                var a = alpha[(t - 1) * S + s]
                if s >= 1 { a = logAdd(a, alpha[(t - 1) * S + s - 1]) }
                if s >= 2, ext[s] != 0, ext[s] != ext[s - 2] { a = logAdd(a, alpha[(t - 1) * S + s - 2]) }
                alpha[t * S + s] = a + logProb[t * V + ext[s]]
            }
        }
        // β_t(s): log-probability of the suffixes from frame t+1 on, given ext[s] at frame t.
        var beta = [Double](repeating: -.infinity, count: T * S)
        beta[(T - 1) * S + S - 1] = 0
        if S > 1 { beta[(T - 1) * S + S - 2] = 0 }
        for t in stride(from: T - 2, through: 0, by: -1) {
            for s in 0 ..< S {
                var b = beta[(t + 1) * S + s] + logProb[(t + 1) * V + ext[s]]
                if s + 1 < S { b = logAdd(b, beta[(t + 1) * S + s + 1] + logProb[(t + 1) * V + ext[s + 1]]) }
                if s + 2 < S, ext[s + 2] != 0, ext[s + 2] != ext[s] {
                    b = logAdd(b, beta[(t + 1) * S + s + 2] + logProb[(t + 1) * V + ext[s + 2]])
                }
                beta[t * S + s] = b
            }
        }
        var logLikelihood = alpha[(T - 1) * S + S - 1]
        if S > 1 { logLikelihood = logAdd(logLikelihood, alpha[(T - 1) * S + S - 2]) }
        if logLikelihood.isNaN {
            // Non-finite logits (diverged weights, corrupt input): report it, do not hide it as
            // an alignment problem.
            return Result(loss: .nan, gradient: [Float](repeating: 0, count: T * V))
        }
        guard logLikelihood > -.infinity else {
            return Result(loss: .infinity, gradient: [Float](repeating: 0, count: T * V))
        }
        // ∂loss/∂u_{t,k} = y_{t,k} − Σ_{s: ext[s]=k} exp(α_t(s) + β_t(s) − log p)
        var gradient = [Float](repeating: 0, count: T * V)
        var occupancy = [Double](repeating: -.infinity, count: V)
        for t in 0 ..< T {
            for k in 0 ..< V { occupancy[k] = -.infinity }
            for s in 0 ..< S { occupancy[ext[s]] = logAdd(occupancy[ext[s]], alpha[t * S + s] + beta[t * S + s]) }
            for k in 0 ..< V {
                gradient[t * V + k] = Float(exp(logProb[t * V + k]) - exp(occupancy[k] - logLikelihood))
            }
        }
        return Result(loss: -logLikelihood, gradient: gradient)
    }

    @inline(__always)
    static func logAdd(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        return max(a, b) + log1p(exp(-abs(a - b)))
    }
}
