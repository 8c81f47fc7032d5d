import Foundation
import Testing
@testable import Models
@testable import Tensors

/// The MLP's backward pass against central finite differences of its loss, in double-checked
/// float32: every parameter of a small model.
struct MLPGradientTests {
    let task = SyntheticClassification(inputDim: 5, classes: 3, examples: 64, noise: 1, seed: 3)
    var model: MLPClassifier { MLPClassifier(task: task, hiddenDim: 4) }

    func loss(_ p: [Float], _ examples: [Int]) throws -> Double {
        var g = [Float](repeating: 0, count: p.count)
        return try p.withUnsafeBufferPointer { pb in
            try g.withUnsafeMutableBufferPointer { try model.lossAndGradient(parameters: pb, examples: examples, epoch: 0, gradient: $0) }
        } / Double(examples.count)
    }

    @Test func backwardMatchesFiniteDifferences() throws {
        let examples = [0, 5, 9, 17, 33, 40]
        var p = model.initialParameters(seed: 11)
        // Non-zero biases so their gradients are exercised away from the symmetric point.
        for spec in model.layout.tensors where spec.shape.count == 1 { for i in spec.range { p[i] = 0.1 * Float(i % 5) - 0.2 } }
        var g = [Float](repeating: 0, count: p.count)
        _ = try p.withUnsafeBufferPointer { pb in
            try g.withUnsafeMutableBufferPointer { try model.lossAndGradient(parameters: pb, examples: examples, epoch: 0, gradient: $0) }
        }
        let eps: Float = 1e-2
        var worst = 0.0
        for i in 0 ..< p.count {
            var plus = p, minus = p
            plus[i] += eps
            minus[i] -= eps
            let numeric = (try loss(plus, examples) - loss(minus, examples)) / Double(2 * eps)
            let error = abs(numeric - Double(g[i])) / max(1e-3, abs(numeric) + abs(Double(g[i])))
            worst = max(worst, error)
        }
        #expect(worst < 2e-2, "largest relative error \(worst)")
    }

    @Test func initialLossIsNearLogClasses() throws {
        let p = model.initialParameters(seed: 1)
        let l = try loss(p, Array(0 ..< 64))
        #expect(abs(l - log(3.0)) < 0.5)
    }

    @Test func layoutIsFlatAndNamed() {
        let layout = model.layout
        #expect(layout.tensors.map(\.name) == ["w1", "b1", "w2", "b2"])
        #expect(layout.totalCount == 4 * 5 + 4 + 3 * 4 + 3)
        #expect(layout.tensors.filter(\.prunable).map(\.name) == ["w1", "w2"])
    }

    @Test func outOfRangeExampleIsAnError() {
        let p = model.initialParameters(seed: 1)
        var g = [Float](repeating: 0, count: p.count)
        #expect(throws: ModelError.self) {
            try p.withUnsafeBufferPointer { pb in
                try g.withUnsafeMutableBufferPointer { try model.lossAndGradient(parameters: pb, examples: [64], epoch: 0, gradient: $0) }
            }
        }
    }
}
