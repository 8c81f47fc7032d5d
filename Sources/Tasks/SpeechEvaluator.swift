import Foundation
import Models
import Speech
import Tensors

/// Transcribes utterances with a trained speech network (CTC or RNN-T) and scores them.
public struct SpeechEvaluator: Sendable {
    public let network: SpeechNetwork
    public let parameters: [Float]
    public let normalization: FeatureNormalization
    public let vocabulary = Vocabulary.characters
    /// 0 or 1: greedy; more: beam search of that width (CTC's prefix search, the transducer's).
    public var beam = 1

    public init(network: SpeechNetwork, parameters: [Float], normalization: FeatureNormalization) {
        precondition(parameters.count == network.layout.totalCount)
        self.network = network
        self.parameters = parameters
        self.normalization = normalization
    }

    /// CTC's acoustic model; nil for a transducer (sparse inference and the ONNX and
    /// safetensors exports know the CTC model only).
    public var model: AcousticModel? {
        if case let .ctc(m) = network { return m }
        return nil
    }

    /// Normalised log-mel features of 16 kHz samples.
    public func features(_ samples: [Float], extractor: LogMelExtractor) -> [Float] {
        var f = extractor.features(samples)
        normalization.apply(&f)
        return f
    }

    /// Transcripts of a batch of feature matrices (frames, bands).
    public func transcribe(features: [[Float]]) -> [String] {
        let decoded = parameters.withUnsafeBufferPointer { network.decode(parameters: $0, features: features, beam: beam) }
        return decoded.map { vocabulary.decode($0) }
    }

    public struct Result: Sendable {
        public var rates = ErrorRates()
        public var audioSeconds = 0.0
        public var computeSeconds = 0.0
        public var skipped: [(file: String, reason: String)] = []
        /// Each scored utterance's counts, in input order (skipped ones left out).
        public var perUtterance: [ErrorRates] = []
        /// Each scored utterance's audio file and decoded text, in input order.
        public var hypotheses: [(audio: String, text: String)] = []
        public var realTimeFactor: Double { audioSeconds > 0 ? computeSeconds / audioSeconds : 0 }
    }

    /// Scores utterances read from audio files, `batch` at a time.
    public func evaluate(_ utterances: [Utterance], batch: Int = 8) -> Result {
        var result = Result()
        let extractor = LogMelExtractor()
        var pending: [(features: [Float], text: String, audio: String)] = []
        func flush() {
            guard !pending.isEmpty else { return }
            let start = ContinuousClock.now
            let hypotheses = transcribe(features: pending.map(\.features))
            let d = ContinuousClock.now - start
            result.computeSeconds += Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
            for (p, h) in zip(pending, hypotheses) {
                var one = ErrorRates()
                one.add(reference: p.text, hypothesis: h)
                result.rates.merge(one)
                result.perUtterance.append(one)
                result.hypotheses.append((p.audio, h))
            }
            pending = []
        }
        for u in utterances {
            do {
                let audio = try AudioFile.read16k(u.audioPath)
                guard extractor.frameCount(samples: audio.samples.count) > 0 else {
                    result.skipped.append((u.audioPath, "shorter than one frame"))
                    continue
                }
                let start = ContinuousClock.now
                let f = features(audio.samples, extractor: extractor)
                let d = ContinuousClock.now - start
                result.computeSeconds += Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
                result.audioSeconds += audio.seconds
                pending.append((f, u.text, u.audioPath))
            } catch {
                result.skipped.append((u.audioPath, error.message))
            }
            if pending.count >= batch { flush() }
        }
        flush()
        return result
    }
}
