import Models
import Speech
import Tasks

/// Streaming recognition with a unidirectional RNN transducer: the transcriber packed and run
/// frame by frame (a ``StreamingSession`` over ``TransducerModel/transcriberAsAcousticModel(parameters:)``,
/// whose outputs are f_t), the prediction and joint networks greedily on each new frame. The
/// final text is what the training code's greedy decoding of the whole file gives.
public struct TransducerStream: SpeechStream {
    let transducer: TransducerModel
    let parameters: [Float]
    let normalization: FeatureNormalization
    let vocabulary = Vocabulary.characters
    var session: StreamingSession
    var decoder: TransducerModel.GreedyDecoder
    let extractor = LogMelExtractor()
    var pending: [Float] = []     // samples not yet in a complete frame's hop

    public init(model: TransducerModel, parameters: [Float], normalization: FeatureNormalization,
                options: InferenceModel.Options = InferenceModel.Options()) throws(StreamingSession.Refusal) {
        transducer = model
        self.parameters = parameters
        self.normalization = normalization
        let transcriber = model.transcriberAsAcousticModel(parameters: parameters)
        session = try StreamingSession(model: InferenceModel(model: transcriber.model, parameters: transcriber.parameters, options: options))
        decoder = parameters.withUnsafeBufferPointer { TransducerModel.GreedyDecoder(model: model, parameters: $0) }
    }

    /// The packed transcriber's matrices, for reports.
    public var layers: [InferenceModel.Layer] { session.model.layers }

    /// Takes 16 kHz samples; returns the text so far when it changed.
    public mutating func push(_ samples: [Float]) -> String? {
        pending.append(contentsOf: samples)
        let frames = extractor.frameCount(samples: pending.count)
        guard frames > 0 else { return nil }
        let hop = extractor.settings.hopLength
        var f = extractor.features(Array(pending[0 ..< (frames - 1) * hop + extractor.settings.windowLength]))
        normalization.apply(&f)
        pending.removeFirst(frames * hop)
        return absorb(session.push(f))
    }

    /// The end of the audio: the final text.
    public mutating func finish() -> String {
        _ = absorb(session.finish())
        return vocabulary.decode(decoder.labels)
    }

    mutating func absorb(_ encoded: [Float]) -> String? {
        guard !encoded.isEmpty else { return nil }
        let emitted = parameters.withUnsafeBufferPointer { decoder.push(encoded[...], parameters: $0) }
        return emitted ? vocabulary.decode(decoder.labels) : nil
    }
}

/// Audio in as it arrives, text out: CTC's ``TranscriptionStream`` or ``TransducerStream``.
public protocol SpeechStream {
    /// Takes 16 kHz samples; returns the partial text when it changed.
    mutating func push(_ samples: [Float]) -> String?
    /// The end of the audio: the final text.
    mutating func finish() -> String
}

extension TranscriptionStream: SpeechStream {}
