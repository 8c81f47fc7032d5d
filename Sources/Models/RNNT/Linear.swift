import Tensors

/// A fully connected layer over rows, as PyTorch's `Linear`: weight (out, in), bias (out),
/// y = x · Wᵀ + b. The weight is prunable (unless told otherwise), the bias is not.
public struct Linear: Sendable {
    public let inputs: Int
    public let outputs: Int
    public let weight: TensorSpec   // (out, in)
    public let bias: TensorSpec     // (out)

    /// `prunable: false` for a training-only head that inference never reads.
    public init(inputs: Int, outputs: Int, name: String, prunable: Bool = true, layout: inout ParameterLayout) {
        self.inputs = inputs
        self.outputs = outputs
        weight = layout.append("\(name).weight", shape: [outputs, inputs], prunable: prunable)
        bias = layout.append("\(name).bias", shape: [outputs], prunable: false)
    }

    /// y (rows, out) from x (rows, in).
    public func forward(_ x: [Float], rows: Int, parameters p: UnsafeBufferPointer<Float>) -> [Float] {
        precondition(x.count == rows * inputs)
        var y = [Float](repeating: 0, count: rows * outputs)
        guard rows > 0 else { return y }
        x.withUnsafeBufferPointer { xv in
            y.withUnsafeMutableBufferPointer { yv in
                VectorMath.gemm(transposeB: true, m: rows, n: outputs, k: inputs, xv.baseAddress!, p.baseAddress! + weight.offset, yv.baseAddress!)
                for r in 0 ..< rows { for j in 0 ..< outputs { yv[r * outputs + j] += p[bias.offset + j] } }
            }
        }
        return y
    }

    /// Accumulates dW (out, in) += dyᵀ · x and db += Σ_rows dy into `g`; returns dx (rows, in) = dy · W.
    public func backward(_ dy: [Float], input x: [Float], rows: Int, parameters p: UnsafeBufferPointer<Float>,
                         gradient g: UnsafeMutableBufferPointer<Float>) -> [Float] {
        precondition(dy.count == rows * outputs && x.count == rows * inputs)
        var dx = [Float](repeating: 0, count: rows * inputs)
        guard rows > 0 else { return dx }
        for r in 0 ..< rows { for j in 0 ..< outputs { g[bias.offset + j] += dy[r * outputs + j] } }
        dy.withUnsafeBufferPointer { d in
            x.withUnsafeBufferPointer { xv in
                VectorMath.gemm(transposeA: true, m: outputs, n: inputs, k: rows, d.baseAddress!, xv.baseAddress!,
                                beta: 1, g.baseAddress! + weight.offset)
            }
            dx.withUnsafeMutableBufferPointer { dxv in
                VectorMath.gemm(m: rows, n: inputs, k: outputs, d.baseAddress!, p.baseAddress! + weight.offset, dxv.baseAddress!)
            }
        }
        return dx
    }
}
