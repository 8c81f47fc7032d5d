import Foundation
import Models
import Speech
import Tensors

/// A speech network (CTC's acoustic model or the RNN transducer) trained on prepared speech
/// shards: what a worker computes for a micro-batch of example indices.
///
/// Per example: 16 kHz audio from the shards → waveform augmentation → 80-band log-mel →
/// global mean/variance normalisation (statistics from the training shards) → SpecAugment →
/// the network, with dropout on the encoder's LSTM outputs (`model.dropout`).
/// All random draws are keyed by (seed, epoch, example), so any worker computes the same thing.
public struct SpeechTask: TrainableModel {
    public let model: SpeechNetwork
    public let train: ShardSet
    public let augmentation: AugmentationSettings
    public let seed: UInt64
    /// `model.dropout`: probability of dropping an encoder LSTM output unit while training.
    public let dropout: Float
    public let vocabulary = Vocabulary.characters
    public let normalization: FeatureNormalization
    /// Validation shard sets by name: "valid" and "valid_channel" (held-out voices), "valid_seen"
    /// (training voices).
    public let validation: [String: ShardSet]

    public init(model settings: ModelSettings, data: DataSettings, augmentation: AugmentationSettings, seed: UInt64) throws {
        guard !data.train.isEmpty else {
            throw TaskError("data.train is empty: give the folder of prepared training shards (csptrain data prepare)")
        }
        train = try ShardSet(folder: data.train)
        guard train.count > 0 else {
            throw TaskError("\(data.train) holds no examples (were all files skipped when it was prepared? see its shards.json)")
        }
        model = try SpeechNetwork(model: settings)
        let s = model.settings
        guard train.index.featureMean.count == s.features else {
            throw TaskError("\(data.train)/shards.json has statistics for \(train.index.featureMean.count) bands, the model expects model.acoustic.features = \(s.features)")
        }
        guard train.index.featureStd.count == s.features,
              train.index.featureStd.allSatisfy({ $0.isFinite && $0 > 0 }), train.index.featureMean.allSatisfy(\.isFinite) else {
            throw TaskError("\(data.train)/shards.json: feature_mean/feature_std must hold \(s.features) finite values, the deviations positive")
        }
        normalization = FeatureNormalization(mean: train.index.featureMean, std: train.index.featureStd)
        self.augmentation = augmentation
        self.seed = seed
        guard settings.dropout >= 0 && settings.dropout < 1 else {
            throw TaskError("model.dropout is \(settings.dropout): it must be in [0, 1)")
        }
        dropout = Float(settings.dropout)
        var validation: [String: ShardSet] = [:]
        for (name, folder) in [("valid", data.valid), ("valid_channel", data.validChannel), ("valid_seen", data.validSeen)] where !folder.isEmpty {
            validation[name] = try ShardSet(folder: folder)
        }
        self.validation = validation
    }

    public var evaluationSets: [String: Int] { validation.mapValues(\.count) }

    public func evaluate(parameters: UnsafeBufferPointer<Float>, set: String, examples: [Int]) throws -> EvaluationCounts {
        guard let shards = validation[set] else { throw TaskError("no validation set '\(set)' (data.valid, data.valid_channel, data.valid_seen)") }
        let extractor = LogMelExtractor()
        var features: [[Float]] = [], references: [String] = []
        for example in examples {
            guard let (samples, text) = try? shards.example(example) else { continue }
            var f = extractor.features(samples)
            normalization.apply(&f)
            features.append(f)
            references.append(text)
        }
        let decoded = model.decode(parameters: parameters, features: features)
        var rates = ErrorRates()
        for (classes, reference) in zip(decoded, references) {
            rates.add(reference: reference, hypothesis: vocabulary.decode(classes))
        }
        return EvaluationCounts(wordEdits: rates.wordEdits, words: rates.words, characterEdits: rates.characterEdits,
                                characters: rates.characters, utterances: rates.utterances)
    }

    public var layout: ParameterLayout { model.layout }
    public var trainingExamples: Int { train.count }
    public var exampleCosts: [Int]? { train.recordSizes }
    public var dataFingerprint: String {
        (["train=" + train.fingerprint] + validation.keys.sorted().map { "\($0)=" + validation[$0]!.fingerprint }).joined(separator: " ")
    }

    public var trainingDataFingerprint: String { train.fingerprint }

    public func initialParameters(seed: UInt64) -> [Float] { model.initialParameters(seed: seed) }

    public var checkpointRecords: [(name: String, values: [Float])] {
        [("feature_mean", normalization.mean), ("feature_std", normalization.std)]
    }

    public var statisticSites: [StatisticSite] { model.statisticSites }

    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>) throws -> Double {
        var none = InputMomentRecorder(sites: [])
        return try lossAndGradient(parameters: parameters, examples: examples, epoch: epoch, gradient: gradient, moments: &none)
    }

    public func lossAndGradient(parameters: UnsafeBufferPointer<Float>, examples: [Int], epoch: Int,
                                gradient: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder) throws -> Double {
        let extractor = LogMelExtractor()
        var features: [[Float]] = [], labels: [[Int]] = [], dropoutKeys: [UInt64] = []
        for example in examples {
            // A damaged record must not take the worker (and, reassigned, every other worker) down:
            // it is left out of the micro-batch, as an utterance too short for its transcript is.
            guard let (samples, text) = try? train.example(example) else { continue }
            var rng = SeededRandom(seed, Purpose.augmentation, UInt64(epoch), UInt64(example))
            let audio = augmentation.apply(samples, sampleRate: 16_000, rng: &rng) { r in
                try? train.example(Int(r.next() % UInt64(train.count))).samples
            }
            var f = extractor.features(audio)
            normalization.apply(&f)
            augmentation.mask(&f, bands: model.settings.features, rng: &rng)
            features.append(f)
            labels.append(vocabulary.encode(text))
            dropoutKeys.append(EncoderDropout.key(seed: seed, epoch: epoch, example: example))
        }
        let masks = dropout > 0 ? EncoderDropout(probability: dropout, keys: dropoutKeys) : nil
        return model.lossAndGradient(parameters: parameters, features: features, labels: labels, gradient: gradient,
                                     moments: &moments, dropout: masks)
    }

    enum Purpose {
        static let augmentation: UInt64 = 0x4155_47
    }
}

/// Global per-band mean/variance normalisation of log-mel features.
public struct FeatureNormalization: Sendable, Equatable {
    public let mean: [Float]
    public let std: [Float]

    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    /// (frames, bands) in place.
    public func apply(_ features: inout [Float]) {
        let bands = mean.count
        guard bands > 0 else { return }
        for i in 0 ..< features.count {
            let b = i % bands
            features[i] = (features[i] - mean[b]) / std[b]
        }
    }
}
