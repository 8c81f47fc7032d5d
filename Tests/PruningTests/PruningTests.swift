import Testing
@testable import CompressedSensing
@testable import Pruning
@testable import Tensors

struct ScheduleTests {
    @Test func cubicMatchesZhuAndGuptaExactly() {
        var s = SparsitySchedule()
        s.kind = .cubic
        s.initial = 0.1
        s.target = 0.9
        s.startStep = 100
        s.endStep = 500
        s.interval = 100
        // s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ with t0 = 100, nΔt = 400.
        let expected: [(Int, Double)] = [
            (0, 0), (99, 0),
            (100, 0.1),                                  // (1 − 0)³ = 1
            (150, 0.1),                                  // held until the next update
            (200, 0.9 - 0.8 * 0.421875),                 // (3/4)³
            (300, 0.9 - 0.8 * 0.125),                    // (1/2)³
            (400, 0.9 - 0.8 * 0.015625),                 // (1/4)³
            (500, 0.9), (10_000, 0.9),
        ]
        for (step, value) in expected {
            #expect(abs(s.sparsity(atStep: step) - value) < 1e-12, "step \(step): \(s.sparsity(atStep: step)) vs \(value)")
        }
        #expect(s.updateSteps == [100, 200, 300, 400, 500])
        #expect(s.isUpdateStep(300) && !s.isUpdateStep(350) && !s.isUpdateStep(600))
    }

    @Test func oneShotPrunesOnceAtItsStep() {
        var s = SparsitySchedule()
        s.kind = .oneShot
        s.target = 0.7
        s.startStep = 10
        #expect(s.sparsity(atStep: 9) == 0 && s.sparsity(atStep: 10) == 0.7 && s.sparsity(atStep: 1000) == 0.7)
        #expect(s.updateSteps == [10] && s.isUpdateStep(10) && !s.isUpdateStep(11))
    }

    @Test func badSchedulesAreNamed() {
        var s = SparsitySchedule()
        s.endStep = -1
        #expect(s.problem?.contains("end_step") == true)
        s = SparsitySchedule()
        s.target = 1.5
        #expect(s.problem != nil)
    }
}

struct ProjectionTests {
    static let layout = ParameterLayout([("conv.0.weight", [8, 10], true), ("lstm.weight", [40, 25], true),
                                         ("lstm.bias", [40], false), ("output.weight", [5, 20], true)])

    static func weights(seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed)
        return (0 ..< layout.totalCount).map { _ in rng.nextGaussian() }
    }

    static func zeros(_ w: [Float], _ spec: TensorSpec) -> Double {
        Double(spec.range.filter { w[$0] == 0 }.count) / Double(spec.count)
    }

    func settings(_ method: PruningSettings.Method, target: Double) -> PruningSettings {
        var p = PruningSettings()
        p.method = method
        p.schedule.kind = .cubic
        p.schedule.target = target
        p.schedule.startStep = 0
        p.schedule.endStep = 20
        p.schedule.interval = 5
        p.exclude = ["conv.0.*"]
        p.block = 64
        return p
    }

    /// Runs `steps` projections on weights that drift a little each step; returns the broadcast.
    func run(_ p: PruningSettings, steps: Int) throws -> [Float] {
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        var w = Self.weights(seed: 2)
        var out = [Float](repeating: 0, count: w.count)
        var rng = SeededRandom(3)
        for step in 0 ..< steps {
            for i in w.indices { w[i] += 0.01 * rng.nextGaussian() }
            _ = w.withUnsafeMutableBufferPointer { wv in
                out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: step, learningRate: 0.01, layout: Self.layout, broadcast: $0) }
            }
        }
        return out
    }

    @Test(arguments: [PruningSettings.Method.gradualMagnitude, .oneShotMagnitude, .admmMagnitude, .csp], [0.5, 0.9])
    func everyMethodReachesItsTargetOnPrunedLayersOnly(method: PruningSettings.Method, target: Double) throws {
        let out = try run(settings(method, target: target), steps: 25)
        for spec in Self.layout.tensors {
            let z = Self.zeros(out, spec)
            if spec.name == "conv.0.weight" || !spec.prunable {
                #expect(z == 0, "\(method): \(spec.name) was not to be pruned")
            } else {
                #expect(abs(z - target) <= 0.005, "\(method) at \(target): \(spec.name) sparsity \(z)")
            }
        }
    }

    @Test func magnitudeKeepsTheLargestWeights() throws {
        var p = settings(.oneShotMagnitude, target: 0.75)
        p.schedule.kind = .oneShot
        p.exclude = []
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        var w = Self.weights(seed: 5)
        let before = w
        var out = w
        _ = w.withUnsafeMutableBufferPointer { wv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0, layout: Self.layout, broadcast: $0) } }
        let spec = Self.layout.tensors[1]
        let kept = spec.range.filter { out[$0] != 0 }
        let smallestKept = kept.map { abs(before[$0]) }.min()!
        let largestPruned = spec.range.filter { out[$0] == 0 }.map { abs(before[$0]) }.max()!
        #expect(kept.count == 250 && smallestKept >= largestPruned)
        #expect(kept.allSatisfy { out[$0] == before[$0] })
    }

    @Test func structuredKeepsTwoOfEveryFour() throws {
        var p = settings(.structured, target: 0.3)  // the target is ignored: N:M fixes 0.5
        p.exclude = ["conv.*", "lstm.*"]
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        var w = Self.weights(seed: 8)
        let before = w
        var out = w
        _ = w.withUnsafeMutableBufferPointer { wv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0, layout: Self.layout, broadcast: $0) } }
        let spec = Self.layout.tensors[3]  // output.weight (5, 20)
        for g in stride(from: spec.offset, to: spec.offset + spec.count, by: 4) {
            let group = Array(g ..< g + 4)
            let kept = group.filter { out[$0] != 0 }
            #expect(kept.count == 2, "group at \(g)")
            let smallestKept = kept.map { abs(before[$0]) }.min()!
            #expect(group.filter { out[$0] == 0 }.allSatisfy { abs(before[$0]) <= smallestKept })
        }
        #expect(Self.zeros(out, Self.layout.tensors[1]) == 0)
    }

    @Test func taylorKeepsTheLargestWeightTimesGradient() throws {
        var p = settings(.taylor, target: 0.5)
        p.schedule.kind = .oneShot
        p.schedule.startStep = 0
        p.exclude = ["conv.*", "lstm.*"]
        p.taylorDecay = 0
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        // Equal magnitudes, so magnitude pruning has no preference; the gradient decides.
        var w = [Float](repeating: 1, count: Self.layout.totalCount)
        let spec = Self.layout.tensors[3]
        var g = [Float](repeating: 0, count: w.count)
        for (n, i) in spec.range.enumerated() { g[i] = Float(n % 7) - 3 }
        var out = w
        _ = w.withUnsafeMutableBufferPointer { wv in g.withUnsafeBufferPointer { gv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: gv, step: 0, learningRate: 0, layout: Self.layout, broadcast: $0) } } }
        let kept = spec.range.filter { out[$0] != 0 }
        #expect(kept.count == 50)
        let smallestKept = kept.map { abs(g[$0]) }.min()!
        #expect(spec.range.filter { out[$0] == 0 }.allSatisfy { abs(g[$0]) <= smallestKept })
    }

    @Test func globalScopeUsesOneThreshold() throws {
        var p = settings(.oneShotMagnitude, target: 0.6)
        p.schedule.kind = .oneShot
        p.scope = .global
        p.exclude = []
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        var w = Self.weights(seed: 6)
        // Make one layer's weights much larger: a global threshold prunes the others first.
        for i in Self.layout.tensors[3].range { w[i] = (w[i] < 0 ? -1 : 1) * (10 + abs(w[i])) }
        var out = w
        _ = w.withUnsafeMutableBufferPointer { wv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0, layout: Self.layout, broadcast: $0) } }
        let pruned = Self.layout.tensors.filter(\.prunable)
        let total = pruned.reduce(0) { $0 + $1.count }, zeros = pruned.reduce(0) { n, s in n + s.range.filter { out[$0] == 0 }.count }
        #expect(abs(Double(zeros) / Double(total) - 0.6) < 0.005)
        #expect(Self.zeros(out, Self.layout.tensors[3]) == 0)
    }

    /// admm-magnitude on a hand-sized layer: block 4, ρ 10, half pruned once at step 0.
    func handDual(_ layout: ParameterLayout, growth: PruningSettings.RhoGrowth) throws -> any ProjectionStep {
        var p = PruningSettings()
        p.method = .admmMagnitude
        p.block = 4
        p.rho = 10
        p.rhoGrowth = growth
        p.schedule.kind = .oneShot
        p.schedule.target = 0.5
        p.schedule.startStep = 0
        return try p.makeProjection(layout: layout, seed: 1)
    }

    @Test func dualSchemeFollowsItsEquations() throws {
        // One layer of 4 weights, block 4, keep 2: check W, Z and U by hand over two steps.
        let layout = ParameterLayout([("w", [4], true)])
        var projection = try handDual(layout, growth: .none)
        var w: [Float] = [3, -1, 0.5, -4]
        var z = [Float](repeating: 0, count: 4)
        _ = w.withUnsafeMutableBufferPointer { wv in z.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0.01, layout: layout, broadcast: $0) } }
        // Step 0: no pull yet (no Z); support = top-2 of W + U = W: {0, 3}; Z = [3, 0, 0, −4]; U = W − Z.
        #expect(z == [3, 0, 0, -4])
        #expect(w == [3, -1, 0.5, -4])
        _ = w.withUnsafeMutableBufferPointer { wv in z.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 1, learningRate: 0.01, layout: layout, broadcast: $0) } }
        // Step 1: W ← W − lr·ρ·(W − Z + U) with lr·ρ = 0.1 (kept entries have W − Z + U = 0);
        // then Z = M ⊙ (W + U) and U ← W + U − Z.
        let w1: [Float] = [3, -1 - 0.1 * (-2), 0.5 - 0.1 * 1, -4]
        #expect(zip(w, w1).allSatisfy { abs($0 - $1) < 1e-6 }, "\(w)")
        #expect(z == [3, 0, 0, -4])
        let dual = (projection as! DualProjection).dual
        #expect(abs(dual[1] - (w1[1] + -1)) < 1e-6 && abs(dual[2] - (w1[2] + 0.5)) < 1e-6 && dual[0] == 0 && dual[3] == 0)
    }

    /// `rho_growth: sparsity`, by hand on the same layer: once the support has sparsity 0.5, ρ'
    /// is 2ρ and U is halved (the multiplier ρ'·U unchanged); the next pull closes 2·lr·ρ of the gap.
    @Test func rhoGrowsWithTheSupportAndTheDualIsRescaled() throws {
        let layout = ParameterLayout([("w", [4], true)])
        var projection = try handDual(layout, growth: .sparsity)
        #expect((projection as! DualProjection).effectiveRho == 10)
        var w: [Float] = [3, -1, 0.5, -4]
        var z = [Float](repeating: 0, count: 4)
        _ = w.withUnsafeMutableBufferPointer { wv in z.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0.01, layout: layout, broadcast: $0) } }
        var dual = projection as! DualProjection
        // Step 0: U = W − Z = [0, −1, 0.5, 0], then halved as ρ' goes from 10 to 20.
        #expect(z == [3, 0, 0, -4] && dual.effectiveRho == 20 && dual.dual == [0, -0.5, 0.25, 0])
        _ = w.withUnsafeMutableBufferPointer { wv in z.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 1, learningRate: 0.01, layout: layout, broadcast: $0) } }
        // Step 1: lr·ρ' = 0.2: W₁ = −1 − 0.2·(−1 + (−0.5)) = −0.7, W₂ = 0.5 − 0.2·(0.5 + 0.25) = 0.35;
        // U ← U + W − Z with no support change, so no rescale.
        dual = projection as! DualProjection
        #expect(abs(w[1] + 0.7) < 1e-6 && abs(w[2] - 0.35) < 1e-6, "\(w)")
        #expect(abs(dual.dual[1] + 1.2) < 1e-6 && abs(dual.dual[2] - 0.6) < 1e-6 && dual.dual[0] == 0 && dual.dual[3] == 0, "\(dual.dual)")
        // ρ's multiplier at the sizes the sweep uses; capped where nothing would be kept.
        #expect(PruningSettings.RhoGrowth.sparsity.scale(sparsity: 0.9) > 9.999 && PruningSettings.RhoGrowth.sparsity.scale(sparsity: 1) == 100)
        #expect(PruningSettings.RhoGrowth.none.scale(sparsity: 0.9) == 1)
    }

    /// A fixed ratio of measurements under `recover: signal` is said at the start of a run, with
    /// the sparsity from which it recovers exactly: 0.5 of a 256-value block is 128 measurements,
    /// enough for 23 held values (128 / 5.5), which a block holds from 91% sparsity on.
    @Test func aMeasurementRatioUnderRecoverSignalIsAdvisedAgainst() {
        var p = settings(.csp, target: 0.9)
        p.block = 256
        p.measurements = .ratio(0.5)
        let advice = p.advisories
        #expect(advice.count == 1)
        #expect(advice.first?.contains("pruning.measurements: 0.5 (128 of a block's 256 values)") == true, "\(advice)")
        #expect(advice.first?.contains("at most 23 values (sparsity 91% and above)") == true, "\(advice)")
        for change in [{ (q: inout PruningSettings) in q.measurements = .auto },
                       { (q: inout PruningSettings) in q.recover = .target },
                       { (q: inout PruningSettings) in q.measurementOperator = .activations },
                       { (q: inout PruningSettings) in q.method = .admmMagnitude },
                       { (q: inout PruningSettings) in q.schedule.initial = 0.95 }] {
            var q = p
            change(&q)
            #expect(q.advisories.isEmpty, "\(q.advisories)")
        }
    }

    @Test func cspReportsItsRecoveryAgainstTopK() throws {
        var p = settings(.csp, target: 0.9)
        p.schedule.kind = .oneShot
        p.measurements = .ratio(0.5)
        p.exclude = []
        var projection = try p.makeProjection(layout: Self.layout, seed: 1)
        var w = Self.weights(seed: 7)
        var out = w
        let update = w.withUnsafeMutableBufferPointer { wv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: 0, learningRate: 0.01, layout: Self.layout, broadcast: $0) } }
        let layers = try #require(update).layers
        #expect(layers.count == 3)
        for layer in layers {
            #expect(layer.measurementRatio == 0.5)
            // Dense Gaussian weights are not sparse: recovery is rough and the support differs from top-k.
            #expect(layer.recoveryError.map { $0 > 0 && $0 < 2 } == true)
            #expect(layer.overlapWithTopK.map { $0 >= 0 && $0 <= 1 } == true)
        }
    }

    /// `recover: signal` measures W + U at the sparsity it has. Before any support it is dense:
    /// a whole block's measurements, read as is (top-k, no error). Once the pull holds the
    /// pruned entries at zero (lr·ρ' ≥ 1) a block of 256 holds 25–26 values, recovered by NIHT
    /// from 143 Gaussian measurements (5.5 per value) and then cut to the new 12–13: exactly
    /// top-k. `target` asks 119 measurements for 26-sparse estimates of the dense blocks, and
    /// 78 for 13-sparse estimates of the 26-sparse ones.
    @Test(arguments: [PruningSettings.Recovery.signal, .target])
    func cspRecoversTheSignalAtTheSparsityItHas(recover: PruningSettings.Recovery) throws {
        let layout = ParameterLayout([("w", [4, 256], true)])
        var p = PruningSettings()
        p.method = .csp
        p.recover = recover
        p.block = 256
        p.rho = 1
        p.schedule.kind = .cubic
        p.schedule.initial = 0.9
        p.schedule.target = 0.95
        p.schedule.startStep = 0
        p.schedule.endStep = 10
        p.schedule.interval = 10
        var projection = try p.makeProjection(layout: layout, seed: 5)
        var w = [Float](repeating: 0, count: layout.totalCount)
        var rng = SeededRandom(11)
        for i in w.indices { w[i] = rng.nextGaussian() }
        var out = w
        var updates: [SupportUpdate] = []
        for step in 0 ... 10 {
            if let u = w.withUnsafeMutableBufferPointer({ wv in out.withUnsafeMutableBufferPointer { projection.project(weights: wv, gradient: UnsafeBufferPointer(wv), step: step, learningRate: 1, layout: layout, broadcast: $0) } }) {
                updates.append(u)
            }
        }
        try #require(updates.count == 2)
        let first = updates[0].layers[0], second = updates[1].layers[0]
        #expect(abs(first.density - 0.1) < 0.01 && abs(second.density - 0.05) < 0.01)
        if recover == .signal {
            #expect(first.measurementRatio == 1 && first.recoveryError == 0 && first.overlapWithTopK == 1)
            #expect(second.measurementRatio == 143.0 / 256 && second.overlapWithTopK == 1, "\(second)")
            #expect(second.recoveryError.map { $0 < 1e-3 } == true, "\(second)")
        } else {
            #expect(first.measurementRatio == 119.0 / 256 && second.measurementRatio == 78.0 / 256)
            #expect(first.overlapWithTopK.map { $0 < 0.9 } == true, "\(first)")
            // A 13-sparse estimate of 26-sparse blocks misses at least the 13 smallest values.
            #expect(second.recoveryError.map { $0 > 0.05 } == true, "\(second)")
        }
    }

    @Test func badSettingsAreErrors() {
        var p = settings(.csp, target: 0.5)
        p.measurementOperator = .srht
        p.block = 100
        #expect(throws: PruningError.self) { try p.makeProjection(layout: Self.layout, seed: 1) }
        p = settings(.csp, target: 0.5)
        p.scope = .global
        #expect(throws: PruningError.self) { try p.makeProjection(layout: Self.layout, seed: 1) }
    }
}
