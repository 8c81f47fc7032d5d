import Foundation
@testable import Inference
@testable import Models
import Speech
import Tasks
import Tensors
import Testing

/// The streamed transducer (packed transcriber, greedy search frame by frame) against the
/// training code's dense forward pass and greedy search over the whole utterance.
struct TransducerStreamTests {
    static func model() -> TransducerModel {
        var s = AcousticSettings()
        s.convChannels = 8
        s.lstmHidden = 8
        s.lstmLayers = 2
        s.bidirectional = false
        s.classes = Vocabulary.characters.classes
        var r = TransducerSettings()
        r.predictorEmbedding = 6
        r.predictorHidden = 8
        r.jointDim = 8
        return TransducerModel(settings: s, transducer: r)
    }

    @Test func transcriberAsAcousticModelGivesTheEncodersOutputs() {
        let model = Self.model()
        let p = model.initialParameters(seed: 2)
        let features = InferenceModelTests.utterances([37, 20], features: 80)
        let (acoustic, q) = model.transcriberAsAcousticModel(parameters: p)
        let logits = q.withUnsafeBufferPointer { acoustic.logits(parameters: $0, features: features) }
        let encoded = p.withUnsafeBufferPointer { model.encode(features, parameters: $0) }
        let J = model.transducer.jointDim, B = features.count
        var expected: [[Float]] = []
        for b in 0 ..< B {
            var rows: [Float] = []
            for t in 0 ..< encoded.encoder.output.lengths[b] {
                let start = (t * B + b) * J
                rows += encoded.projected[start ..< start + J]
            }
            expected.append(rows)
        }
        InferenceModelTests.expectClose(logits, expected, "transcriber")
    }

    /// 1.2 s of a chirp with noise, pushed 100 ms at a time, at blank biases bisected between
    /// "a label at every decision" and "blank at once" until the text mixes both.
    @Test func streamingGivesTheWholeUtterancesGreedyText() throws {
        let model = Self.model()
        let start = model.initialParameters(seed: 5)
        var rng = SeededRandom(9)
        let samples = (0 ..< 19_200).map { i -> Float in
            let t = Float(i) / 16_000
            return 0.3 * sin(2 * Float.pi * (200 + 800 * t) * t) + 0.05 * rng.nextGaussian()
        }
        let normalization = FeatureNormalization(mean: [Float](repeating: -6, count: 80), std: [Float](repeating: 3, count: 80))
        var features = LogMelExtractor().features(samples)
        normalization.apply(&features)
        let most = 64 * model.outputFrames(features.count / 80)   // greedy decoding's default cap of labels per frame
        let bias = model.layout["joiner.linear.bias"]!.offset
        /// Characters of the text at this blank bias, after checking the stream against the whole file.
        func decode(_ shift: Float) throws -> Int {
            var p = start
            p[bias] += shift
            let whole = Vocabulary.characters.decode(p.withUnsafeBufferPointer { model.greedy(parameters: $0, features: [features]) }[0])
            var stream = try TransducerStream(model: model, parameters: p, normalization: normalization)
            for chunk in stride(from: 0, to: samples.count, by: 1600) {
                _ = stream.push(Array(samples[chunk ..< min(samples.count, chunk + 1600)]))
            }
            #expect(stream.finish() == whole, "blank bias shift \(shift)")
            return whole.count
        }
        var low: Float = -20, high: Float = 20
        #expect(try decode(low) == most && decode(high) == 0)
        var mixed = false
        for _ in 0 ..< 30 where !mixed {
            let middle = (low + high) / 2, count = try decode(middle)
            mixed = count > 0 && count < most
            if count == most { low = middle } else { high = middle }
        }
        #expect(mixed, "no blank bias gave a mix of labels and blanks")
    }
}
