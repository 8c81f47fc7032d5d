import Speech
import Tasks

/// Speech to text with a packed model: 16 kHz samples → log-mel features (the same front end
/// and normalisation as `eval`) → logits → CTC decoding (greedy, or prefix beam search).
public struct Recognizer: Sendable {
    public let model: InferenceModel
    public let normalization: FeatureNormalization
    public let vocabulary = Vocabulary.characters
    /// 1: greedy; more: prefix beam search of that width.
    public var beam = 1

    public init(model: InferenceModel, normalization: FeatureNormalization) {
        self.model = model
        self.normalization = normalization
    }

    /// Normalised features (frames, bands) of 16 kHz samples.
    public func features(_ samples: [Float], extractor: LogMelExtractor) -> [Float] {
        var f = extractor.features(samples)
        normalization.apply(&f)
        return f
    }

    /// The text of whole utterances of 16 kHz samples, decoded together.
    public func transcribe(_ utterances: [[Float]], times: inout LayerTimes?) -> [String] {
        let extractor = LogMelExtractor()
        let features = LayerTimes.measure(&times, "features") { utterances.map { self.features($0, extractor: extractor) } }
        let logits = model.logits(features, times: &times)
        return LayerTimes.measure(&times, "decode") { logits.map(decode) }
    }

    public func transcribe(_ samples: [Float]) -> String {
        var times: LayerTimes?
        return transcribe([samples], times: &times)[0]
    }

    /// Text of logits (T', V).
    public func decode(_ logits: [Float]) -> String {
        let V = model.settings.classes
        let classes = beam > 1 ? CTCDecoder.beamSearch(logits, classes: V, beam: beam) : CTCDecoder.greedy(logits, classes: V)
        return vocabulary.decode(classes)
    }
}

/// Streaming recognition of a unidirectional model: samples in as they arrive, the text so far
/// out. Partial texts are greedy; the final one is decoded as `Recognizer.beam` says, from the
/// same logits a whole-file transcription computes.
public struct TranscriptionStream {
    public let recognizer: Recognizer
    var session: StreamingSession
    let extractor = LogMelExtractor()
    var pending: [Float] = []     // samples not yet in a complete frame's hop
    var logits: [Float] = []      // (frames so far, V)
    var greedyClasses: [Int] = []
    var previousClass = -1
    public private(set) var partial = ""

    public init(recognizer: Recognizer) throws(StreamingSession.Refusal) {
        self.recognizer = recognizer
        session = try StreamingSession(model: recognizer.model)
    }

    public var times: LayerTimes? {
        get { session.times }
        set { session.times = newValue }
    }

    /// Takes 16 kHz samples; returns the partial text when it changed.
    public mutating func push(_ samples: [Float]) -> String? {
        pending.append(contentsOf: samples)
        let frames = extractor.frameCount(samples: pending.count)
        guard frames > 0 else { return nil }
        let hop = extractor.settings.hopLength
        let used = Array(pending[0 ..< (frames - 1) * hop + extractor.settings.windowLength])
        let recognizer = self.recognizer, extractor = self.extractor
        let f = LayerTimes.measure(&session.times, "features") { recognizer.features(used, extractor: extractor) }
        pending.removeFirst(frames * hop)
        return absorb(session.push(f))
    }

    /// The end of the audio: the final text.
    public mutating func finish() -> String {
        _ = absorb(session.finish())
        let recognizer = self.recognizer, logits = self.logits
        return LayerTimes.measure(&session.times, "decode") { recognizer.decode(logits) }
    }

    mutating func absorb(_ new: [Float]) -> String? {
        guard !new.isEmpty else { return nil }
        logits += new
        let V = recognizer.model.settings.classes
        // Greedy decoding merges repeats across the chunk boundary: continue from the last frame's class.
        var best = 0
        var emitted: [Int] = []
        var previous = previousClass
        for t in 0 ..< new.count / V {
            best = 0
            for k in 1 ..< V where new[t * V + k] > new[t * V + best] { best = k }
            if best != previous, best != 0 { emitted.append(best) }
            previous = best
        }
        previousClass = previous
        guard !emitted.isEmpty else { return nil }
        greedyClasses += emitted
        partial = recognizer.vocabulary.decode(greedyClasses)
        return partial
    }
}
