import CKernels
import Tensors

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
        let cellTanh: [Float]      // (T, B, H) tanh(c_t)
        let states: [Float]        // (T, B, H) h_t (carried likewise)
    }

    /// Returns the output (T, B, H), in the input's time order, and what backward needs.
    public func forward(_ x: SequenceBatch, parameters p: UnsafeBufferPointer<Float>) -> (SequenceBatch, Cache) {
        precondition(x.channels == inputSize)
        let input = reverse ? x.reversedInLength() : x
        let T = x.steps, B = x.batch, H = hidden, G = 4 * hidden
        var gates = [Float](repeating: 0, count: T * B * G)
        var cells = [Float](repeating: 0, count: T * B * H)
        var cellTanh = [Float](repeating: 0, count: T * B * H)
        var states = [Float](repeating: 0, count: T * B * H)
        var weightT = [Float](repeating: 0, count: H * G)     // (H, 4H) W_hhᵀ, packed once for all steps
        weightT.withUnsafeMutableBufferPointer { csp_transpose(p.baseAddress! + weightHH.offset, G, H, $0.baseAddress!) }
        var bias = [Float](repeating: 0, count: G)            // b_ih + b_hh
        for j in 0 ..< G { bias[j] = p[biasIH.offset + j] + p[biasHH.offset + j] }
        gates.withUnsafeMutableBufferPointer { a in
            guard T * B > 0 else { return }
            // Input projections for all steps at once: (T·B, I) · W_ihᵀ.
            input.values.withUnsafeBufferPointer { xv in
                VectorMath.gemm(transposeB: true, m: T * B, n: G, k: inputSize, xv.baseAddress!, p.baseAddress! + weightIH.offset, a.baseAddress!)
            }
            states.withUnsafeMutableBufferPointer { h in
                cells.withUnsafeMutableBufferPointer { c in
                    cellTanh.withUnsafeMutableBufferPointer { tc in
                        bias.withUnsafeBufferPointer { bias in
                            for t in 0 ..< T {
                                let at = a.baseAddress! + t * B * G
                                if t > 0 {
                                    // a_t += h_{t−1} · W_hhᵀ  (B, H)·(H, 4H): few rows against a weight
                                    // that stays put, which a general sgemm would pack again at every step.
                                    weightT.withUnsafeBufferPointer { w in
                                        csp_rows_times_matrix(h.baseAddress! + (t - 1) * B * H, B, H, w.baseAddress!, G, at)
                                    }
                                }
                                let row = t * B * H
                                let previous = t > 0 ? c.baseAddress! + row - B * H : nil
                                // Every row steps (a finished row's values are replaced below): one call per step.
                                csp_lstm_cell_forward(at, bias.baseAddress!, previous, c.baseAddress! + row,
                                                      tc.baseAddress! + row, h.baseAddress! + row, B, H)
                                for b in 0 ..< B where t >= x.lengths[b] {
                                    // Past its end a sequence's state stops changing and its gates are zero.
                                    let hrow = row + b * H
                                    for j in 0 ..< H {
                                        h[hrow + j] = t > 0 ? h[hrow - B * H + j] : 0
                                        c[hrow + j] = t > 0 ? c[hrow - B * H + j] : 0
                                        tc[hrow + j] = t > 0 ? tc[hrow - B * H + j] : 0
                                    }
                                    for j in 0 ..< G { at[b * G + j] = 0 }
                                }
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
        return (output, Cache(input: input, gates: gates, cells: cells, cellTanh: cellTanh, states: states))
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
        var dhRow = [Float](repeating: 0, count: H)            // (H) one row's dL/dh_t
        da.withUnsafeMutableBufferPointer { daAll in dhRow.withUnsafeMutableBufferPointer { dhBuffer in
            let dh = dhBuffer.baseAddress!
            for t in stride(from: T - 1, through: 0, by: -1) {
                let dat = daAll.baseAddress! + t * B * G
                for b in 0 ..< B where t < x.lengths[b] {
                    let src = (reverse ? x.lengths[b] - 1 - t : t) * B + b
                    let hrow = (t * B + b) * H, grow = (t * B + b) * G
                    for j in 0 ..< H { dh[j] = dy[src * H + j] + dhNext[b * H + j] }
                    cache.gates.withUnsafeBufferPointer { gates in
                        cache.cellTanh.withUnsafeBufferPointer { tc in
                            cache.cells.withUnsafeBufferPointer { cells in
                                dcNext.withUnsafeMutableBufferPointer { dc in
                                    csp_lstm_cell_backward(gates.baseAddress! + grow, tc.baseAddress! + hrow,
                                                           t > 0 ? cells.baseAddress! + hrow - B * H : nil,
                                                           dh, dc.baseAddress! + b * H, dat + b * G, H)
                                }
                            }
                        }
                    }
                }
                guard t > 0 else { break }
                // dh_{t−1} = da_t · W_hh  (B, 4H)·(4H, H), straight from the parameters.
                dhPrev.withUnsafeMutableBufferPointer { d in
                    d.update(repeating: 0)
                    csp_rows_times_matrix(dat, B, G, p.baseAddress! + weightHH.offset, H, d.baseAddress!)
                }
                // Rows past their end have da = 0 and no state to pass back; active rows take dh_{t−1}.
                for b in 0 ..< B where t < x.lengths[b] {
                    for j in 0 ..< H { dhNext[b * H + j] = dhPrev[b * H + j] }
                }
            }
        } }
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
