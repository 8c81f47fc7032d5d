import Foundation
import Testing
@testable import Tensors
@testable import Training

struct AccumulatorTests {
    /// Two micro-batches: mean gradients [1, 2] over 2 examples and [4, 8] over 6 examples.
    /// The step's gradient is (2·[1, 2] + 6·[4, 8]) / 8 = [3.25, 6.5], not the plain mean [2.5, 5].
    @Test func weightedMeanIsExact() {
        var acc = GradientAccumulator(parameterCount: 2)
        [Float(1), 2].withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 2) }
        acc.addMicroBatch(0, examples: 2, lossSum: 3)
        let bytes = FloatEncoding.denseBytes([Float(4), 8])
        let ok = bytes.withUnsafeBytes { acc.fold(littleEndianBytes: $0, at: 0, weight: 6) }
        #expect(ok)
        acc.addMicroBatch(1, examples: 6, lossSum: 5)
        #expect(acc.mean() == [3.25, 6.5])
        #expect(acc.meanLoss == 1.0)
    }

    @Test func chunksFoldAtTheirOffsets() {
        var acc = GradientAccumulator(parameterCount: 5)
        [Float(1), 1].withUnsafeBufferPointer { acc.fold($0, at: 3, weight: 1) }
        [Float(2)].withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 1) }
        #expect(acc.sum == [2, 0, 0, 1, 1])
        let bad = [UInt8](repeating: 0, count: 12)
        #expect(bad.withUnsafeBytes { acc.fold(littleEndianBytes: $0, at: 3, weight: 1) } == false)  // overruns
        acc.reset()
        #expect(acc.sum == [0, 0, 0, 0, 0] && acc.examples == 0)
    }
}

struct FixedPointAccumulatorTests {
    /// Random micro-batch gradients folded in random orders and chunkings: the fixed-point sum
    /// is the same bit for bit every time, while the float32 sum is not (the reason it exists).
    @Test func sumDoesNotDependOnArrivalOrder() {
        let n = 4096, microBatches = 6
        var rng = SeededRandom(42, 1)
        let grads = (0 ..< microBatches).map { _ in (0 ..< n).map { _ in Float(rng.nextGaussian()) * powf(10, Float(Int(rng.next() % 9)) - 6) } }
        let weights = (0 ..< microBatches).map { 3 + $0 % 4 }
        func run(_ mode: GradientAccumulator.Mode, order: [Int], chunk: Int) -> [Float] {
            var acc = GradientAccumulator(parameterCount: n, mode: mode)
            // Chunks of all micro-batches, interleaved as `order` says.
            var pieces: [(Int, Int)] = []
            for mb in order { for start in stride(from: 0, to: n, by: chunk) { pieces.append((mb, start)) } }
            var shuffle = SeededRandom(UInt64(order.first! * 31 + chunk), 9)
            pieces.shuffle(using: &shuffle)
            for (mb, start) in pieces {
                grads[mb].withUnsafeBufferPointer { g in
                    acc.fold(UnsafeBufferPointer(rebasing: g[start ..< min(n, start + chunk)]), at: start, weight: weights[mb])
                }
            }
            for mb in order { acc.addMicroBatch(mb, examples: weights[mb], lossSum: Double(mb) * 0.1) }
            return acc.mean()
        }
        let reference = run(.fixedPoint, order: Array(0 ..< microBatches), chunk: 1000)
        var floatResults: Set<[UInt32]> = []
        for trial in 0 ..< 8 {
            var order = Array(0 ..< microBatches)
            var r = SeededRandom(7, UInt64(trial))
            order.shuffle(using: &r)
            let chunk = [1, 64, 1000, 4096][trial % 4]
            #expect(run(.fixedPoint, order: order, chunk: chunk).map(\.bitPattern) == reference.map(\.bitPattern))
            floatResults.insert(run(.float, order: order, chunk: chunk).map(\.bitPattern))
        }
        #expect(floatResults.count > 1, "float32 sums in different orders were all equal: the test data do not exercise rounding")
        // And the fixed-point mean is the exact mean to within its resolution.
        for i in stride(from: 0, to: n, by: 97) {
            var exact = 0.0
            for mb in 0 ..< microBatches { exact += Double(grads[mb][i]) * Double(weights[mb]) }
            exact /= Double(weights.reduce(0, +))
            #expect(abs(Double(reference[i]) - exact) <= abs(exact) * 1.2e-7 + 1e-12)
        }
    }

    @Test func lossIsSummedInMicroBatchOrder() {
        var a = GradientAccumulator(parameterCount: 1, mode: .fixedPoint)
        var b = GradientAccumulator(parameterCount: 1, mode: .fixedPoint)
        let losses = [1e16, 1.0, -1e16, 3.0]
        for i in 0 ..< 4 { a.addMicroBatch(i, examples: 1, lossSum: losses[i]) }
        for i in [3, 2, 1, 0] { b.addMicroBatch(i, examples: 1, lossSum: losses[i]) }
        #expect(a.lossSum.bitPattern == b.lossSum.bitPattern)
        a.addMicroBatch(0, examples: 5, lossSum: 99)   // a micro-batch counts once
        #expect(a.examples == 4)
    }

    /// The kernel rounds a block whose terms all stay below 2^51 with a fast trick, and any other
    /// block value by value with rint: both must give the same terms.
    @Test func fastAndCarefulRoundingAgree() {
        var rng = SeededRandom(5, 5)
        var values = (0 ..< 3000).map { _ in rng.nextGaussian() * powf(10, Float(Int(rng.next() % 12)) - 9) }
        values[1234] = 5000   // × 7 × 2^40 > 2^51: this block takes the careful path
        var whole = GradientAccumulator(parameterCount: values.count, mode: .fixedPoint)
        var single = GradientAccumulator(parameterCount: values.count, mode: .fixedPoint)
        values.withUnsafeBufferPointer { v in
            whole.fold(v, at: 0, weight: 7)
            for i in 0 ..< v.count { single.fold(UnsafeBufferPointer(rebasing: v[i ..< i + 1]), at: i, weight: 7) }
        }
        whole.addMicroBatch(0, examples: 7, lossSum: 0)
        single.addMicroBatch(0, examples: 7, lossSum: 0)
        #expect(whole.mean().map(\.bitPattern) == single.mean().map(\.bitPattern))
        #expect(whole.overflows == 0)
        // A sum that wraps in the fast path is undone and counted, never left wrapped.
        var acc = GradientAccumulator(parameterCount: 600, mode: .fixedPoint)
        let big = [Float](repeating: 2000, count: 600)   // 2000 × 1 × 2^40 < 2^51: fast path
        for _ in 0 ..< 4200 { big.withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 1) } }   // 8.4e6 > 2^23
        #expect(acc.overflows > 0 && acc.firstOverflowOffset == 0)
    }

    @Test func overflowIsReportedNotWrapped() {
        var acc = GradientAccumulator(parameterCount: 3, mode: .fixedPoint)
        [Float(1), 5e6, 1].withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 1) }
        #expect(acc.overflows == 0)
        [Float(1), 5e6, 1].withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 1) }   // 1e7 > 2^23
        #expect(acc.overflows == 1 && acc.firstOverflowOffset == 1)
        [Float(0), 0, 1e30].withUnsafeBufferPointer { acc.fold($0, at: 0, weight: 1) }  // the term itself
        #expect(acc.overflows == 2)
        acc.reset()
        #expect(acc.overflows == 0 && acc.firstOverflowOffset == nil)
    }
}

struct OptimizerTests {
    func step(_ opt: inout Optimizer, _ p: inout [Float], _ g: [Float], lr: Double) {
        p.withUnsafeMutableBufferPointer { pb in g.withUnsafeBufferPointer { opt.apply(gradient: $0, to: pb, learningRate: lr) } }
    }

    @Test func sgdMomentumByHand() {
        var s = OptimizerSettings()
        s.kind = .sgd
        s.momentum = 0.5
        var opt = Optimizer(settings: s, parameterCount: 1)
        var p: [Float] = [1]
        step(&opt, &p, [2], lr: 0.1)   // v = 2,       p = 1 − 0.2 = 0.8
        step(&opt, &p, [2], lr: 0.1)   // v = 1 + 2,   p = 0.8 − 0.3 = 0.5
        #expect(abs(p[0] - 0.5) < 1e-6)
    }

    @Test func adamFirstStepMovesByLearningRate() {
        var s = OptimizerSettings()
        s.kind = .adam
        var opt = Optimizer(settings: s, parameterCount: 2)
        var p: [Float] = [1, 1]
        step(&opt, &p, [0.3, -20], lr: 0.01)
        // Bias-corrected m/√v = g/|g| on the first step.
        #expect(abs(p[0] - 0.99) < 1e-5 && abs(p[1] - 1.01) < 1e-5)
    }

    @Test(arguments: [OptimizerSettings.Kind.adam, .adamw])
    func vectorisedAdamIsBitForBitTheScalarDefinition(kind: OptimizerSettings.Kind) {
        var s = OptimizerSettings()
        s.kind = kind
        s.weightDecay = 0.01
        let n = 1000
        var rng = SeededRandom(5)
        var p = (0 ..< n).map { _ in rng.nextGaussian() }
        var opt = Optimizer(settings: s, parameterCount: n)
        var (refP, refM, refV) = (p, [Float](repeating: 0, count: n), [Float](repeating: 0, count: n))
        for t in 1 ... 3 {
            let g = (0 ..< n).map { _ in rng.nextGaussian() * (t == 2 ? 1e-4 : 3) }
            step(&opt, &p, g, lr: 0.01)
            let b1 = Float(s.beta1), b2 = Float(s.beta2), eps = Float(s.epsilon), wd = Float(s.weightDecay), lr: Float = 0.01
            let c1 = 1 - Float(pow(s.beta1, Double(t))), c2 = 1 - Float(pow(s.beta2, Double(t)))
            for i in 0 ..< n {
                let gi = kind == .adamw ? g[i] : g[i] + wd * refP[i]
                refM[i] = b1 * refM[i] + (1 - b1) * gi
                refV[i] = b2 * refV[i] + (1 - b2) * gi * gi
                let update = (refM[i] / c1) / ((refV[i] / c2).squareRoot() + eps)
                refP[i] -= lr * (update + (kind == .adamw ? wd * refP[i] : 0))
            }
        }
        #expect(p == refP)
    }

    @Test func adamwDecaysDecoupledFromTheGradientScale() {
        var s = OptimizerSettings()
        s.kind = .adamw
        s.weightDecay = 0.1
        var opt = Optimizer(settings: s, parameterCount: 1)
        var p: [Float] = [2]
        step(&opt, &p, [0], lr: 0.5)
        // Zero gradient: only the decay acts, p −= lr · wd · p = 2 − 0.1.
        #expect(abs(p[0] - 1.9) < 1e-6)
    }

    @Test func cosineScheduleWithWarmup() {
        var s = LearningRateSchedule()
        s.decay = .cosine
        s.warmupSteps = 10
        s.minFactor = 0.1
        #expect(s.factor(step: 0, totalSteps: 110) == 0.1)
        #expect(s.factor(step: 9, totalSteps: 110) == 1)
        #expect(abs(s.factor(step: 60, totalSteps: 110) - 0.55) < 1e-9)
        #expect(abs(s.factor(step: 110, totalSteps: 110) - 0.1) < 1e-9)
    }
}
