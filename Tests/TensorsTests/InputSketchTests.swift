import Foundation
import Testing
@testable import Tensors

/// Sketched input statistics (`pruning.operator: activation-sketch`): a micro-batch's record is
/// S X / examples with S (m × frames) of ±1/√m drawn from the micro-batch's key.
struct InputSketchTests {
    let d = 6, m = 4

    func record(_ rows: [[Float]], site: StatisticSite, key: UInt64, examples: Int = 1, calls: Int = 1) -> [Float] {
        var r = InputMomentRecorder(sites: [site], sketchKey: key)
        let per = rows.count / calls
        for c in 0 ..< calls {
            let flat = rows[c * per ..< (c + 1) * per].flatMap { $0 }
            flat.withUnsafeBufferPointer { r.record(site.name, rows: $0, count: per, frames: per) }
        }
        var out = [Float](repeating: 0, count: site.recordCount)
        out.withUnsafeMutableBufferPointer { r.write(into: $0, examples: examples) }
        return out
    }

    func gaussianRows(_ n: Int, seed: UInt64) -> [[Float]] {
        var rng = SeededRandom(seed, 7)
        return (0 ..< n).map { _ in (0 ..< d).map { _ in rng.nextGaussian() } }
    }

    /// The record is S X, then diag Σ x xᵀ: with X = I the recorder returns S itself, entries
    /// ±1/√m; with another X under the same key, exactly that S times X. The frames per example
    /// come last.
    @Test func recordIsTheSignMatrixTimesTheFrames() {
        let site = StatisticSite(name: "x", dimension: d, tensors: ["w"]).sketched(rows: m)
        #expect(site.recordCount == (m + 1) * d + 1)
        let key = InputMomentRecorder.sketchKey(seed: 3, step: 11, microBatch: 0, examples: [4, 9])
        let identity = (0 ..< d).map { i in (0 ..< d).map { Float($0 == i ? 1 : 0) } }
        let s = record(identity, site: site, key: key)  // (m × d): S's first d columns
        let scale = 1 / Float(m).squareRoot()
        #expect(s.prefix(m * d).allSatisfy { abs(abs($0) - scale) < 1e-7 })
        #expect(s.prefix(m * d).contains { $0 > 0 } && s.prefix(m * d).contains { $0 < 0 })
        #expect(Array(s[m * d ..< (m + 1) * d]) == [Float](repeating: 1, count: d))
        #expect(s[(m + 1) * d] == Float(d))
        var rng = SeededRandom(5, 5)
        let x = (0 ..< d).map { _ in (0 ..< d).map { _ in rng.nextGaussian() } }
        let sx = record(x, site: site, key: key, examples: 2)
        for r in 0 ..< m {
            for c in 0 ..< d {
                let want = (0 ..< d).reduce(Float(0)) { $0 + s[r * d + $1] * x[$1][c] } / 2
                #expect(abs(sx[r * d + c] - want) <= 1e-5, "(\(r), \(c))")
            }
        }
        for c in 0 ..< d {
            let want = x.reduce(Float(0)) { $0 + $1[c] * $1[c] } / 2
            #expect(abs(sx[m * d + c] - want) <= 1e-5 * max(1, want), "diagonal \(c)")
        }
        #expect(sx[(m + 1) * d] == Float(d) / 2)
    }

    /// Any worker that computes a micro-batch sends the same sketch: the key names the run's seed,
    /// the step, the micro-batch and its examples, and nothing else; another step, seed, example
    /// set or micro-batch (the same examples twice in a step) draws another S. Padding rows after the frames change nothing.
    @Test func theKeyAloneDecidesTheCombinations() {
        let site = StatisticSite(name: "x", dimension: d, tensors: ["w"]).sketched(rows: m)
        let rows = gaussianRows(12, seed: 1)
        let key = InputMomentRecorder.sketchKey(seed: 1, step: 2, microBatch: 0, examples: [3, 4])
        #expect(record(rows, site: site, key: key) == record(rows, site: site, key: key))
        for other in [InputMomentRecorder.sketchKey(seed: 2, step: 2, microBatch: 0, examples: [3, 4]),
                      InputMomentRecorder.sketchKey(seed: 1, step: 3, microBatch: 0, examples: [3, 4]),
                      InputMomentRecorder.sketchKey(seed: 1, step: 2, microBatch: 0, examples: [3, 5]),
                      InputMomentRecorder.sketchKey(seed: 1, step: 2, microBatch: 0, examples: [4, 3]),
                      InputMomentRecorder.sketchKey(seed: 1, step: 2, microBatch: 1, examples: [3, 4])] {
            #expect(record(rows, site: site, key: other) != record(rows, site: site, key: key))
        }
        let padded = rows + [[Float]](repeating: [Float](repeating: 0, count: d), count: 4)
        var r = InputMomentRecorder(sites: [site], sketchKey: key)
        padded.flatMap { $0 }.withUnsafeBufferPointer { r.record("x", rows: $0, count: padded.count, frames: rows.count) }
        var out = [Float](repeating: 0, count: site.recordCount)
        out.withUnsafeMutableBufferPointer { r.write(into: $0, examples: 1) }
        // The same up to the order of float additions (BLAS sums 16 frames instead of 12).
        #expect(zip(out, record(rows, site: site, key: key)).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
    }

    /// A site whose G is diagonal by construction (the RNN-T's embedding lookup) is never sketched.
    @Test func diagonalSitesStayUnsketched() {
        let lookup = StatisticSite(name: "predictor.embedding", dimension: 5, tensors: ["e"], diagonal: true)
        #expect(lookup.sketched(rows: 2).sketchRows == 0 && lookup.sketched(rows: 2).recordCount == 16)
        #expect(StatisticSite(name: "x", dimension: 5, tensors: ["w"]).sketched(rows: 2).recordCount == 16)
    }

    /// E[(S X)ᵀ(S X)] = Xᵀ X: averaged over 1,600 keys, AᵀA is within 5% (relative Frobenius) of
    /// Σ x xᵀ by brute force, whether a micro-batch's frames come in one record call or three.
    @Test func sketchGramIsUnbiased() {
        let site = StatisticSite(name: "x", dimension: d, tensors: ["w"]).sketched(rows: m)
        let rows = gaussianRows(30, seed: 2)
        var exact = [Double](repeating: 0, count: d * d)
        for x in rows { for i in 0 ..< d { for j in 0 ..< d { exact[i * d + j] += Double(x[i] * x[j]) } } }
        for calls in [1, 3] {
            var mean = [Double](repeating: 0, count: d * d)
            let keys = 1600
            for k in 0 ..< keys {
                let a = record(rows, site: site, key: UInt64(k) &* 7919, calls: calls)
                for i in 0 ..< d { for j in 0 ..< d {
                    var t = 0.0
                    for r in 0 ..< m { t += Double(a[r * d + i]) * Double(a[r * d + j]) }
                    mean[i * d + j] += t / Double(keys)
                } }
            }
            let error = zip(mean, exact).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let norm = exact.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(error / norm < 0.05, "calls \(calls): relative error \(error / norm)")
        }
    }
}
