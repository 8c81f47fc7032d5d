import Foundation
import CompressedSensing
import Models
import Pruning
import Tensors

/// Sensing through a sketch of the layers' inputs (`pruning.operator: activation-sketch`;
/// Sources/Pruning/README.md, "Sketch"), on the reference speech model with the LSTM and the
/// second convolution pruned, from the same forward passes:
///   - for m/d from 1/16 to 1: the output error the rows recovered from the sketch leave at 80%,
///     measured under the full G, against the rows recovered from the full G (the floor) and
///     against magnitude pruning's mask (what knowing nothing of the inputs gives) and against
///     rows recovered from diag G alone (d values per input: what the sketch adds to it);
///   - the values a micro-batch sends per site, against the packed Σ x xᵀ;
///   - a worker's micro-batch with the sketches, against the same with the full second moments.
public enum SketchBenchmark {
    public static let ratios = [1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0 / 2, 1]

    public static func run(utterances: Int = 8, frames: Int = 300, seed: UInt64 = 1) throws -> [Benchmarks.Result] {
        var reference = ReferenceSpeechInputs(seed: seed)
        let model = reference.model, layout = reference.layout, parameters = reference.parameters
        let pruning = reference.pruning(.csp, measuredBy: .activations)
        let full = pruning.statisticSites(layout: layout, available: model.statisticSites)
        var fullStatistics = InputStatistics(sites: full)
        var sketched = ratios.map { r in
            InputStatistics(sites: full.map { $0.sketched(rows: Measurements.ratio(r).sketchRows(dimension: $0.dimension)) })
        }
        var seconds = [Double](repeating: .infinity, count: ratios.count + 1)
        // Micro-batches of random features until every site has 8·d frames (the window's floor).
        var rng = SeededRandom(seed, 0x534B)
        var batch = 0
        while !full.indices.allSatisfy({ fullStatistics.isReady($0) }) {
            let micro = reference.randomBatch(utterances: utterances, frames: frames, rng: &rng)
            let key = InputMomentRecorder.sketchKey(seed: seed, step: UInt64(batch), microBatch: 0, examples: [batch])
            for (j, sites) in ([full] + sketched.map(\.sites)).enumerated() {
                var recorder = InputMomentRecorder(sites: sites, sketchKey: key)
                var elapsed = reference.microBatch(micro, moments: &recorder)
                let start = ContinuousClock.now
                var record = [Float](repeating: 0, count: ExchangeLayout(parameters: ParameterLayout(), sites: sites).statisticsRange.count)
                record.withUnsafeMutableBufferPointer { recorder.write(into: $0, examples: utterances) }
                elapsed += (ContinuousClock.now - start).seconds
                seconds[j] = min(seconds[j], elapsed)
                record.withUnsafeBufferPointer { j == 0 ? fullStatistics.add($0, examples: utterances) : sketched[j - 1].add($0, examples: utterances) }
            }
            batch += 1
        }
        // Each pruned tensor's rows at 80%, recovered from G or a sketch, scored under the full Ĝ.
        let layers = PrunedLayers(layout: layout, exclude: pruning.exclude)
        var errors = [Double](repeating: 0, count: ratios.count), floor = 0.0, magnitude = 0.0, diagonalOnly = 0.0
        for spec in layers.tensors {
            guard let site = fullStatistics.site(of: spec.name) else { continue }
            let d = full[site].dimension, rows = spec.count / d
            let keep = [Int](repeating: Int((0.2 * Double(d)).rounded()), count: rows)
            func regression(_ g: [Float]) -> RowSparseRegression {
                RowSparseRegression(secondMoment: g, dimension: d, damping: pruning.damping, solver: .niht, iterations: 10,
                                    warmStart: .diagonal, swaps: pruning.swaps, restarts: .count(0))
            }
            let truth = regression(fullStatistics.secondMoment(site))
            let w = Array(parameters[spec.range])
            w.withUnsafeBufferPointer { w in
                let best = truth.solve(w, rows: rows, keep: keep)
                let energy = best.denseEnergy
                floor += best.outputError / energy
                var top = [UInt8](repeating: 0, count: w.count)
                let values = Array(w)
                for r in 0 ..< rows { SparseRecovery.topK(values, offset: r * d, count: d, k: keep[r], into: &top) }
                let masked = (0 ..< w.count).map { top[$0] != 0 ? w[$0] : 0 }
                magnitude += truth.rowErrors(masked, w, rows: rows).reduce(0, +) / energy
                let g = fullStatistics.diagonal(site)
                var diagonal = [Float](repeating: 0, count: d * d)
                for i in 0 ..< d { diagonal[i * d + i] = g[i] }
                let fromDiagonal = regression(diagonal).solve(w, rows: rows, keep: keep)
                diagonalOnly += truth.rowErrors(fromDiagonal.values, w, rows: rows).reduce(0, +) / energy
                for (j, statistics) in sketched.enumerated() {
                    let found = regression(statistics.secondMoment(site)).solve(w, rows: rows, keep: keep)
                    errors[j] += truth.rowErrors(found.values, w, rows: rows).reduce(0, +) / energy
                }
            }
        }
        let n = Double(layers.tensors.count)
        var results: [Benchmarks.Result] = []
        for (j, r) in ratios.enumerated() {
            let label = r < 1 ? "m/d = 1/\(Int((1 / r).rounded()))" : "m/d = 1"
            results.append(Benchmarks.Result(name: "sketch: layers' mean output error at 80% from a sketch, \(label)", ours: errors[j] / n,
                                             baseline: floor / n, unit: "", baselineName: "from the full G (the floor)"))
            results.append(Benchmarks.Result(name: "sketch: layers' mean output error at 80% from a sketch, \(label)", ours: errors[j] / n,
                                             baseline: magnitude / n, unit: "", baselineName: "magnitude pruning's mask, under the same G"))
            results.append(Benchmarks.Result(name: "sketch: layers' mean output error at 80% from a sketch, \(label)", ours: errors[j] / n,
                                             baseline: diagonalOnly / n, unit: "", baselineName: "from diag G alone (d values per input)"))
            let values = sketched[j].sites.reduce(0) { $0 + $1.recordCount }
            results.append(Benchmarks.Result(name: "sketch: values a micro-batch sends for the inputs, \(label)", ours: Double(values),
                                             baseline: Double(full.reduce(0) { $0 + $1.recordCount }), unit: "", baselineName: "the packed Σ x xᵀ"))
            results.append(Benchmarks.Result(name: "sketch: a worker's micro-batch with the sketches, \(label)", ours: seconds[j + 1],
                                             baseline: seconds[0], unit: "s", baselineName: "with the full second moments"))
        }
        return results
    }
}
