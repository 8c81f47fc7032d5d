import Foundation
import CompressedSensing
import Models
import Pruning
import Tensors

/// What sensing through the layers' own inputs costs (Sources/Pruning/README.md, "Activations"):
/// on the reference speech model (2.9 M parameters) with the LSTM and second convolution pruned,
///   - a worker's micro-batch with its inputs' second moments measured, against the same
///     micro-batch without (one thread, the same batch);
///   - the bytes a micro-batch sends with the statistics, against the gradient alone;
///   - the coordinator's support update at 80% for each method that reads them, against the
///     worker's micro-batch (the work a support update holds the run up by), and the layers'
///     mean output error each leaves (the default search against a longer one, and against wanda).
public enum StatisticsBenchmark {
    public static func run(utterances: Int = 8, frames: Int = 300, seed: UInt64 = 1) throws -> [Benchmarks.Result] {
        var reference = ReferenceSpeechInputs(seed: seed)
        let model = reference.model, layout = reference.layout, parameters = reference.parameters
        let pruning = reference.pruning(.wanda)
        let sites = pruning.statisticSites(layout: layout, available: model.statisticSites)
        var rng = SeededRandom(seed, 0x5354)
        let batch = reference.randomBatch(utterances: utterances, frames: frames, rng: &rng)
        var none = InputMomentRecorder(sites: [])
        var recorder = InputMomentRecorder(sites: sites)
        let plain = (0 ..< 3).map { _ in reference.microBatch(batch, moments: &none) }.min()!
        let measured = (0 ..< 3).map { _ in
            var r = InputMomentRecorder(sites: sites)
            let t = reference.microBatch(batch, moments: &r)
            recorder = r
            return t
        }.min()!
        let exchange = ExchangeLayout(parameters: layout, sites: sites)
        var statistics = [Float](repeating: 0, count: exchange.statisticsRange.count)
        statistics.withUnsafeMutableBufferPointer { recorder.write(into: $0, examples: utterances) }
        var results = [
            Benchmarks.Result(name: "statistics: a worker's micro-batch (\(utterances) × \(frames) frames) with its inputs' second moments",
                              ours: measured, baseline: plain, unit: "s", baselineName: "the same micro-batch without"),
            Benchmarks.Result(name: "statistics: bytes a micro-batch sends (gradient + \(sites.count) sites' packed G)",
                              ours: Double(4 * exchange.totalCount), baseline: Double(4 * layout.totalCount), unit: "B",
                              baselineName: "the gradient alone"),
        ]
        // One support update at 80% per method, from enough frames (the window's floor is 8·d).
        typealias Restarts = RowSparseRegression.Restarts
        // (The defaults: 16 swap rounds; restarts `auto`, which gives this model's rows, k ≥ 51 at
        // 80%, none. The longer search, 256 rounds and 4 restarts, beside them.)
        let methods: [(String, PruningSettings.Method, PruningSettings.Operator, RowSparseRegression.WarmStart, Int, Restarts)] = [
            ("csp, operator activations, warm_start diagonal", .csp, .activations, .diagonal, 16, .auto),
            ("csp, operator activations, warm_start diagonal, swaps 256, restarts 4", .csp, .activations, .diagonal, 256, .count(4)),
            ("csp, operator activations, warm_start obs", .csp, .activations, .obs, 16, .auto),
            ("wanda", .wanda, .gaussian, .obs, 16, .auto),
            ("one-shot-reconstruction, warm_start obs", .oneShotReconstruction, .gaussian, .obs, 16, .auto),
        ]
        var errors: [String: Double] = [:]
        for (name, method, op, start, swaps, restarts) in methods {
            var s = pruning
            s.method = method
            s.measurementOperator = op
            s.warmStart = start
            s.swaps = swaps
            s.restarts = restarts
            s.iterations = 10
            s.schedule.kind = .oneShot
            s.schedule.startStep = 0
            s.schedule.target = 0.8
            var projection = try s.makeProjection(layout: layout, seed: 1, sites: model.statisticSites)
            let repeats = sites.map { 8 * $0.dimension }.max()! / max(1, recorder.frames.min() ?? 1) + 1
            for _ in 0 ..< repeats { statistics.withUnsafeBufferPointer { projection.observe(statistics: $0, examples: utterances) } }
            var weights = parameters
            var broadcast = parameters
            let start = ContinuousClock.now
            let update = weights.withUnsafeMutableBufferPointer { w in
                broadcast.withUnsafeMutableBufferPointer { b in
                    projection.project(weights: w, gradient: UnsafeBufferPointer(w), step: 0, learningRate: 3e-4, layout: layout, broadcast: b)
                }
            }
            let seconds = (ContinuousClock.now - start).seconds
            results.append(Benchmarks.Result(name: "statistics: the coordinator's support update at 80% (\(name))", ours: seconds,
                                             baseline: plain, unit: "s", baselineName: "one worker micro-batch"))
            // The layers' mean output error left, Σ e / Σ wᵀĜw per layer (0: output kept; 1: layer removed).
            let layerErrors = update?.layers.compactMap(\.outputError) ?? []
            if !layerErrors.isEmpty { errors[name] = layerErrors.reduce(0, +) / Double(layerErrors.count) }
        }
        let diagonal = "csp, operator activations, warm_start diagonal", obs = "csp, operator activations, warm_start obs"
        for (ours, baseline, baselineName) in [(diagonal + ", swaps 256, restarts 4", diagonal, "the defaults (16 rounds, no restarts here)"),
                                               (diagonal, "wanda", "wanda (mask only)"),
                                               (obs, diagonal, "from warm_start diagonal")] {
            guard let a = errors[ours], let b = errors[baseline] else { continue }
            results.append(Benchmarks.Result(name: "statistics: layers' mean output error left at 80% (\(ours))", ours: a,
                                             baseline: b, unit: "", baselineName: baselineName))
        }
        return results
    }
}
