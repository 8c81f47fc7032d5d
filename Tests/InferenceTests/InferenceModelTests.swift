import Foundation
@testable import Inference
import Models
import Tensors
import Testing

/// The packed model against AcousticModel's own forward pass (the one training and `eval` use),
/// in every layout, bidirectional and not, one utterance and several of different lengths, and
/// streamed in chunks against the whole utterance.
struct InferenceModelTests {
    static func model(bidirectional: Bool) -> AcousticModel {
        var s = AcousticSettings()
        s.features = 12
        s.convChannels = 24
        s.convLayers = 2
        s.lstmHidden = 20
        s.lstmLayers = 2
        s.bidirectional = bidirectional
        s.classes = 7
        return AcousticModel(settings: s)
    }

    /// Initial weights with the prunable tensors (all but conv.0 and output) masked by `mask`.
    static func parameters(_ model: AcousticModel, mask: (TensorSpec, [Float]) -> [Float]) -> [Float] {
        var p = model.initialParameters(seed: 4)
        for spec in model.layout.tensors where spec.prunable && spec.name != "conv.0.weight" && spec.name != "output.weight" {
            p.replaceSubrange(spec.range, with: mask(spec, Array(p[spec.range])))
        }
        return p
    }

    static func utterances(_ lengths: [Int], features: Int) -> [[Float]] {
        lengths.enumerated().map { i, t in PackedMatrixTests.random(t * features, seed: UInt64(50 + i)) }
    }

    static func expectClose(_ a: [[Float]], _ b: [[Float]], _ what: String) {
        #expect(a.map(\.count) == b.map(\.count), "\(what): frame counts")
        let worst = zip(a, b).flatMap { zip($0, $1).map { abs($0 - $1) } }.max() ?? 0
        #expect(worst < 2e-4, "\(what): worst logit difference \(worst)")
    }

    static let layouts: [LayoutChoice] = [.dense, .fixed(.denseTransposed), .fixed(.csr), .fixed(.bitmask), .automatic]

    @Test(arguments: [true, false])
    func everyLayoutGivesTheTrainingModelsLogits(bidirectional: Bool) {
        let model = Self.model(bidirectional: bidirectional)
        let p = Self.parameters(model) { spec, w in
            var rng = SeededRandom(7, 0x4D41, UInt64(spec.offset))
            return w.map { rng.nextUnitFloat() < 0.2 ? $0 : 0 }
        }
        for lengths in [[37], [37, 16, 29]] {
            let x = Self.utterances(lengths, features: 12)
            let expected = p.withUnsafeBufferPointer { model.logits(parameters: $0, features: x) }
            for choice in Self.layouts {
                var options = InferenceModel.Options()
                options.layouts = choice
                options.batch = lengths.count
                let packed = InferenceModel(model: model, parameters: p, options: options)
                var times: LayerTimes?
                Self.expectClose(packed.logits(x, times: &times), expected, "\(choice), lengths \(lengths)")
            }
        }
    }

    @Test(arguments: [(2, 4), (1, 10)])
    func nmModelGivesTheTrainingModelsLogits(keep: Int, group: Int) {
        let model = Self.model(bidirectional: false)
        let p = Self.parameters(model) { spec, w in
            PackedMatrixTests.structured(rows: spec.shape[0], columns: spec.count / spec.shape[0], keep: keep, group: group, seed: UInt64(spec.offset))
                .enumerated().map { $1 != 0 ? w[$0] : 0 }
        }
        let x = Self.utterances([41], features: 12)
        let expected = p.withUnsafeBufferPointer { model.logits(parameters: $0, features: x) }
        var options = InferenceModel.Options()
        options.layouts = .fixed(.nm(keep: keep, group: group))
        let packed = InferenceModel(model: model, parameters: p, options: options)
        #expect(packed.layers.filter { $0.layout == .nm(keep: keep, group: group) }.count == 5)  // conv.1, 2 × (ih, hh)
        var times: LayerTimes?
        Self.expectClose(packed.logits(x, times: &times), expected, "\(keep):\(group)")
    }

    @Test func lowRankModelGivesTheTrainingModelsLogits() {
        let model = Self.model(bidirectional: true)
        var ranks: [String: Int] = [:]
        let p = Self.parameters(model) { spec, w in
            let rows = spec.shape[0], columns = spec.count / rows
            ranks[spec.name] = 3
            var out = [Float](repeating: 0, count: w.count)
            let svd = w.withUnsafeBufferPointer { SVD($0, rows: rows, columns: columns)! }
            out.withUnsafeMutableBufferPointer { svd.truncated(3, into: $0) }
            return out
        }
        let x = Self.utterances([33, 20], features: 12)
        let expected = p.withUnsafeBufferPointer { model.logits(parameters: $0, features: x) }
        for choice in [LayoutChoice.fixed(.lowRank(rank: 3)), .automatic] {
            var options = InferenceModel.Options()
            options.layouts = choice
            options.ranks = ranks
            let packed = InferenceModel(model: model, parameters: p, options: options)
            if choice != .automatic { #expect(packed.layers.filter { $0.layout == .lowRank(rank: 3) }.count == 9) }
            var times: LayerTimes?
            Self.expectClose(packed.logits(x, times: &times), expected, "\(choice)")
        }
    }

    @Test(arguments: [1, 3, 7, 64])
    func streamingInChunksGivesTheWholeUtterancesLogits(chunk: Int) throws {
        let model = Self.model(bidirectional: false)
        let p = Self.parameters(model) { _, w in w.enumerated().map { $0.offset % 3 == 0 ? $0.element : 0 } }
        var options = InferenceModel.Options()
        options.layouts = .fixed(.csr)
        let packed = InferenceModel(model: model, parameters: p, options: options)
        for frames in [45, 46, 3, 1] {
            let x = Self.utterances([frames], features: 12)[0]
            var times: LayerTimes?
            let whole = packed.logits([x], times: &times)[0]
            var session = try StreamingSession(model: packed)
            var streamed: [Float] = []
            var start = 0
            while start < frames {
                let end = min(frames, start + chunk)
                streamed += session.push(Array(x[start * 12 ..< end * 12]))
                start = end
            }
            streamed += session.finish()
            #expect(session.frames == model.outputFrames(frames))
            Self.expectClose([streamed], [whole], "chunks of \(chunk), \(frames) frames")
        }
    }

    @Test func aBidirectionalModelCannotStream() {
        let packed = InferenceModel(model: Self.model(bidirectional: true), parameters: Self.model(bidirectional: true).initialParameters(seed: 1))
        #expect(throws: StreamingSession.Refusal.self) { _ = try StreamingSession(model: packed) }
        #expect("\(StreamingSession.Refusal.bidirectional)".contains("bidirectional"))
    }
}
