import Models
import Tensors

/// The acoustic model packed for inference: the same maths as AcousticModel's forward pass, with
/// each weight matrix in the layout chosen for it (dense, CSR, bitmask rows, N:M or low-rank).
public struct InferenceModel: Sendable {
    public struct Options: Sendable {
        public var layouts: LayoutChoice = .automatic
        /// Columns of the recurrent products (utterances decoded together): the width at which
        /// `automatic` times the recurrent matrices.
        public var batch = 1
        /// Typical frames per input product (a streaming chunk after subsampling, or an utterance).
        public var chunkFrames = 16
        /// Ranks of tensors a low-rank projection factored (`rank/<tensor>` in the checkpoint).
        public var ranks: [String: Int] = [:]
        public init() {}
    }

    /// One packed matrix, for reports.
    public struct Layer: Sendable {
        public let name: String
        public let layout: PackedMatrix.Layout
        public let rows: Int
        public let columns: Int
        public let nonZero: Int
        public let weightBytes: Int
        /// Products of this matrix per output frame (after subsampling): 2 for conv.0, 1 otherwise.
        public let productsPerFrame: Int
    }

    public let settings: AcousticSettings
    let convs: [ConvStage]
    let lstm: [[LSTMStage]]
    let output: PackedMatrix
    let outputBias: [Float]
    public let layers: [Layer]

    public init(model: AcousticModel, parameters p: [Float], options: Options = Options()) {
        let s = model.settings, layout = model.layout
        settings = s
        var layers: [Layer] = []
        func tensor(_ name: String) -> TensorSpec { layout[name]! }
        func pack(_ name: String, n: Int, perFrame: Int = 1) -> PackedMatrix {
            let spec = tensor(name)
            let rows = spec.shape[0], columns = spec.count / rows
            let m = LayoutChooser.pack(Array(p[spec.range]), rows: rows, columns: columns, rank: options.ranks[name],
                                       prunable: spec.prunable, n: n, choice: options.layouts)
            layers.append(Layer(name: name, layout: m.layout, rows: rows, columns: columns, nonZero: m.nonZero,
                                weightBytes: m.weightBytes, productsPerFrame: perFrame))
            return m
        }
        var convs: [ConvStage] = []
        var channels = s.features
        for n in 0 ..< s.convLayers {
            // Conv n runs at 2^(convLayers − 1 − n) times the output frame rate.
            let perFrame = 1 << (s.convLayers - 1 - n)
            let w = pack("conv.\(n).weight", n: options.chunkFrames * perFrame, perFrame: perFrame)
            convs.append(ConvStage(weight: w, bias: Array(p[tensor("conv.\(n).bias").range]), inChannels: channels,
                                   outChannels: s.convChannels, kernel: 3, stride: 2, padding: 1))
            channels = s.convChannels
        }
        var lstm: [[LSTMStage]] = []
        for n in 0 ..< s.lstmLayers {
            var directions: [LSTMStage] = []
            for suffix in s.bidirectional ? ["l\(n)", "l\(n)_reverse"] : ["l\(n)"] {
                let wih = pack("lstm.weight_ih_\(suffix)", n: options.chunkFrames * options.batch)
                let whh = pack("lstm.weight_hh_\(suffix)", n: options.batch)
                let bih = p[tensor("lstm.bias_ih_\(suffix)").range], bhh = p[tensor("lstm.bias_hh_\(suffix)").range]
                directions.append(LSTMStage(inputWeight: wih, recurrentWeight: whh, bias: zip(bih, bhh).map { $0 + $1 },
                                            hidden: s.lstmHidden, reverse: suffix.hasSuffix("_reverse")))
            }
            lstm.append(directions)
        }
        output = pack("output.weight", n: options.chunkFrames * options.batch)
        outputBias = Array(p[tensor("output.bias").range])
        self.convs = convs
        self.lstm = lstm
        self.layers = layers
    }

    /// Bytes of weights one output frame reads (each matrix once per product).
    public var weightBytesPerFrame: Int { layers.reduce(0) { $0 + $1.weightBytes * $1.productsPerFrame } }

    /// Logits (T'_b, V) of whole utterances, `features[b]` (T_b, F) row-major normalised log-mels.
    /// Any model, bidirectional included; the utterances' recurrent products run together.
    public func logits(_ features: [[Float]], times: inout LayerTimes?) -> [[Float]] {
        let B = features.count
        guard B > 0 else { return [] }
        var scratch: [Float] = []
        // Convolutions one utterance at a time, (T'_b, C) time-major each.
        var sequences: [[Float]] = features.map { f in
            var h = f[...]
            for (n, conv) in convs.enumerated() {
                var state = ConvStage.State()
                let out = LayerTimes.measure(&times, "conv.\(n)") { conv.push(h, state: &state, final: true, scratch: &scratch) }
                h = out[...]
            }
            return Array(h)
        }
        var channels = convs.last?.outChannels ?? settings.features
        var lengths = sequences.map { $0.count / channels }
        let T = lengths.max() ?? 0
        for (n, directions) in lstm.enumerated() {
            var outputs: [[Float]] = []
            for d in directions {
                let x = Self.columns(sequences, lengths: lengths, channels: channels, steps: T, reversed: d.reverse)
                var state = d.initialState(batch: B)
                let y = d.run(x, steps: T, state: &state, scratch: &scratch, times: &times, name: "lstm.l\(n)" + (d.reverse ? "_reverse" : ""))
                outputs.append(y)
            }
            // Back to time-major sequences, directions concatenated along channels.
            let H = settings.lstmHidden, width = H * directions.count
            sequences = (0 ..< B).map { b in
                var s = [Float](repeating: 0, count: lengths[b] * width)
                for (i, d) in directions.enumerated() {
                    for t in 0 ..< lengths[b] {
                        let column = (d.reverse ? lengths[b] - 1 - t : t) * B + b
                        for j in 0 ..< H { s[t * width + i * H + j] = outputs[i][j * T * B + column] }
                    }
                }
                return s
            }
            channels = width
        }
        lengths = sequences.map { $0.count / max(1, channels) }
        return sequences.enumerated().map { b, s in
            LayerTimes.measure(&times, "output") { outputLogits(Self.columns([s], lengths: [lengths[b]], channels: channels, steps: lengths[b], reversed: false),
                                                                frames: lengths[b], scratch: &scratch) }
        }
    }

    /// Logits (n, V) of n frames whose top activations are `h` (D, n) feature-major.
    func outputLogits(_ h: [Float], frames n: Int, scratch: inout [Float]) -> [Float] {
        let V = settings.classes
        var y = [Float](repeating: 0, count: V * n)
        for k in 0 ..< V { for t in 0 ..< n { y[k * n + t] = outputBias[k] } }
        h.withUnsafeBufferPointer { h in y.withUnsafeMutableBufferPointer { y in
            output.multiplyAdd(h.baseAddress!, n: n, into: y.baseAddress!, scratch: &scratch)
        } }
        var out = [Float](repeating: 0, count: n * V)
        for k in 0 ..< V { for t in 0 ..< n { out[t * V + k] = y[k * n + t] } }
        return out
    }

    /// Time-major sequences (T_b, C) as feature-major columns (C, T·B), column t·B + b, each
    /// sequence optionally reversed within its length; padding columns are zero.
    static func columns(_ sequences: [[Float]], lengths: [Int], channels C: Int, steps T: Int, reversed: Bool) -> [Float] {
        let B = sequences.count
        var x = [Float](repeating: 0, count: C * T * B)
        for (b, s) in sequences.enumerated() {
            for t in 0 ..< lengths[b] {
                let column = (reversed ? lengths[b] - 1 - t : t) * B + b
                for c in 0 ..< C { x[c * T * B + column] = s[t * C + c] }
            }
        }
        return x
    }
}
