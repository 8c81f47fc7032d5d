/// A unidirectional model run frame by frame as features arrive: each convolution keeps the few
/// frames its next output needs, each LSTM layer its state, so logits come out a chunk at a
/// time, equal (to float rounding of the products' widths) to the whole utterance's.
public struct StreamingSession: Sendable {
    public enum Refusal: Error, CustomStringConvertible {
        case bidirectional
        public var description: String {
            "this model is bidirectional: its reverse LSTM needs the end of the audio before it can emit anything, so it cannot stream. Transcribe whole files instead, or train a unidirectional model (model.acoustic.bidirectional: false, as in Configs/speech-streaming.yaml)."
        }
    }

    let model: InferenceModel
    var convStates: [ConvStage.State]
    var lstmStates: [LSTMStage.State]
    var scratch: [Float] = []
    /// Output frames (after subsampling) emitted so far.
    public private(set) var frames = 0
    public var times: LayerTimes?

    public init(model: InferenceModel) throws(Refusal) {
        guard !model.settings.bidirectional else { throw .bidirectional }
        self.model = model
        convStates = model.convs.map { _ in ConvStage.State() }
        lstmStates = model.lstm.map { $0[0].initialState(batch: 1) }
    }

    /// Takes normalised feature frames (n, F) time-major; returns the logits (m, V) of the
    /// output frames they completed.
    public mutating func push(_ features: [Float]) -> [Float] { step(features[...], final: false) }

    /// The end of the audio: the logits of the last output frames (the convolutions' padding).
    public mutating func finish() -> [Float] { step([], final: true) }

    mutating func step(_ features: ArraySlice<Float>, final: Bool) -> [Float] {
        var times = self.times
        defer { self.times = times }
        let model = self.model
        var scratch = self.scratch
        defer { self.scratch = scratch }
        var h = features
        for (n, conv) in model.convs.enumerated() {
            var state = convStates[n]
            let out = LayerTimes.measure(&times, "conv.\(n)") { conv.push(h, state: &state, final: final, scratch: &scratch) }
            convStates[n] = state
            h = out[...]
        }
        var channels = model.convs.last?.outChannels ?? model.settings.features
        let m = h.count / channels
        guard m > 0 else { return [] }
        var x = InferenceModel.columns([Array(h)], lengths: [m], channels: channels, steps: m, reversed: false)
        for (n, directions) in model.lstm.enumerated() {
            x = directions[0].run(x, steps: m, state: &lstmStates[n], scratch: &scratch, times: &times, name: "lstm.l\(n)")
            channels = directions[0].hidden
        }
        frames += m
        return LayerTimes.measure(&times, "output") { model.outputLogits(x, frames: m, scratch: &scratch) }
    }
}
