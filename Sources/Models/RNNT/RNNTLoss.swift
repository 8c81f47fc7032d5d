#if canImport(Glibc)
import Glibc
#endif

/// The RNN transducer loss (Graves 2012, "Sequence Transduction with Recurrent Neural Networks"):
/// −log p(labels | joint logits) summed over every alignment on the T × (U + 1) lattice, with its
/// gradient with respect to the joint network's unnormalised logits (the log-softmax fused in).
/// Computed in log space in double precision. Label 0 is the blank. Conventions as torchaudio's
/// `rnnt_loss(..., blank=0, reduction="sum", fused_log_softmax=True)`.
///
/// Node (t, u) means "u labels emitted, at frame t". From it a blank moves to (t + 1, u) and
/// label y_{u+1} to (t, u + 1); the last step is a blank out of (T − 1, U). With
/// ŷ(t, u, k) = log softmax_k z(t, u, ·):
///
///     α(0, 0) = 0
///     α(t, u) = logaddexp(α(t−1, u) + ŷ(t−1, u, ∅), α(t, u−1) + ŷ(t, u−1, y_u))
///     β(T−1, U) = ŷ(T−1, U, ∅)
///     β(t, u) = logaddexp(β(t+1, u) + ŷ(t, u, ∅), β(t, u+1) + ŷ(t, u, y_{u+1}))
///     log p = α(T−1, U) + ŷ(T−1, U, ∅) = β(0, 0)
///
/// and, with o(t, u) = exp(α(t, u) + β(t, u) − log p) the probability that an alignment passes
/// through (t, u) and e(t, u, k) that it leaves (t, u) by k,
///
///     ∂loss/∂z(t, u, k) = softmax_k z(t, u, ·) · o(t, u) − e(t, u, k).
public enum RNNTLoss {
    public struct Result: Sendable {
        /// −log p(labels | logits); NaN when the logits are not finite.
        public let loss: Double
        /// ∂loss/∂logits, (T, U + 1, V) row-major (zero when the loss is NaN).
        public let gradient: [Float]
    }

    /// `logits` is (T, U + 1, V) row-major with U = labels.count; labels hold values in 1..<V.
    /// Every label sequence fits any T ≥ 1 (a transducer emits several labels per frame).
    public static func loss(logits: UnsafeBufferPointer<Float>, frames T: Int, classes V: Int, labels: [Int]) -> Result {
        let U = labels.count, N = U + 1
        precondition(T >= 1 && V >= 2 && logits.count >= T * N * V)
        precondition(labels.allSatisfy { $0 > 0 && $0 < V }, "RNN-T labels must be in 1..<\(V) (0 is the blank)")
        // ŷ (T, U+1, V): log-softmax over the classes at each node.
        var logProb = [Double](repeating: 0, count: T * N * V)
        for node in 0 ..< T * N {
            let row = node * V
            var m = -Double.infinity
            for k in 0 ..< V { m = max(m, Double(logits[row + k])) }
            var sum = 0.0
            for k in 0 ..< V { sum += exp(Double(logits[row + k]) - m) }
            let lse = m + log(sum)
            for k in 0 ..< V { logProb[row + k] = Double(logits[row + k]) - lse }
        }
        @inline(__always) func blank(_ t: Int, _ u: Int) -> Double { logProb[(t * N + u) * V] }
        @inline(__always) func emit(_ t: Int, _ u: Int) -> Double { logProb[(t * N + u) * V + labels[u]] }

        var alpha = [Double](repeating: -.infinity, count: T * N)   // (T, U+1)
        alpha[0] = 0
        for t in 0 ..< T {
            for u in 0 ..< N where t > 0 || u > 0 {
                var a = -Double.infinity
                if t > 0 { a = alpha[(t - 1) * N + u] + blank(t - 1, u) }
                if u > 0 { a = logAdd(a, alpha[t * N + u - 1] + emit(t, u - 1)) }
                alpha[t * N + u] = a
            }
        }
        var beta = [Double](repeating: -.infinity, count: T * N)    // (T, U+1)
        for t in stride(from: T - 1, through: 0, by: -1) {
            for u in stride(from: U, through: 0, by: -1) {
                var b = t == T - 1 ? (u == U ? blank(t, u) : -.infinity) : beta[(t + 1) * N + u] + blank(t, u)
                if u < U { b = logAdd(b, beta[t * N + u + 1] + emit(t, u)) }
                beta[t * N + u] = b
            }
        }
        let logLikelihood = alpha[(T - 1) * N + U] + blank(T - 1, U)
        guard logLikelihood.isFinite else {
            // Every label fits, so only non-finite logits (diverged weights, corrupt input) get here.
            return Result(loss: .nan, gradient: [Float](repeating: 0, count: T * N * V))
        }
        var gradient = [Float](repeating: 0, count: T * N * V)
        for t in 0 ..< T {
            for u in 0 ..< N {
                let node = t * N + u, row = node * V, a = alpha[node]
                let occupancy = exp(a + beta[node] - logLikelihood)
                for k in 0 ..< V { gradient[row + k] = Float(exp(logProb[row + k]) * occupancy) }
                // Leaving by blank: to β(t+1, u), or out of the lattice from (T−1, U).
                let afterBlank = t < T - 1 ? beta[(t + 1) * N + u] : (u == U ? 0 : -.infinity)
                gradient[row] -= Float(exp(a + logProb[row] + afterBlank - logLikelihood))
                if u < U {
                    let k = labels[u]
                    gradient[row + k] -= Float(exp(a + logProb[row + k] + beta[node + 1] - logLikelihood))
                }
            }
        }
        return Result(loss: -logLikelihood, gradient: gradient)
    }

    /// A padded batch as torchaudio takes it: `logits` (B, maxT, maxU + 1, V) row-major,
    /// utterance b using its first `frames[b]` frames and `labels[b].count + 1` label positions.
    /// Returns the summed loss and its gradient in the same layout (zero in the padding).
    public static func batch(logits: UnsafeBufferPointer<Float>, frames: [Int], classes V: Int, labels: [[Int]]) -> Result {
        precondition(frames.count == labels.count)
        let B = frames.count, maxT = frames.max() ?? 0, maxN = (labels.map(\.count).max() ?? 0) + 1
        precondition(logits.count == B * maxT * maxN * V)
        var total = 0.0
        var gradient = [Float](repeating: 0, count: logits.count)
        for b in 0 ..< B {
            let T = frames[b], N = labels[b].count + 1
            var own = [Float](repeating: 0, count: T * N * V)   // (T, U_b+1, V) cut out of the padding
            for t in 0 ..< T {
                for u in 0 ..< N {
                    let src = ((b * maxT + t) * maxN + u) * V
                    for k in 0 ..< V { own[(t * N + u) * V + k] = logits[src + k] }
                }
            }
            let r = own.withUnsafeBufferPointer { loss(logits: $0, frames: T, classes: V, labels: labels[b]) }
            total += r.loss
            for t in 0 ..< T {
                for u in 0 ..< N {
                    let dst = ((b * maxT + t) * maxN + u) * V
                    for k in 0 ..< V { gradient[dst + k] = r.gradient[(t * N + u) * V + k] }
                }
            }
        }
        return Result(loss: total, gradient: gradient)
    }

    @inline(__always)
    static func logAdd(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        return max(a, b) + log1p(exp(-abs(a - b)))
    }
}
