import Testing
@testable import Pruning
@testable import Tensors

/// A projection restored from its checkpoint state continues exactly as the original does: the
/// same broadcast weights, master weights and support updates, bit for bit.
struct ProjectionStateTests {
    static let layout: ParameterLayout = {
        var l = ParameterLayout()
        _ = l.append("conv.0.weight", shape: [8, 4, 3], prunable: true)
        _ = l.append("lstm.weight_ih_l0", shape: [32, 20], prunable: true)
        _ = l.append("lstm.bias_ih_l0", shape: [32], prunable: false)
        _ = l.append("output.weight", shape: [10, 16], prunable: true)
        return l
    }()

    static func settings(_ method: PruningSettings.Method) -> PruningSettings {
        var s = PruningSettings()
        s.method = method
        s.block = 32
        s.rho = 50
        s.schedule.kind = .cubic
        s.schedule.target = 0.7
        s.schedule.startStep = 2
        s.schedule.endStep = 14
        s.schedule.interval = 3
        s.structuredKeep = 2
        s.structuredGroup = 5
        return s
    }

    /// The inputs the methods that read statistics see (conv.0 as im2col patches of 4 × 3).
    static let sites = [StatisticSite(name: "conv.0", dimension: 12, tensors: ["conv.0.weight"]),
                        StatisticSite(name: "lstm.l0.input", dimension: 20, tensors: ["lstm.weight_ih_l0"]),
                        StatisticSite(name: "output", dimension: 16, tensors: ["output.weight"])]

    /// Step `step`'s input statistics: 60 seeded frames per site over 4 examples (`sites`: as the
    /// projection reads them, sketched or not).
    static func statistics(step: Int, sites: [StatisticSite]) -> [Float] {
        var recorder = InputMomentRecorder(sites: sites, sketchKey: InputMomentRecorder.sketchKey(seed: 7, step: UInt64(step), microBatch: 0, examples: [0]))
        var rng = SeededRandom(7, UInt64(step + 1))
        for site in sites {
            let rows = (0 ..< 60 * site.dimension).map { _ in rng.nextGaussian() }
            rows.withUnsafeBufferPointer { recorder.record(site.name, rows: $0, count: 60, frames: 60) }
        }
        var out = [Float](repeating: 0, count: ExchangeLayout(parameters: ParameterLayout(), sites: sites).statisticsRange.count)
        out.withUnsafeMutableBufferPointer { recorder.write(into: $0, examples: 4) }
        return out
    }

    /// Step `step`'s deterministic "training": weights drift with a pseudo-gradient.
    static func inputs(step: Int, count: Int) -> [Float] {
        var rng = SeededRandom(99, UInt64(step + 1))
        return (0 ..< count).map { _ in rng.nextGaussian() * 0.1 }
    }

    static func run(_ p: inout any ProjectionStep, weights: inout [Float], steps: Range<Int>) -> [[UInt32]] {
        var outputs: [[UInt32]] = []
        var broadcast = [Float](repeating: 0, count: layout.totalCount)
        for step in steps {
            let g = inputs(step: step, count: layout.totalCount)
            for i in weights.indices { weights[i] -= 0.05 * g[i] }
            statistics(step: step, sites: p.statisticSites).withUnsafeBufferPointer { p.observe(statistics: $0, examples: 4) }
            _ = weights.withUnsafeMutableBufferPointer { w in
                g.withUnsafeBufferPointer { gb in
                    broadcast.withUnsafeMutableBufferPointer { b in
                        p.project(weights: w, gradient: gb, step: step, learningRate: 0.01, layout: layout, broadcast: b)
                    }
                }
            }
            outputs.append(broadcast.map(\.bitPattern) + weights.map(\.bitPattern))
        }
        return outputs
    }

    @Test(arguments: PruningSettings.Method.allCases)
    func restoredStateContinuesExactly(method: PruningSettings.Method) throws {
        try check(Self.settings(method))
    }

    @Test(arguments: [PruningSettings.Operator.activations, .activationSketch])
    func restoredActivationsOperatorContinuesExactly(measuredBy: PruningSettings.Operator) throws {
        var settings = Self.settings(.csp)
        settings.measurementOperator = measuredBy
        try check(settings)
    }

    /// A checkpoint's statistics are read only in the layout they were written in: a sketch is not
    /// read as G, nor G as a sketch, whatever the lengths (they can be equal: d(d + 1)/2 values
    /// packed, (m + 1)·d sketched), and the refusal names the site and the setting.
    @Test func statisticsAreRestoredOnlyInTheirOwnLayout() throws {
        var sketch = Self.settings(.csp)
        sketch.measurementOperator = .activationSketch
        var full = sketch
        full.measurementOperator = .activations
        for (from, to) in [(sketch, full), (full, sketch)] {
            var weights = Self.inputs(step: -1, count: Self.layout.totalCount)
            var original = try from.makeProjection(layout: Self.layout, seed: 3, sites: Self.sites)
            _ = Self.run(&original, weights: &weights, steps: 0 ..< 4)
            var other = try to.makeProjection(layout: Self.layout, seed: 3, sites: Self.sites)
            let error = #expect(throws: PruningError.self) { try other.restore(original.checkpointState) }
            #expect(error?.description.contains("conv.0") == true && error?.description.contains("pruning.operator") == true,
                    "\(error.map { "\($0)" } ?? "")")
        }
    }

    func check(_ settings: PruningSettings) throws {
        let method = settings.method
        var weights = Self.inputs(step: -1, count: Self.layout.totalCount)
        var original = try settings.makeProjection(layout: Self.layout, seed: 3, sites: Self.sites)
        _ = Self.run(&original, weights: &weights, steps: 0 ..< 7)
        let saved = original.checkpointState
        let savedWeights = weights

        let expected = Self.run(&original, weights: &weights, steps: 7 ..< 20)
        var restored = try settings.makeProjection(layout: Self.layout, seed: 3, sites: Self.sites)
        try restored.restore(saved)
        var restoredWeights = savedWeights
        let continued = Self.run(&restored, weights: &restoredWeights, steps: 7 ..< 20)
        #expect(continued == expected, "\(method.rawValue): the restored projection diverged")

        // And without the state, a fresh projection does not continue the same way (the test
        // would not notice a restore that does nothing otherwise).
        if method != .none {
            var fresh = try settings.makeProjection(layout: Self.layout, seed: 3, sites: Self.sites)
            var freshWeights = savedWeights
            #expect(Self.run(&fresh, weights: &freshWeights, steps: 7 ..< 20) != expected, "\(method.rawValue): state made no difference")
        }
    }

    /// A dual checkpoint from before `rho_growth` (no `support_sparsity_bits`), resumed under
    /// `rho_growth: sparsity` with --allow-changed-settings, takes the support's sparsity from
    /// its mask: ρ' is ρ/(1 − the mask's pruned fraction), not an error.
    @Test func aDualStateFromBeforeRhoGrowthReadsItsSparsityFromTheMask() throws {
        var old = Self.settings(.admmMagnitude)
        old.rhoGrowth = .none
        var p: any ProjectionStep = try old.makeProjection(layout: Self.layout, seed: 3)
        var w = Self.inputs(step: 100, count: Self.layout.totalCount)
        _ = Self.run(&p, weights: &w, steps: 0 ..< 9)
        let state = p.checkpointState
        #expect(state.integers["support_sparsity_bits"] == nil)
        let before = p as! DualProjection
        let pruned = before.layers.tensors.flatMap { Array($0.range) }
        let fraction = Double(pruned.filter { before.mask[$0] == 0 }.count) / Double(pruned.count)
        #expect(fraction > 0.3)
        var grown = try Self.settings(.admmMagnitude).makeProjection(layout: Self.layout, seed: 3) as! DualProjection
        try grown.restore(state)
        #expect(abs(grown.effectiveRho - 50 / (1 - fraction)) < 1e-9, "\(grown.effectiveRho)")
    }

    @Test func restoreNamesWhatIsMissingOrMisfit() throws {
        var p = try Self.settings(.csp).makeProjection(layout: Self.layout, seed: 3)
        var state = p.checkpointState
        state.floats["dual"] = [1, 2, 3]
        #expect(throws: PruningError.self) { try p.restore(state) }
        do { try p.restore(state) } catch { #expect("\(error)".contains("dual") && "\(error)".contains("3 values")) }
        state = ProjectionState()
        do { try p.restore(state); Issue.record("an empty state was accepted") } catch { #expect("\(error)".contains("dual")) }
    }
}
