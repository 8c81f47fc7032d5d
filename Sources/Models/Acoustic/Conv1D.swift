import Tensors

/// A 1-D convolution over time followed by ReLU: kernel k, stride s, zero padding p.
/// Weight (Cout, Cin, k) and bias (Cout), as PyTorch's `Conv1d`.
///
/// Forward is im2col and one matrix product for the whole batch:
///   cols (T'·B, Cin·k), cols[(t', b), ci·k + j] = x[t'·s + j − p, b, ci]
///   y (T'·B, Cout) = relu(cols · Wᵀ + bias)
/// Output lengths are ⌊(T + 2p − k) / s⌋ + 1; outputs past a sequence's length are zero.
public struct Conv1D: Sendable {
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Int
    public let stride: Int
    public let padding: Int
    public let weight: TensorSpec
    public let bias: TensorSpec

    public init(inChannels: Int, outChannels: Int, kernel: Int = 3, stride: Int = 2, padding: Int = 1,
                name: String, layout: inout ParameterLayout) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        weight = layout.append("\(name).weight", shape: [outChannels, inChannels, kernel], prunable: true)
        bias = layout.append("\(name).bias", shape: [outChannels], prunable: false)
    }

    public func outputLength(_ t: Int) -> Int { t == 0 ? 0 : max(0, (t + 2 * padding - kernel) / stride + 1) }

    public struct Cache: Sendable {
        let cols: [Float]          // (T'·B, Cin·k)
        let output: SequenceBatch  // post-ReLU
    }

    public func forward(_ x: SequenceBatch, parameters p: UnsafeBufferPointer<Float>) -> Cache {
        precondition(x.channels == inChannels)
        let outSteps = outputLength(x.steps), B = x.batch, width = inChannels * kernel
        var cols = [Float](repeating: 0, count: outSteps * B * width)
        let outLengths = x.lengths.map(outputLength)
        for t in 0 ..< outSteps {
            for b in 0 ..< B where t < outLengths[b] {
                let row = (t * B + b) * width
                for j in 0 ..< kernel {
                    let source = t * stride + j - padding
                    guard source >= 0, source < x.lengths[b] else { continue }
                    let src = x.offset(source, b)
                    for ci in 0 ..< inChannels { cols[row + ci * kernel + j] = x.values[src + ci] }
                }
            }
        }
        var y = SequenceBatch(zeros: outSteps, batch: B, channels: outChannels, lengths: outLengths)
        if outSteps > 0 {
            cols.withUnsafeBufferPointer { c in
                y.values.withUnsafeMutableBufferPointer { out in
                    VectorMath.gemm(transposeB: true, m: outSteps * B, n: outChannels, k: width,
                                    c.baseAddress!, p.baseAddress! + weight.offset, out.baseAddress!)
                }
            }
        }
        for t in 0 ..< outSteps {
            for b in 0 ..< B {
                let o = y.offset(t, b)
                if t < outLengths[b] {
                    for c in 0 ..< outChannels { y.values[o + c] = max(0, y.values[o + c] + p[bias.offset + c]) }
                } else {
                    for c in 0 ..< outChannels { y.values[o + c] = 0 }
                }
            }
        }
        return Cache(cols: cols, output: y)
    }

    /// Accumulates dW and db into `g`; returns dx (T, B, Cin). `dy` is the gradient of the output.
    public func backward(_ dy: [Float], cache: Cache, input x: SequenceBatch,
                         parameters p: UnsafeBufferPointer<Float>, gradient g: UnsafeMutableBufferPointer<Float>) -> [Float] {
        let y = cache.output, B = x.batch, width = inChannels * kernel
        // Through the ReLU (and the padding mask, where the output is 0 too).
        var dz = dy
        for i in 0 ..< dz.count where y.values[i] <= 0 { dz[i] = 0 }
        let rows = y.steps * B
        var dx = [Float](repeating: 0, count: x.values.count)
        guard rows > 0 else { return dx }
        for r in 0 ..< rows { for c in 0 ..< outChannels { g[bias.offset + c] += dz[r * outChannels + c] } }
        var dcols = [Float](repeating: 0, count: rows * width)
        dz.withUnsafeBufferPointer { d in
            cache.cols.withUnsafeBufferPointer { c in
                // dW (Cout, Cin·k) += dzᵀ · cols
                VectorMath.gemm(transposeA: true, m: outChannels, n: width, k: rows, d.baseAddress!, c.baseAddress!,
                                beta: 1, g.baseAddress! + weight.offset)
            }
            dcols.withUnsafeMutableBufferPointer { dc in
                // dcols (T'·B, Cin·k) = dz · W
                VectorMath.gemm(m: rows, n: width, k: outChannels, d.baseAddress!, p.baseAddress! + weight.offset, dc.baseAddress!)
            }
        }
        // col2im: scatter-add back to the input positions.
        for t in 0 ..< y.steps {
            for b in 0 ..< B where t < y.lengths[b] {
                let row = (t * B + b) * width
                for j in 0 ..< kernel {
                    let source = t * stride + j - padding
                    guard source >= 0, source < x.lengths[b] else { continue }
                    let dst = x.offset(source, b)
                    for ci in 0 ..< inChannels { dx[dst + ci] += dcols[row + ci * kernel + j] }
                }
            }
        }
        return dx
    }
}
