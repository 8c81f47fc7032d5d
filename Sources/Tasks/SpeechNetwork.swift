import Models
import Speech
import Tensors

/// The network a speech run trains: CTC's acoustic model or the RNN transducer, both over the
/// same encoder and the same character vocabulary (`model.kind: ctc | rnnt`).
public enum SpeechNetwork: Sendable {
    case ctc(AcousticModel)
    case rnnt(TransducerModel)

    /// The network `model` describes, with the vocabulary's class count.
    public init(model: ModelSettings) throws {
        var acoustic = model.acoustic
        acoustic.classes = Vocabulary.characters.classes
        switch model.kind {
        case .ctc: self = .ctc(AcousticModel(settings: acoustic))
        case .rnnt: self = .rnnt(TransducerModel(settings: acoustic, transducer: model.rnnt))
        case .mlp, .loadtest: throw TaskError("model.kind \(model.kind.rawValue) is not a speech model: use ctc or rnnt")
        }
    }

    /// The encoder's shape (features, subsampling, LSTM sizes) and the class count.
    public var settings: AcousticSettings {
        switch self {
        case let .ctc(m): m.settings
        case let .rnnt(m): m.settings
        }
    }

    public var layout: ParameterLayout {
        switch self {
        case let .ctc(m): m.layout
        case let .rnnt(m): m.layout
        }
    }

    public func initialParameters(seed: UInt64) -> [Float] {
        switch self {
        case let .ctc(m): m.initialParameters(seed: seed)
        case let .rnnt(m): m.initialParameters(seed: seed)
        }
    }

    /// The linear maps whose inputs the network can measure: every weight matrix of either.
    public var statisticSites: [StatisticSite] {
        switch self {
        case let .ctc(m): m.statisticSites
        case let .rnnt(m): m.statisticSites
        }
    }

    /// Writes the gradient of the mean loss into `gradient`; returns the summed loss. `dropout`
    /// (training only) masks the encoder's LSTM outputs.
    public func lossAndGradient(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], labels: [[Int]],
                                gradient g: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder,
                                dropout: EncoderDropout? = nil) -> Double {
        switch self {
        case let .ctc(m):
            return m.lossAndGradient(parameters: p, features: features, labels: labels, gradient: g, moments: &moments, dropout: dropout).lossSum
        case let .rnnt(m):
            return m.lossAndGradient(parameters: p, features: features, labels: labels, gradient: g, moments: &moments, dropout: dropout).lossSum
        }
    }

    /// Class sequences (1..<V) for a batch of normalised feature matrices: greedy, or for `beam`
    /// above 1 CTC's prefix beam search or the transducer's beam search of that width.
    public func decode(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], beam: Int = 1) -> [[Int]] {
        switch self {
        case let .ctc(m):
            let V = m.settings.classes
            return m.logits(parameters: p, features: features).map { l in
                beam > 1 ? CTCDecoder.beamSearch(l, classes: V, beam: beam) : CTCDecoder.greedy(l, classes: V)
            }
        case let .rnnt(m):
            return beam > 1 ? m.beamSearch(parameters: p, features: features, beam: beam) : m.greedy(parameters: p, features: features)
        }
    }
}
