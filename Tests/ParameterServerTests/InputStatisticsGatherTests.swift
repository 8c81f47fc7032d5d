import Foundation
import Testing
@testable import ParameterServer
@testable import Pruning
import Tensors
import Training

/// Workers' input statistics travel after the gradient and are summed like it: the coordinator's
/// G equals the one a single process measures over all the step's frames.
struct InputStatisticsGatherTests {
    let layout = ParameterLayout([("w", [6, 5], true), ("b", [6], false)])
    let site = StatisticSite(name: "w.input", dimension: 5, tensors: ["w"])

    /// `method` on a cubic schedule whose first update comes after the step these tests fold.
    static func settings(_ method: PruningSettings.Method) -> PruningSettings {
        var settings = PruningSettings()
        settings.method = method
        settings.schedule = SparsitySchedule()
        settings.schedule.kind = .cubic
        settings.schedule.target = 0.5
        settings.schedule.startStep = 5
        settings.schedule.endStep = 10
        settings.schedule.interval = 5
        return settings
    }

    /// A parameter server with plain SGD over `layout`, folding into `projection`.
    func server(_ projection: any ProjectionStep, fixedPoint: Bool) -> ParameterServer {
        var o = OptimizerSettings()
        o.kind = .sgd
        let w = [Float](repeating: 0.1, count: layout.totalCount)
        return ParameterServer(layout: layout, settings: .init(optimizer: o, totalSteps: 20, fixedPoint: fixedPoint, halfBroadcast: false),
                               weights: w, broadcast: w, optimizer: Optimizer(settings: o, parameterCount: layout.totalCount),
                               projection: projection, version: 1, timer: { 0 })
    }

    /// Micro-batch `mb` as a worker sends it (a zero gradient, then `moments`' records), folded
    /// tensor by tensor; returns the statistics it carried.
    func send(_ moments: InputMomentRecorder, microBatch mb: Int, examples: Int, to server: ParameterServer) -> [Float] {
        var message = [Float](repeating: 0, count: server.exchange.totalCount)
        message.withUnsafeMutableBufferPointer { moments.write(into: UnsafeMutableBufferPointer(rebasing: $0[server.exchange.statisticsRange]), examples: examples) }
        for spec in server.exchange.combined.tensors {
            #expect(message.withUnsafeBufferPointer { all in
                server.fold(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: all[spec.range])), at: spec.offset, examples: examples)
            })
        }
        server.addMicroBatch(mb, examples: examples, lossSum: 1)
        return Array(message[server.exchange.statisticsRange])
    }

    @Test(arguments: [false, true])
    func gatheredSecondMomentEqualsASingleProcess(fixedPoint: Bool) throws {
        let projection = try Self.settings(.wanda).makeProjection(layout: layout, seed: 1, sites: [site])
        #expect(projection.statisticSites == [site])
        let server = server(projection, fixedPoint: fixedPoint)
        #expect(server.exchange.totalCount == layout.totalCount + 15 + 1)
        // Three micro-batches of different sizes, each with its own frames per example.
        var rng = SeededRandom(9)
        var reference = InputMomentRecorder(sites: [site])
        var allFrames = 0
        for (mb, examples) in [3, 1, 4].enumerated() {
            let frames = examples * (2 + mb)
            let rows = (0 ..< frames * 5).map { _ in rng.nextGaussian() * 2 }
            var moments = InputMomentRecorder(sites: [site])
            rows.withUnsafeBufferPointer {
                moments.record("w.input", rows: $0, count: frames, frames: frames)
                reference.record("w.input", rows: $0, count: frames, frames: frames)
            }
            allFrames += frames
            _ = send(moments, microBatch: mb, examples: examples, to: server)
        }
        _ = try server.apply(step: 0)
        let gathered = try #require((server.projection as? MaskedProjection)?.statistics)
        #expect(gathered.frames == [Double(allFrames)])
        var expected = [Float](repeating: 0, count: ExchangeLayout(parameters: ParameterLayout(), sites: [site]).statisticsRange.count)
        expected.withUnsafeMutableBufferPointer { reference.write(into: $0, examples: 1) }
        let perFrame = gathered.secondMoment(0)
        let reference5 = Array(expected.prefix(15)).withUnsafeBufferPointer { SymmetricMath.unpackUpper($0, n: 5) }
        for i in 0 ..< 25 {
            let got = Double(perFrame[i]) * Double(allFrames), want = Double(reference5[i])
            #expect(abs(got - want) <= 1e-4 * max(1, abs(want)), "entry \(i): \(got) vs \(want)")
        }
    }

    /// `operator: activation-sketch`: the workers' sketches S_b X_b and diagonals add up, exactly
    /// in fixed point, to what a single process draws with the same blocks, and the coordinator
    /// reads G from them as (1 − α)·AᵀA off the diagonal and diag G on it, α = d/(d + m).
    @Test(arguments: [false, true])
    func gatheredSketchEqualsASingleProcess(fixedPoint: Bool) throws {
        var settings = Self.settings(.csp)
        settings.measurementOperator = .activationSketch
        settings.measurements = .ratio(0.6)
        settings.block = 30
        let sites = settings.statisticSites(layout: layout, available: [site])
        #expect(sites == [site.sketched(rows: 3)])
        let projection = try settings.makeProjection(layout: layout, seed: 1, sites: [site])
        #expect(projection.statisticSites == sites)
        let server = server(projection, fixedPoint: fixedPoint)
        #expect(server.exchange.totalCount == layout.totalCount + (3 + 1) * 5 + 1)
        var rng = SeededRandom(9)
        var sketch = [Double](repeating: 0, count: 20)
        var allFrames = 0
        for (mb, examples) in [3, 1, 4].enumerated() {
            let frames = examples * (2 + mb)
            let rows = (0 ..< frames * 5).map { _ in rng.nextGaussian() * 2 }
            var moments = InputMomentRecorder(sites: sites, sketchKey: InputMomentRecorder.sketchKey(seed: 1, step: 0, microBatch: mb, examples: [mb]))
            rows.withUnsafeBufferPointer { moments.record("w.input", rows: $0, count: frames, frames: frames) }
            allFrames += frames
            let record = send(moments, microBatch: mb, examples: examples, to: server)
            for j in 0 ..< 20 { sketch[j] += Double(record[j]) * Double(examples) }
        }
        _ = try server.apply(step: 0)
        let gathered = try #require((server.projection as? DualProjection)?.statistics)
        #expect(gathered.frames == [Double(allFrames)])
        let perFrame = gathered.secondMoment(0), diagonal = gathered.diagonal(0)
        let alpha = 5.0 / (5.0 + 3.0)
        for i in 0 ..< 5 {
            for j in 0 ..< 5 {
                let want = i == j ? sketch[15 + i] : (1 - alpha) * (0 ..< 3).reduce(0.0) { $0 + sketch[$1 * 5 + i] * sketch[$1 * 5 + j] }
                let got = Double(perFrame[i * 5 + j]) * Double(allFrames)
                #expect(abs(got - want) <= 1e-4 * max(1, abs(want)), "entry (\(i), \(j)): \(got) vs \(want)")
                if i == j { #expect(abs(Double(diagonal[i]) * Double(allFrames) - want) <= 1e-4 * max(1, abs(want))) }
            }
        }
    }
}
