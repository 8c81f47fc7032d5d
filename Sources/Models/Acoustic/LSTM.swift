import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// One direction of an LSTM layer over a padded batch, with PyTorch's parameters and gate order
/// (i, f, g, o): weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H), bias_hh (4H).
///
///     a_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh          (B, 4H)
///     i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
///     c_t = f ⊙ c_{t−1} + i ⊙ g;         h_t = o ⊙ tanh(c_t)
///
/// A reverse direction runs each sequence backwards within its own length. Outputs past a
/// sequence's length are zero and its state stops changing there.
public struct LSTMDirection: Sendable {
    public let inputSize: Int
    public let hidden: Int
    public let reverse: Bool
    public let weightIH: TensorSpec
    public let weightHH: TensorSpec
    public let biasIH: TensorSpec
    public let biasHH: TensorSpec

    public init(inputSize: Int, hidden: Int, reverse: Bool, name: String, suffix: String, layout: inout ParameterLayout) {
        self.inputSize = inputSize
        self.hidden = hidden
        self.reverse = reverse
        weightIH = layout.append("\(name).weight_ih_\(suffix)", shape: [4 * hidden, inputSize], prunable: true)
        weightHH = layout.append("\(name).weight_hh_\(suffix)", shape: [4 * hidden, hidden], prunable: true)
        biasIH = layout.append("\(name).bias_ih_\(suffix)", shape: [4 * hidden], prunable: false)
        biasHH = layout.append("\(name).bias_hh_\(suffix)", shape: [4 * hidden], prunable: false)
    }

    public struct Cache: Sendable {
        let input: SequenceBatch   // (T, B, I), already reversed for a reverse direction
        let gates: [Float]         // (T, B, 4H) activated i, f, g, o
        let cells: [Float]         // (T, B, H) c_t (carried unchanged past a sequence's end)
        let states: [Float]        // (T, B, H) h_t (carried likewise)
    }

    /// Returns the output (T, B, H), in the input's time order, and what backward needs.
    public func forward(_ x: SequenceBatch, parameters p: UnsafeBufferPointer<Float>) -> (SequenceBatch, Cache) {
        precondition(x.channels == inputSize)
        let input = reverse ? x.reversedInLength() : x
        let T = x.steps, B = x.batch, H = hidden, G = 4 * hidden
        var gates = [Float](repeating: 0, count: T * B * G)
        var cells = [Float](repeating: 0, count: T * B * H)
        var states = [Float](repeating: 0, count: T * B * H)
        var recurrent = [Float](repeating: 0, count: G * B)   // (4H, B) scratch
        gates.withUnsafeMutableBufferPointer { a in
            guard T * B > 0 else { return }
            // Input projections for all steps at once: (T·B, I) · W_ihᵀ.
            input.values.withUnsafeBufferPointer { xv in
                VectorMath.gemm(transposeB: true, m: T * B, n: G, k: inputSize, xv.baseAddress!, p.baseAddress! + weightIH.offset, a.baseAddress!)
            }
            states.withUnsafeMutableBufferPointer { h in
                cells.withUnsafeMutableBufferPointer { c in
                    for t in 0 ..< T {
                        let at = a.baseAddress! + t * B * G
                        if t > 0 {
                            // a_t += h_{t−1} · W_hhᵀ, computed transposed, a_tᵀ (4H, B) = W_hh · h_{t−1}ᵀ:
                            // with few rows, OpenBLAS runs this shape about 1.5× faster (it packs
                            // the small operand instead of the 1 MiB weight at every step).
                            recurrent.withUnsafeMutableBufferPointer { r in
                                VectorMath.gemm(transposeB: true, m: G, n: B, k: H, p.baseAddress! + weightHH.offset,
                                                h.baseAddress! + (t - 1) * B * H, r.baseAddress!)
                                for b in 0 ..< B { for j in 0 ..< G { at[b * G + j] += r[j * B + b] } }
                            }
                        }
                        for b in 0 ..< B {
                            let row = at + b * G, hrow = (t * B + b) * H
                            guard t < x.lengths[b] else {
                                if t > 0 {
                                    for j in 0 ..< H { h[hrow + j] = h[hrow - B * H + j]; c[hrow + j] = c[hrow - B * H + j] }
                                }
                                for j in 0 ..< G { row[j] = 0 }
                                continue
                            }
                            for j in 0 ..< G { row[j] += p[biasIH.offset + j] + p[biasHH.offset + j] }
                            for j in 0 ..< H {
                                let i = sigmoid(row[j]), f = sigmoid(row[H + j]), g = tanhf(row[2 * H + j]), o = sigmoid(row[3 * H + j])
                                row[j] = i; row[H + j] = f; row[2 * H + j] = g; row[3 * H + j] = o
                                let previous = t > 0 ? c[hrow - B * H + j] : 0
                                let cell = f * previous + i * g
                                c[hrow + j] = cell
                                h[hrow + j] = o * tanhf(cell)
                            }
                        }
                    }
                }
            }
        }
        var output = SequenceBatch(zeros: T, batch: B, channels: H, lengths: x.lengths)
        for t in 0 ..< T {
            for b in 0 ..< B where t < x.lengths[b] {
                let src = (t * B + b) * H
                let dst = output.offset(reverse ? x.lengths[b] - 1 - t : t, b)
                for j in 0 ..< H { output.values[dst + j] = states[src + j] }
            }
        }
        return (output, Cache(input: input, gates: gates, cells: cells, states: states))
    }

    /// Back-propagation through time. `dy` (T, B, H) is the gradient of the output, in the
    /// input's time order. Accumulates parameter gradients into `g`; returns dx (T, B, I).
    public func backward(_ dy: [Float], cache: Cache, parameters p: UnsafeBufferPointer<Float>,
                         gradient g: UnsafeMutableBufferPointer<Float>) -> [Float] {
        let x = cache.input, T = x.steps, B = x.batch, H = hidden, G = 4 * hidden
        guard T * B > 0 else { return [] }
        var da = [Float](repeating: 0, count: T * B * G)       // (T, B, 4H) pre-activation gradients
        var dhNext = [Float](repeating: 0, count: B * H)       // (B, H)
        var dcNext = [Float](repeating: 0, count: B * H)
        var dhPrev = [Float](repeating: 0, count: B * H)
        var daT = [Float](repeating: 0, count: G * B)          // (4H, B) scratch
        var dhT = [Float](repeating: 0, count: H * B)          // (H, B) scratch
        da.withUnsafeMutableBufferPointer { daAll in
            for t in stride(from: T - 1, through: 0, by: -1) {
                let dat = daAll.baseAddress! + t * B * G
                for b in 0 ..< B where t < x.lengths[b] {
                    let src = (reverse ? x.lengths[b] - 1 - t : t) * B + b
                    let hrow = (t * B + b) * H, grow = (t * B + b) * G
                    for j in 0 ..< H {
                        let i = cache.gates[grow + j], f = cache.gates[grow + H + j]
                        let gg = cache.gates[grow + 2 * H + j], o = cache.gates[grow + 3 * H + j]
                        let tc = tanhf(cache.cells[hrow + j])
                        let dh = dy[src * H + j] + dhNext[b * H + j]
                        let dc = dcNext[b * H + j] + dh * o * (1 - tc * tc)
                        let previous = t > 0 ? cache.cells[hrow - B * H + j] : 0
                        dat[b * G + j] = dc * gg * i * (1 - i)
                        dat[b * G + H + j] = dc * previous * f * (1 - f)
                        dat[b * G + 2 * H + j] = dc * i * (1 - gg * gg)
                        dat[b * G + 3 * H + j] = dh * tc * o * (1 - o)
                        dcNext[b * H + j] = dc * f
                    }
                }
                guard t > 0 else { break }
                // dh_{t−1} = da_t · W_hh  (B, 4H)·(4H, H), computed transposed like the forward
                // step: dh_{t−1}ᵀ (H, B) = W_hhᵀ · da_tᵀ.
                for b in 0 ..< B { for j in 0 ..< G { daT[j * B + b] = dat[b * G + j] } }
                daT.withUnsafeBufferPointer { dT in
                    dhT.withUnsafeMutableBufferPointer { d in
                        VectorMath.gemm(transposeA: true, m: H, n: B, k: G, p.baseAddress! + weightHH.offset, dT.baseAddress!, d.baseAddress!)
                    }
                }
                for b in 0 ..< B { for j in 0 ..< H { dhPrev[b * H + j] = dhT[j * B + b] } }
                // Rows past their end have da = 0 and no state to pass back; active rows take dh_{t−1}.
                for b in 0 ..< B where t < x.lengths[b] {
                    for j in 0 ..< H { dhNext[b * H + j] = dhPrev[b * H + j] }
                }
            }
        }
        if T > 1 {
            da.withUnsafeBufferPointer { d in
                cache.states.withUnsafeBufferPointer { h in
                    // dW_hh += Σ_t da_tᵀ · h_{t−1}: one product over all steps t ≥ 1,
                    // (4H, (T−1)·B)·((T−1)·B, H), instead of one small update per step.
                    VectorMath.gemm(transposeA: true, m: G, n: H, k: (T - 1) * B, d.baseAddress! + B * G, h.baseAddress!,
                                    beta: 1, g.baseAddress! + weightHH.offset)
                }
            }
        }
        var dxr = [Float](repeating: 0, count: T * B * inputSize)
        var dbias = [Float](repeating: 0, count: G)
        da.withUnsafeBufferPointer { d in
            for r in 0 ..< T * B {
                for j in 0 ..< G { dbias[j] += d[r * G + j] }
            }
            x.values.withUnsafeBufferPointer { xv in
                // dW_ih += daᵀ · x    (4H, T·B)·(T·B, I)
                VectorMath.gemm(transposeA: true, m: G, n: inputSize, k: T * B, d.baseAddress!, xv.baseAddress!,
                                beta: 1, g.baseAddress! + weightIH.offset)
            }
            dxr.withUnsafeMutableBufferPointer { dx in
                // dx = da · W_ih    (T·B, 4H)·(4H, I)
                VectorMath.gemm(m: T * B, n: inputSize, k: G, d.baseAddress!, p.baseAddress! + weightIH.offset, dx.baseAddress!)
            }
        }
        // Both biases enter a_t the same way, so they share the gradient.
        for j in 0 ..< G {
            g[biasIH.offset + j] += dbias[j]
            g[biasHH.offset + j] += dbias[j]
        }
        guard reverse else { return dxr }
        // Back to the input's time order.
        var dx = [Float](repeating: 0, count: dxr.count)
        for b in 0 ..< B {
            for t in 0 ..< x.lengths[b] {
                let src = (t * B + b) * inputSize, dst = ((x.lengths[b] - 1 - t) * B + b) * inputSize
                for c in 0 ..< inputSize { dx[dst + c] = dxr[src + c] }
            }
        }
        return dx
    }
}

@inline(__always) func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }
