import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// A two-layer perceptron with tanh hidden units and a softmax cross-entropy loss.
///
/// Parameters (one flat buffer): w1 (H, D), b1 (H), w2 (C, H), b2 (C).
public struct MLPClassifier: TrainableModel {
    public let task: SyntheticClassification
    public let hiddenDim: Int
    public let layout: ParameterLayout

    public init(task: SyntheticClassification, hiddenDim: Int) {
        self.task = task
        self.hiddenDim = hiddenDim
        layout = ParameterLayout([
            ("w1", [hiddenDim, task.inputDim], true),
            ("b1", [hiddenDim], false),
            ("w2", [task.classes, hiddenDim], true),
            ("b2", [task.classes], false),
        ])
    }

    public var trainingExamples: Int { task.examples }

    /// Weights ~ N(0, 1/fan_in) (LeCun), biases zero.
    public func initialParameters(seed: UInt64) -> [Float] {
        var p = [Float](repeating: 0, count: layout.totalCount)
        for spec in layout.tensors where spec.shape.count == 2 {
            var rng = SeededRandom(seed, 0x1417, UInt64(spec.offset))
            let std = 1 / Float(spec.shape[1]).squareRoot()
            for i in spec.range { p[i] = std * rng.nextGaussian() }
        }
        return p
    }

    /// The inputs of w1 (the features) and of w2 (the hidden activations).
    public var statisticSites: [StatisticSite] {
        [StatisticSite(name: "w1.input", dimension: task.inputDim, tensors: ["w1"]),
         StatisticSite(name: "w2.input", dimension: hiddenDim, tensors: ["w2"])]
    }

    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>) throws -> Double {
        var none = InputMomentRecorder(sites: [])
        return try lossAndGradient(parameters: parameters, examples: examples, epoch: epoch, gradient: gradient, moments: &none)
    }

    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder) throws -> Double {
        precondition(parameters.count == layout.totalCount && gradient.count == layout.totalCount)
        let B = examples.count, D = task.inputDim, H = hiddenDim, C = task.classes
        guard B > 0 else { throw ModelError.emptyBatch }
        let o = layout.tensors.map(\.offset)  // w1, b1, w2, b2
        let p = parameters.baseAddress!, g = gradient.baseAddress!

        var x = [Float](repeating: 0, count: B * D)      // (B, D)
        var labels = [Int](repeating: 0, count: B)
        x.withUnsafeMutableBufferPointer { xb in
            for (row, example) in examples.enumerated() {
                guard example >= 0 && example < task.examples else { continue }
                task.features(of: example, into: UnsafeMutableBufferPointer(rebasing: xb[row * D ..< (row + 1) * D]))
                labels[row] = task.label(of: example)
            }
        }
        if let bad = examples.first(where: { $0 < 0 || $0 >= task.examples }) {
            throw ModelError.exampleOutOfRange(bad, task.examples)
        }

        var a1 = [Float](repeating: 0, count: B * H)     // (B, H) hidden activations
        var z2 = [Float](repeating: 0, count: B * C)     // (B, C) logits
        // Forward: a1 = tanh(x · w1ᵀ + b1); z2 = a1 · w2ᵀ + b2.
        VectorMath.gemm(transposeB: true, m: B, n: H, k: D, x, p + o[0], a1.withUnsafeMutableBufferPointer { $0.baseAddress! })
        for r in 0 ..< B { for h in 0 ..< H { a1[r * H + h] = tanhf(a1[r * H + h] + p[o[1] + h]) } }
        x.withUnsafeBufferPointer { moments.record("w1.input", rows: $0, count: B, frames: B) }
        a1.withUnsafeBufferPointer { moments.record("w2.input", rows: $0, count: B, frames: B) }
        a1.withUnsafeBufferPointer { a in
            z2.withUnsafeMutableBufferPointer { z in
                VectorMath.gemm(transposeB: true, m: B, n: C, k: H, a.baseAddress!, p + o[2], z.baseAddress!)
            }
        }
        // Loss and dz2 = (softmax − onehot) / B, in place in z2.
        var lossSum = 0.0
        for r in 0 ..< B {
            var maxLogit = -Float.infinity
            for c in 0 ..< C { z2[r * C + c] += p[o[3] + c]; maxLogit = max(maxLogit, z2[r * C + c]) }
            var sum: Float = 0
            for c in 0 ..< C { z2[r * C + c] = expf(z2[r * C + c] - maxLogit); sum += z2[r * C + c] }
            for c in 0 ..< C { z2[r * C + c] /= sum }
            lossSum -= Double(logf(max(z2[r * C + labels[r]], .leastNormalMagnitude)))
            z2[r * C + labels[r]] -= 1
            for c in 0 ..< C { z2[r * C + c] /= Float(B) }
        }
        // Backward.
        var da1 = [Float](repeating: 0, count: B * H)    // (B, H)
        z2.withUnsafeBufferPointer { dz2 in
            a1.withUnsafeBufferPointer { a in
                // dw2 (C, H) = dz2ᵀ · a1
                VectorMath.gemm(transposeA: true, m: C, n: H, k: B, dz2.baseAddress!, a.baseAddress!, g + o[2])
            }
            // da1 (B, H) = dz2 · w2
            da1.withUnsafeMutableBufferPointer { d in
                VectorMath.gemm(m: B, n: H, k: C, dz2.baseAddress!, p + o[2], d.baseAddress!)
            }
            for c in 0 ..< C { g[o[3] + c] = 0 }
            for r in 0 ..< B { for c in 0 ..< C { g[o[3] + c] += dz2[r * C + c] } }
        }
        // dz1 = da1 ⊙ (1 − a1²), in place in da1.
        for i in 0 ..< B * H { da1[i] *= 1 - a1[i] * a1[i] }
        for h in 0 ..< H { g[o[1] + h] = 0 }
        for r in 0 ..< B { for h in 0 ..< H { g[o[1] + h] += da1[r * H + h] } }
        da1.withUnsafeBufferPointer { dz1 in
            x.withUnsafeBufferPointer { xb in
                // dw1 (H, D) = dz1ᵀ · x
                VectorMath.gemm(transposeA: true, m: H, n: D, k: B, dz1.baseAddress!, xb.baseAddress!, g + o[0])
            }
        }
        return lossSum
    }
}

public enum ModelError: Error, CustomStringConvertible {
    case emptyBatch
    case exampleOutOfRange(Int, Int)
    case noEvaluation(String)
    case noStatistics([String])

    public var description: String {
        switch self {
        case .emptyBatch: "a micro-batch with no examples"
        case let .exampleOutOfRange(i, n): "example index \(i) is outside the data set (0..<\(n))"
        case let .noEvaluation(set): "this model has no validation set '\(set)'"
        case let .noStatistics(sites): "this model cannot measure the inputs of \(sites.joined(separator: ", ")) (pruning.operator activations, wanda and reconstruction need a model that can)"
        }
    }
}
