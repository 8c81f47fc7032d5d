import Foundation
import Testing
@testable import Models
@testable import Tensors

/// The second moments of the inputs of the models' linear maps, against sums built by hand.
struct InputMomentTests {
    /// Σ x xᵀ (full) from the packed record of site `i`, times `examples`.
    static func sum(_ record: [Float], sites: [StatisticSite], site i: Int, examples: Int) -> (g: [Float], frames: Float) {
        let layout = ExchangeLayout(parameters: ParameterLayout(), sites: sites)
        let range = layout.recordRange(i)
        let d = sites[i].dimension
        let packed = Array(record[range].prefix(SymmetricMath.packedCount(d)))
        let g = packed.withUnsafeBufferPointer { SymmetricMath.unpackUpper($0, n: d) }.map { $0 * Float(examples) }
        return (g, record[range.upperBound - 1] * Float(examples))
    }

    static func bruteForce(_ rows: [[Float]]) -> [Float] {
        let d = rows.first?.count ?? 0
        var g = [Float](repeating: 0, count: d * d)
        for x in rows { for r in 0 ..< d { for c in 0 ..< d { g[r * d + c] += x[r] * x[c] } } }
        return g
    }

    static func close(_ a: [Float], _ b: [Float], tolerance: Float = 1e-4) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) }
    }

    @Test func mlpRecordsItsFeaturesAndHiddenActivations() throws {
        let task = SyntheticClassification(inputDim: 5, classes: 3, examples: 64, noise: 1, seed: 3)
        let model = MLPClassifier(task: task, hiddenDim: 4)
        let p = model.initialParameters(seed: 2)
        let examples = [0, 3, 7, 20, 41]
        var moments = InputMomentRecorder(sites: model.statisticSites)
        var g = [Float](repeating: 0, count: p.count)
        _ = try p.withUnsafeBufferPointer { pb in
            try g.withUnsafeMutableBufferPointer { try model.lossAndGradient(parameters: pb, examples: examples, epoch: 0, gradient: $0, moments: &moments) }
        }
        let layout = ExchangeLayout(parameters: model.layout, sites: model.statisticSites)
        var record = [Float](repeating: 0, count: layout.statisticsRange.count)
        record.withUnsafeMutableBufferPointer { moments.write(into: $0, examples: examples.count) }
        // By hand: the features, and tanh(w1 x + b1).
        var xs: [[Float]] = [], hs: [[Float]] = []
        let w1 = model.layout["w1"]!, b1 = model.layout["b1"]!
        for e in examples {
            var x = [Float](repeating: 0, count: 5)
            x.withUnsafeMutableBufferPointer { task.features(of: e, into: $0) }
            xs.append(x)
            hs.append((0 ..< 4).map { h in tanhf((0 ..< 5).reduce(p[b1.offset + h]) { $0 + p[w1.offset + h * 5 + $1] * x[$1] }) })
        }
        let inputs = Self.sum(record, sites: model.statisticSites, site: 0, examples: examples.count)
        #expect(Self.close(inputs.g, Self.bruteForce(xs)))
        #expect(inputs.frames == 5)
        let hidden = Self.sum(record, sites: model.statisticSites, site: 1, examples: examples.count)
        #expect(Self.close(hidden.g, Self.bruteForce(hs)))
    }

    func tiny() -> AcousticModel {
        var s = AcousticSettings()
        s.features = 4
        s.convChannels = 3
        s.lstmHidden = 3
        s.lstmLayers = 2
        s.bidirectional = true
        s.classes = 4
        return AcousticModel(settings: s)
    }

    /// conv.0's site against im2col by hand; every site's sums on a padded batch of two
    /// utterances equal the sums of each utterance alone (padding adds nothing).
    @Test func acousticSitesIgnorePaddingAndMatchIm2col() {
        let model = tiny()
        let p = model.initialParameters(seed: 4)
        let sites = model.statisticSites
        #expect(sites.map(\.name) == ["conv.0", "conv.1", "lstm.l0.input", "lstm.l0.recurrent", "lstm.l0_reverse.recurrent",
                                      "lstm.l1.input", "lstm.l1.recurrent", "lstm.l1_reverse.recurrent", "output"])
        #expect(sites[2].tensors == ["lstm.weight_ih_l0", "lstm.weight_ih_l0_reverse"])
        let a = randomValues(9 * 4, seed: 1), b = randomValues(14 * 4, seed: 2)
        func record(_ features: [[Float]], labels: [[Int]]) -> [Float] {
            var moments = InputMomentRecorder(sites: sites)
            var g = [Float](repeating: 0, count: p.count)
            p.withUnsafeBufferPointer { pb in
                g.withUnsafeMutableBufferPointer { _ = model.lossAndGradient(parameters: pb, features: features, labels: labels, gradient: $0, moments: &moments) }
            }
            var out = [Float](repeating: 0, count: ExchangeLayout(parameters: ParameterLayout(), sites: sites).statisticsRange.count)
            out.withUnsafeMutableBufferPointer { moments.write(into: $0, examples: 1) }
            return out
        }
        let both = record([a, b], labels: [[1], [2]])
        let alone = zip(record([a], labels: [[1]]), record([b], labels: [[2]])).map { $0 + $1 }
        #expect(Self.close(both, alone, tolerance: 1e-4))
        // conv.0: kernel 3, stride 2, padding 1 over 4 features: patches [ci·3 + j] = x[2t + j − 1][ci].
        var patches: [[Float]] = []
        for x in [a, b] {
            let frames = x.count / 4, out = (frames + 2 - 3) / 2 + 1
            for t in 0 ..< out {
                var patch = [Float](repeating: 0, count: 12)
                for j in 0 ..< 3 {
                    let s = 2 * t + j - 1
                    guard s >= 0, s < frames else { continue }
                    for ci in 0 ..< 4 { patch[ci * 3 + j] = x[s * 4 + ci] }
                }
                patches.append(patch)
            }
        }
        let conv = Self.sum(both, sites: sites, site: 0, examples: 1)
        #expect(Self.close(conv.g, Self.bruteForce(patches)))
        #expect(Int(conv.frames) == patches.count)
        // The recurrent sites see each step's previous state: one frame fewer than the input per utterance.
        let input = Self.sum(both, sites: sites, site: 2, examples: 1).frames
        let recurrent = Self.sum(both, sites: sites, site: 3, examples: 1).frames
        #expect(recurrent == input - 2)
    }
}
