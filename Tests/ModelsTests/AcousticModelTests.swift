import Foundation
import Testing
import CKernels
@testable import Models
@testable import Tensors

struct CTCTests {
    /// T = 2 frames, classes {blank, a}, label "a". Frame 0: y = (0.5, 0.5); frame 1: y = (0.25, 0.75).
    /// Alignments: (a,a) 0.375, (a,–) 0.125, (–,a) 0.375, so p = 0.875 and
    /// ∂L/∂u_{t,k} = y_{t,k} − (1/p)·P(alignments with k at t).
    @Test func handComputedCase() {
        let logits: [Float] = [0, 0, 0, log(3)]
        let r = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: 2, classes: 2, labels: [1]) }
        #expect(abs(r.loss - (-log(0.875))) < 1e-6)
        let expected: [Double] = [0.5 - 0.375 / 0.875, 0.5 - 0.5 / 0.875, 0.25 - 0.125 / 0.875, 0.75 - 0.75 / 0.875]
        for (g, e) in zip(r.gradient, expected) { #expect(abs(Double(g) - e) < 1e-6) }
    }

    @Test func repeatedLabelsNeedABlankBetween() {
        let logits = [Float](repeating: 0, count: 3 * 2)
        let tooShort = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: 2, classes: 2, labels: [1, 1]) }
        #expect(tooShort.loss == .infinity)
        #expect(tooShort.gradient.allSatisfy { $0 == 0 })
        // With 3 uniform frames the only alignment is (a, –, a): p = 1/8.
        let fits = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: 3, classes: 2, labels: [1, 1]) }
        #expect(abs(fits.loss - log(8)) < 1e-9)
    }

    @Test func nonFiniteLogitsAreReportedNotMistakenForShortInput() {
        let logits: [Float] = [.nan, 0, 0, 0]
        let r = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: 2, classes: 2, labels: [1]) }
        #expect(r.loss.isNaN)
        #expect(r.gradient.allSatisfy { $0 == 0 })
    }

    @Test func gradientMatchesFiniteDifferences() {
        var rng = SeededRandom(5)
        let T = 7, V = 4, labels = [1, 2, 2]
        let logits = (0 ..< T * V).map { _ in rng.nextGaussian() }
        let r = logits.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: T, classes: V, labels: labels) }
        for i in 0 ..< T * V {
            var plus = logits, minus = logits
            plus[i] += 1e-2
            minus[i] -= 1e-2
            let lp = plus.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: T, classes: V, labels: labels).loss }
            let lm = minus.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: T, classes: V, labels: labels).loss }
            #expect(abs((lp - lm) / 2e-2 - Double(r.gradient[i])) < 1e-3)
        }
    }
}

/// Checks a layer's backward pass against central differences of L = Σ r ⊙ y.
func checkGradients(parameters: [Float], input: [Float], weights r: [Float],
                    forward: ([Float], [Float]) -> [Float],
                    backward: ([Float], [Float]) -> (dParameters: [Float], dInput: [Float]),
                    tolerance: Double = 2e-2) -> (worst: Double, checked: Int) {
    func loss(_ p: [Float], _ x: [Float]) -> Double {
        zip(forward(p, x), r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    let (dp, dx) = backward(parameters, input)
    var worst = 0.0
    let eps: Float = 1e-2
    func compare(_ numeric: Double, _ analytic: Float) {
        worst = max(worst, abs(numeric - Double(analytic)) / max(1e-2, abs(numeric) + abs(Double(analytic))))
    }
    for i in parameters.indices {
        var a = parameters, b = parameters
        a[i] += eps
        b[i] -= eps
        compare((loss(a, input) - loss(b, input)) / Double(2 * eps), dp[i])
    }
    for i in input.indices {
        var a = input, b = input
        a[i] += eps
        b[i] -= eps
        compare((loss(parameters, a) - loss(parameters, b)) / Double(2 * eps), dx[i])
    }
    return (worst, parameters.count + input.count)
}

func randomValues(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var rng = SeededRandom(seed)
    return (0 ..< n).map { _ in scale * rng.nextGaussian() }
}

struct LayerGradientTests {
    @Test func conv1DBackwardMatchesFiniteDifferences() {
        var layout = ParameterLayout()
        let conv = Conv1D(inChannels: 3, outChannels: 4, name: "c", layout: &layout)
        let x = SequenceBatch(sequences: [randomValues(5 * 3, seed: 1), randomValues(3 * 3, seed: 2)], channels: 3)
        let p = randomValues(layout.totalCount, seed: 3, scale: 0.5)
        let outCount = conv.outputLength(5) * 2 * 4
        let r = randomValues(outCount, seed: 4)
        func batch(_ v: [Float]) -> SequenceBatch { SequenceBatch(values: v, steps: x.steps, batch: 2, channels: 3, lengths: x.lengths) }
        let (worst, _) = checkGradients(parameters: p, input: x.values, weights: r, forward: { p, v in
            p.withUnsafeBufferPointer { conv.forward(batch(v), parameters: $0).output.values }
        }, backward: { p, v in
            var g = [Float](repeating: 0, count: p.count)
            let dx = p.withUnsafeBufferPointer { pb in
                g.withUnsafeMutableBufferPointer { gb in
                    conv.backward(r, cache: conv.forward(batch(v), parameters: pb), input: batch(v), parameters: pb, gradient: gb)
                }
            }
            // Padding positions of the input are not inputs: their gradient must be zero.
            return (g, dx)
        })
        #expect(worst < 2e-2, "worst relative error \(worst)")
        #expect(conv.outputLength(5) == 3 && conv.outputLength(3) == 2 && conv.outputLength(1) == 1)
    }

    @Test(arguments: [false, true])
    func lstmBackwardMatchesFiniteDifferences(reverse: Bool) {
        var layout = ParameterLayout()
        let lstm = LSTMDirection(inputSize: 3, hidden: 2, reverse: reverse, name: "l", suffix: "l0", layout: &layout)
        let x = SequenceBatch(sequences: [randomValues(4 * 3, seed: 11), randomValues(2 * 3, seed: 12)], channels: 3)
        let p = randomValues(layout.totalCount, seed: 13, scale: 0.7)
        let r = randomValues(x.steps * 2 * 2, seed: 14)
        func batch(_ v: [Float]) -> SequenceBatch { SequenceBatch(values: v, steps: x.steps, batch: 2, channels: 3, lengths: x.lengths) }
        let (worst, _) = checkGradients(parameters: p, input: x.values, weights: r, forward: { p, v in
            p.withUnsafeBufferPointer { lstm.forward(batch(v), parameters: $0).0.values }
        }, backward: { p, v in
            var g = [Float](repeating: 0, count: p.count)
            let dx = p.withUnsafeBufferPointer { pb in
                g.withUnsafeMutableBufferPointer { gb in
                    lstm.backward(r, cache: lstm.forward(batch(v), parameters: pb).1, parameters: pb, gradient: gb)
                }
            }
            return (g, dx)
        })
        #expect(worst < 2e-2, "worst relative error \(worst)")
    }

    @Test func lstmOutputsOfASequenceDoNotDependOnItsBatch() {
        var layout = ParameterLayout()
        let lstm = LSTMDirection(inputSize: 3, hidden: 4, reverse: true, name: "l", suffix: "l0", layout: &layout)
        let p = randomValues(layout.totalCount, seed: 21, scale: 0.5)
        let a = randomValues(3 * 3, seed: 22), b = randomValues(7 * 3, seed: 23)
        let alone = p.withUnsafeBufferPointer { lstm.forward(SequenceBatch(sequences: [a], channels: 3), parameters: $0).0.sequence(0) }
        let batched = p.withUnsafeBufferPointer { lstm.forward(SequenceBatch(sequences: [b, a], channels: 3), parameters: $0).0.sequence(1) }
        for (u, v) in zip(alone, batched) { #expect(abs(u - v) < 1e-6) }
    }
}

struct AcousticModelTests {
    func tiny(bidirectional: Bool = true, layers: Int = 2) -> AcousticModel {
        var s = AcousticSettings()
        s.features = 4
        s.convChannels = 3
        s.lstmHidden = 3
        s.lstmLayers = layers
        s.bidirectional = bidirectional
        s.classes = 4
        return AcousticModel(settings: s)
    }

    @Test func layoutUsesPyTorchNamesAndShapes() {
        var s = AcousticSettings()
        s.classes = 29
        let model = AcousticModel(settings: s)
        let names = model.layout.tensors.map(\.name)
        #expect(names.contains("lstm.weight_ih_l0") && names.contains("lstm.bias_hh_l1_reverse"))
        #expect(model.layout["conv.0.weight"]?.shape == [256, 80, 3])
        #expect(model.layout["lstm.weight_ih_l1"]?.shape == [1024, 512])
        // The reference model's size: 2.9 M parameters.
        #expect(model.layout.totalCount == 2_903_069)
        #expect(model.outputFrames(100) == 25)
    }

    @Test(arguments: [true, false])
    func wholeModelGradientMatchesFiniteDifferences(bidirectional: Bool) {
        let model = tiny(bidirectional: bidirectional)
        let features = [randomValues(17 * 4, seed: 31), randomValues(12 * 4, seed: 32)]
        let labels = [[1, 2], [3]]
        let p = model.initialParameters(seed: 7).map { $0 * 2 }
        func loss(_ q: [Float]) -> Double {
            var g = [Float](repeating: 0, count: q.count)
            let report = q.withUnsafeBufferPointer { qb in
                g.withUnsafeMutableBufferPointer { model.lossAndGradient(parameters: qb, features: features, labels: labels, gradient: $0) }
            }
            return report.lossSum / Double(features.count)
        }
        var g = [Float](repeating: 0, count: p.count)
        let report = p.withUnsafeBufferPointer { pb in
            g.withUnsafeMutableBufferPointer { model.lossAndGradient(parameters: pb, features: features, labels: labels, gradient: $0) }
        }
        #expect(report.infeasible == 0)
        // ReLU kinks: a perturbation that moves a convolution output across zero makes the
        // central difference wrong for that step size only. So each parameter is checked at
        // several step sizes and must agree at one of them; a wrong gradient agrees at none.
        var worst = 0.0
        for i in p.indices {
            var best = Double.infinity
            for eps in [Float(1e-2), 3e-3, 1e-3, 3e-4] where best > 2e-2 {
                var a = p, b = p
                a[i] += eps
                b[i] -= eps
                let numeric = (loss(a) - loss(b)) / Double(2 * eps)
                best = min(best, abs(numeric - Double(g[i])) / max(1e-2, abs(numeric) + abs(Double(g[i]))))
            }
            worst = max(worst, best)
        }
        #expect(worst < 2e-2, "worst relative error \(worst) over \(p.count) parameters")
    }

    @Test func transcriptsLongerThanTheFramesAreReportedNotTrained() {
        let model = tiny()
        let p = model.initialParameters(seed: 1)
        var g = [Float](repeating: 0, count: p.count)
        // 8 frames → 2 after subsampling: three labels cannot fit.
        let report = p.withUnsafeBufferPointer { pb in
            g.withUnsafeMutableBufferPointer {
                model.lossAndGradient(parameters: pb, features: [randomValues(8 * 4, seed: 1)], labels: [[1, 2, 3]], gradient: $0)
            }
        }
        #expect(report.infeasible == 1 && report.lossSum == 0)
        #expect(g.allSatisfy { $0 == 0 })
    }
}

struct KernelTests {
    /// Inputs over the range LSTM pre-activations take, the extremes and the float edge cases.
    static let inputs: [Float] = (-4000 ... 4000).map { Float($0) / 200 } + [-200, -88, -87.5, 60, 200, 1e-7, -1e-7, 0, 3e-4]

    @Test func sigmoidMatchesDoublePrecision() {
        var y = [Float](repeating: 0, count: Self.inputs.count)
        csp_sigmoid(Self.inputs, &y, Self.inputs.count)
        for (x, v) in zip(Self.inputs, y) {
            let exact = 1 / (1 + Foundation.exp(-Double(x)))
            #expect(abs(Double(v) - exact) <= 5e-7 * exact + 1e-30, "sigmoid(\(x)) = \(v), exact \(exact)")
        }
    }

    @Test func tanhMatchesDoublePrecision() {
        var y = [Float](repeating: 0, count: Self.inputs.count)
        csp_tanh(Self.inputs, &y, Self.inputs.count)
        for (x, v) in zip(Self.inputs, y) {
            let exact = Foundation.tanh(Double(x))
            #expect(abs(Double(v) - exact) <= 3e-7, "tanh(\(x)) = \(v), exact \(exact)")
            if abs(x) < 0.125 { #expect(abs(Double(v) - exact) <= 1e-6 * abs(exact), "tanh(\(x)) relative") }
        }
    }

    @Test(arguments: [(1, 7, 32), (8, 256, 64), (11, 19, 37), (3, 5, 100)])
    func rowsTimesMatrixMatchesTheDefinition(rows: Int, k: Int, n: Int) {
        var rng = SeededRandom(UInt64(rows * 1000 + n))
        let x = (0 ..< rows * k).map { _ in rng.nextGaussian() }
        let m = (0 ..< k * n).map { _ in rng.nextGaussian() }
        let start = (0 ..< rows * n).map { _ in rng.nextGaussian() }
        var out = start
        csp_rows_times_matrix(x, rows, k, m, n, &out)
        for r in 0 ..< rows {
            for c in 0 ..< n {
                var exact = Double(start[r * n + c])
                for j in 0 ..< k { exact += Double(x[r * k + j]) * Double(m[j * n + c]) }
                #expect(abs(Double(out[r * n + c]) - exact) < 1e-4 * Double(k).squareRoot(), "(\(r), \(c))")
            }
        }
        var t = [Float](repeating: 0, count: k * n)
        csp_transpose(m, k, n, &t)
        #expect((0 ..< k).allSatisfy { j in (0 ..< n).allSatisfy { c in t[c * k + j] == m[j * n + c] } })
    }

    @Test func lstmCellForwardMatchesItsDefinition() {
        let H = 5, rows = 3
        var rng = SeededRandom(11)
        let pre = (0 ..< rows * 4 * H).map { _ in 3 * rng.nextGaussian() }
        let bias = (0 ..< 4 * H).map { _ in rng.nextGaussian() }
        let cprev = (0 ..< rows * H).map { _ in rng.nextGaussian() }
        var a = pre, c = [Float](repeating: 0, count: rows * H), tc = c, h = c
        csp_lstm_cell_forward(&a, bias, cprev, &c, &tc, &h, rows, H)
        func sig(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }
        for r in 0 ..< rows {
            for j in 0 ..< H {
                let z = { (gate: Int) in Double(pre[r * 4 * H + gate * H + j] + bias[gate * H + j]) }
                let i = sig(z(0)), f = sig(z(1)), g = Foundation.tanh(z(2)), o = sig(z(3))
                let cell = f * Double(cprev[r * H + j]) + i * g
                #expect(abs(Double(c[r * H + j]) - cell) < 1e-5)
                #expect(abs(Double(h[r * H + j]) - o * Foundation.tanh(cell)) < 1e-5)
                #expect(abs(Double(a[r * 4 * H + 3 * H + j]) - o) < 1e-6)
            }
        }
    }
}
