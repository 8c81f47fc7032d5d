import Tensors

/// The acoustic model's shape, composed into the run configuration.
public struct AcousticSettings: Sendable, Equatable {
    /// Input features per frame (log-mel bands).
    public var features = 80
    /// Channels of each stride-2 convolution over time (time stride 2^convLayers).
    public var convChannels = 256
    public var convLayers = 2
    public var lstmHidden = 256
    public var lstmLayers = 2
    public var bidirectional = true
    /// Output classes including the CTC blank (index 0).
    public var classes = 29
    public init() {}
}

/// Convolutional subsampling, (bi)LSTM layers and a linear output over characters plus blank,
/// trained with CTC. All parameters in one flat buffer, named as PyTorch names them:
/// `conv.<n>.weight`, `lstm.weight_ih_l<n>[_reverse]`, ..., `output.weight`.
public struct AcousticModel: Sendable {
    public let settings: AcousticSettings
    public let layout: ParameterLayout
    let encoder: SpeechEncoder
    let outputWeight: TensorSpec   // (V, D)
    let outputBias: TensorSpec     // (V)
    var convs: [Conv1D] { encoder.convs }
    var lstm: [[LSTMDirection]] { encoder.lstm }

    public init(settings s: AcousticSettings) {
        settings = s
        var layout = ParameterLayout()
        encoder = SpeechEncoder(settings: s, layout: &layout)
        outputWeight = layout.append("output.weight", shape: [s.classes, encoder.outputChannels], prunable: true)
        outputBias = layout.append("output.bias", shape: [s.classes], prunable: false)
        self.layout = layout
    }

    /// Frames after subsampling for an input of `frames` frames.
    public func outputFrames(_ frames: Int) -> Int { encoder.outputFrames(frames) }

    /// PyTorch's default initialisation: U(−1/√fan_in, 1/√fan_in) for every tensor
    /// (fan_in = hidden size for LSTM tensors).
    public func initialParameters(seed: UInt64) -> [Float] {
        var p = [Float](repeating: 0, count: layout.totalCount)
        var fanIn = encoder.fanIn
        fanIn[outputWeight.name] = outputWeight.shape[1]
        fanIn[outputBias.name] = outputWeight.shape[1]
        for spec in layout.tensors {
            var rng = SeededRandom(seed, 0x4143, UInt64(spec.offset))
            let bound = 1 / Float(fanIn[spec.name] ?? 1).squareRoot()
            for i in spec.range { p[i] = (2 * rng.nextUnitFloat() - 1) * bound }
        }
        return p
    }

    struct Forward {
        var encoder: SpeechEncoder.Forward
        var top: SequenceBatch            // input of the output layer (T', B, D)
        var logits: SequenceBatch         // (T', B, V)
    }

    func forward(_ x: SequenceBatch, parameters p: UnsafeBufferPointer<Float>, dropout: EncoderDropout? = nil) -> Forward {
        let e = encoder.forward(x, parameters: p, dropout: dropout)
        let h = e.output
        var f = Forward(encoder: e, top: h, logits: h)
        var logits = SequenceBatch(zeros: h.steps, batch: h.batch, channels: settings.classes, lengths: h.lengths)
        let rows = h.steps * h.batch
        if rows > 0 {
            h.values.withUnsafeBufferPointer { hv in
                logits.values.withUnsafeMutableBufferPointer { l in
                    VectorMath.gemm(transposeB: true, m: rows, n: settings.classes, k: h.channels, hv.baseAddress!,
                                    p.baseAddress! + outputWeight.offset, l.baseAddress!)
                }
            }
            for r in 0 ..< rows { for k in 0 ..< settings.classes { logits.values[r * settings.classes + k] += p[outputBias.offset + k] } }
        }
        f.logits = logits
        return f
    }

    /// Per-utterance logits (T'_b, V) for decoding.
    public func logits(parameters: UnsafeBufferPointer<Float>, features: [[Float]]) -> [[Float]] {
        let x = SequenceBatch(sequences: features, channels: settings.features)
        let l = forward(x, parameters: parameters).logits
        return (0 ..< l.batch).map { l.sequence($0) }
    }

    public struct LossReport: Sendable, Equatable {
        /// Sum of the CTC losses of the utterances whose labels fit their frames.
        public var lossSum: Double
        /// Utterances too short for their transcript after subsampling (loss and gradient zero).
        public var infeasible: Int
    }

    /// Writes the gradient of the mean CTC loss over the utterances into `gradient` (overwriting).
    /// `features[b]` is (T_b, F) row-major; `labels[b]` holds classes in 1..<V. `dropout`
    /// (training only) masks the encoder's LSTM outputs, one key per utterance.
    public func lossAndGradient(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], labels: [[Int]],
                                gradient g: UnsafeMutableBufferPointer<Float>, dropout: EncoderDropout? = nil) -> LossReport {
        var none = InputMomentRecorder(sites: [])
        return lossAndGradient(parameters: p, features: features, labels: labels, gradient: g, moments: &none, dropout: dropout)
    }

    /// The same, recording the inputs of the sites `moments` asks for (``statisticSites``).
    public func lossAndGradient(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], labels: [[Int]],
                                gradient g: UnsafeMutableBufferPointer<Float>, moments: inout InputMomentRecorder,
                                dropout: EncoderDropout? = nil) -> LossReport {
        precondition(features.count == labels.count && p.count == layout.totalCount && g.count == layout.totalCount)
        g.update(repeating: 0)
        let B = features.count
        guard B > 0 else { return LossReport(lossSum: 0, infeasible: 0) }
        let x = SequenceBatch(sequences: features, channels: settings.features)
        let f = forward(x, parameters: p, dropout: dropout)
        if !moments.isEmpty { record(f, into: &moments) }
        let V = settings.classes, logits = f.logits
        // CTC per utterance; dlogits (T', B, V) of the mean loss.
        var dlogits = [Float](repeating: 0, count: logits.values.count)
        var report = LossReport(lossSum: 0, infeasible: 0)
        for b in 0 ..< B {
            let sequence = logits.sequence(b)
            let result = sequence.withUnsafeBufferPointer { CTC.loss(logits: $0, frames: logits.lengths[b], classes: V, labels: labels[b]) }
            if result.loss.isNaN { report.lossSum = .nan; continue }
            guard result.loss.isFinite else { report.infeasible += 1; continue }
            report.lossSum += result.loss
            for t in 0 ..< logits.lengths[b] {
                let o = logits.offset(t, b)
                for k in 0 ..< V { dlogits[o + k] = result.gradient[t * V + k] / Float(B) }
            }
        }
        // Output layer.
        let top = f.top, rows = top.steps * B, D = top.channels
        var dtop = [Float](repeating: 0, count: top.values.count)
        if rows > 0 {
            for r in 0 ..< rows { for k in 0 ..< V { g[outputBias.offset + k] += dlogits[r * V + k] } }
            dlogits.withUnsafeBufferPointer { dl in
                top.values.withUnsafeBufferPointer { tv in
                    VectorMath.gemm(transposeA: true, m: V, n: D, k: rows, dl.baseAddress!, tv.baseAddress!, beta: 1, g.baseAddress! + outputWeight.offset)
                }
                dtop.withUnsafeMutableBufferPointer { dt in
                    VectorMath.gemm(m: rows, n: D, k: V, dl.baseAddress!, p.baseAddress! + outputWeight.offset, dt.baseAddress!)
                }
            }
        }
        encoder.backward(dtop, forward: f.encoder, parameters: p, gradient: g)
        return report
    }
}
