import CKernels
import Tensors

/// The RNN transducer's own parts, composed into the run configuration beside the encoder's
/// ``AcousticSettings`` (`model.rnnt`).
public struct TransducerSettings: Sendable, Equatable {
    /// Width of the prediction network's label embedding.
    public var predictorEmbedding = 128
    /// Hidden size and layers of the prediction network's LSTM.
    public var predictorHidden = 256
    public var predictorLayers = 1
    /// Width of the joint network (both projections and the tanh).
    public var jointDim = 256
    /// Weight λ of an auxiliary CTC loss on the transcriber's output (training only): the
    /// objective is RNN-T + λ · CTC, through a linear head `transcriber.ctc_linear` that inference
    /// never reads. It teaches the encoder its alignments early, where the transducer alone
    /// waits through a plateau. 0: no head, and the layout is the plain transducer's.
    public var ctcWeight = 0.0
    public init() {}
}

/// An RNN transducer (Graves 2012) trained with ``RNNTLoss``, with torchaudio.models.RNNT's parts
/// and names:
///
///     transcriber  the ``SpeechEncoder`` (conv + (bi)LSTM) → output_linear       f_t (T', J)
///     predictor    embedding of [∅, y_1, ..., y_U] → LSTM → linear               g_u (U+1, J)
///     joiner       z(t, u) = linear(tanh(f_t + g_u))                             (T', U+1, V)
///
/// Label 0 is the blank and also the predictor's start symbol. Tensors: `transcriber.conv.<n>.*`,
/// `transcriber.lstm.weight_ih_l<n>[_reverse]`, ..., `transcriber.output_linear.*`,
/// `predictor.embedding.weight`, `predictor.lstm.*_l<n>`, `predictor.linear.*`, `joiner.linear.*`.
/// Every matrix of the served model is prunable (the embedding too); biases are not, nor is the
/// training-only auxiliary CTC head (`transcriber.ctc_linear`, ``TransducerSettings/ctcWeight``).
public struct TransducerModel: Sendable {
    public let settings: AcousticSettings
    public let transducer: TransducerSettings
    public let layout: ParameterLayout
    let encoder: SpeechEncoder
    let encoderProjection: Linear
    let embedding: TensorSpec          // (V, E)
    let predictor: [LSTMDirection]
    let predictorProjection: Linear
    let joint: Linear                  // (V, J)
    /// The auxiliary CTC head (V, C) when ``TransducerSettings/ctcWeight`` > 0; last in the layout.
    let ctcHead: Linear?

    public init(settings s: AcousticSettings, transducer r: TransducerSettings) {
        settings = s
        transducer = r
        var layout = ParameterLayout()
        encoder = SpeechEncoder(settings: s, prefix: "transcriber.", layout: &layout)
        encoderProjection = Linear(inputs: encoder.outputChannels, outputs: r.jointDim, name: "transcriber.output_linear", layout: &layout)
        embedding = layout.append("predictor.embedding.weight", shape: [s.classes, r.predictorEmbedding], prunable: true)
        var input = r.predictorEmbedding
        var predictor: [LSTMDirection] = []
        for n in 0 ..< r.predictorLayers {
            predictor.append(LSTMDirection(inputSize: input, hidden: r.predictorHidden, reverse: false, name: "predictor.lstm", suffix: "l\(n)", layout: &layout))
            input = r.predictorHidden
        }
        self.predictor = predictor
        predictorProjection = Linear(inputs: input, outputs: r.jointDim, name: "predictor.linear", layout: &layout)
        joint = Linear(inputs: r.jointDim, outputs: s.classes, name: "joiner.linear", layout: &layout)
        ctcHead = r.ctcWeight > 0
            ? Linear(inputs: encoder.outputChannels, outputs: s.classes, name: "transcriber.ctc_linear", prunable: false, layout: &layout)
            : nil
        self.layout = layout
    }

    /// Frames after subsampling for an input of `frames` frames.
    public func outputFrames(_ frames: Int) -> Int { encoder.outputFrames(frames) }

    /// PyTorch's defaults: U(−1/√fan_in, 1/√fan_in) (fan_in = hidden size for LSTM tensors), and
    /// N(0, 1) for the embedding, as nn.Embedding.
    public func initialParameters(seed: UInt64) -> [Float] {
        var p = [Float](repeating: 0, count: layout.totalCount)
        var fanIn = encoder.fanIn
        for d in predictor { for spec in [d.weightIH, d.weightHH, d.biasIH, d.biasHH] { fanIn[spec.name] = d.hidden } }
        for linear in [encoderProjection, predictorProjection, joint] + (ctcHead.map { [$0] } ?? []) {
            fanIn[linear.weight.name] = linear.inputs
            fanIn[linear.bias.name] = linear.inputs
        }
        for spec in layout.tensors {
            var rng = SeededRandom(seed, 0x5254, UInt64(spec.offset))
            if spec.name == embedding.name {
                for i in spec.range { p[i] = rng.nextGaussian() }
                continue
            }
            let bound = 1 / Float(fanIn[spec.name] ?? 1).squareRoot()
            for i in spec.range { p[i] = (2 * rng.nextUnitFloat() - 1) * bound }
        }
        return p
    }

    struct Encoded {
        var encoder: SpeechEncoder.Forward
        var projected: [Float]         // f (T', B, J)
    }

    /// `dropout` is for training only (decoding passes none).
    func encode(_ features: [[Float]], parameters p: UnsafeBufferPointer<Float>, dropout: EncoderDropout? = nil) -> Encoded {
        let e = encoder.forward(SequenceBatch(sequences: features, channels: settings.features), parameters: p, dropout: dropout)
        let rows = e.output.steps * e.output.batch
        return Encoded(encoder: e, projected: encoderProjection.forward(e.output.values, rows: rows, parameters: p))
    }

    struct Predicted {
        var input: SequenceBatch                  // embeddings of [∅, y_1, ..., y_U] (U+1, B, E)
        var layerInputs: [SequenceBatch] = []
        var caches: [LSTMDirection.Cache] = []
        var top: SequenceBatch                    // (U+1, B, P)
        var projected: [Float] = []               // g (U+1, B, J)
    }

    func predict(_ labels: [[Int]], parameters p: UnsafeBufferPointer<Float>) -> Predicted {
        let E = transducer.predictorEmbedding
        let sequences = labels.map { y in
            ([0] + y).flatMap { k in Array(p[embedding.offset + k * E ..< embedding.offset + (k + 1) * E]) }
        }
        let x = SequenceBatch(sequences: sequences, channels: E)
        var f = Predicted(input: x, top: x)
        var h = x
        for d in predictor {
            f.layerInputs.append(h)
            let (y, cache) = d.forward(h, parameters: p)
            f.caches.append(cache)
            h = y
        }
        f.top = h
        f.projected = predictorProjection.forward(h.values, rows: h.steps * h.batch, parameters: p)
        return f
    }

    public struct LossReport: Sendable, Equatable {
        /// Sum of the utterances' objectives: the RNN-T loss, plus λ · CTC with an auxiliary head.
        public var lossSum: Double
        /// Utterances left out: no frame left after subsampling.
        public var infeasible: Int
    }

    /// Writes the gradient of the mean objective (RNN-T, + λ · CTC) over the utterances into `gradient`
    /// (overwriting). `features[b]` is (T_b, F) row-major; `labels[b]` holds classes in 1..<V.
    /// `dropout` (training only) masks the transcriber's LSTM outputs, one key per utterance.
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
        let enc = encode(features, parameters: p, dropout: dropout)
        let pred = predict(labels, parameters: p)
        if !moments.isEmpty { record(enc, pred, into: &moments) }
        let J = transducer.jointDim, frames = enc.encoder.output.lengths
        var dEncoded = [Float](repeating: 0, count: enc.projected.count)     // (T', B, J)
        var dPredicted = [Float](repeating: 0, count: pred.projected.count)  // (U+1, B, J)
        var report = LossReport(lossSum: 0, infeasible: 0)
        for b in 0 ..< B {
            let T = frames[b], N = labels[b].count + 1
            guard T > 0 else { report.infeasible += 1; continue }
            let hidden = jointHidden(enc.projected, batch: B, pred.projected, b: b, frames: T, positions: N)   // (T·N, J)
            if moments.wants("joiner.linear") {
                hidden.withUnsafeBufferPointer { moments.record("joiner.linear", rows: $0, count: T * N, frames: T * N) }
            }
            let logits = joint.forward(hidden, rows: T * N, parameters: p)                                      // (T·N, V)
            let result = logits.withUnsafeBufferPointer { RNNTLoss.loss(logits: $0, frames: T, classes: settings.classes, labels: labels[b]) }
            if result.loss.isNaN { report.lossSum = .nan; continue }
            report.lossSum += result.loss
            let dlogits = result.gradient.map { $0 / Float(B) }
            var dhidden = joint.backward(dlogits, input: hidden, rows: T * N, parameters: p, gradient: g)
            // Through the tanh, then the broadcast sum: f_t gets Σ_u, g_u gets Σ_t.
            for i in 0 ..< dhidden.count { dhidden[i] *= 1 - hidden[i] * hidden[i] }
            for t in 0 ..< T {
                for u in 0 ..< N {
                    let src = (t * N + u) * J, e = (t * B + b) * J, q = (u * B + b) * J
                    for j in 0 ..< J {
                        dEncoded[e + j] += dhidden[src + j]
                        dPredicted[q + j] += dhidden[src + j]
                    }
                }
            }
        }
        // Prediction network, top down; the embedding rows read at each position take its gradient.
        var dh = predictorProjection.backward(dPredicted, input: pred.top.values, rows: pred.top.steps * B, parameters: p, gradient: g)
        for (n, d) in predictor.enumerated().reversed() {
            dh = d.backward(dh, cache: pred.caches[n], parameters: p, gradient: g)
        }
        let E = transducer.predictorEmbedding
        for b in 0 ..< B {
            for (u, k) in ([0] + labels[b]).enumerated() {
                let src = pred.input.offset(u, b)
                for j in 0 ..< E { g[embedding.offset + k * E + j] += dh[src + j] }
            }
        }
        // Transcription network.
        let top = enc.encoder.output
        var dtop = encoderProjection.backward(dEncoded, input: top.values, rows: top.steps * B, parameters: p, gradient: g)
        if let head = ctcHead, report.lossSum.isFinite {
            report.lossSum += auxiliaryCTC(head, top: top, labels: labels, parameters: p, gradient: g, into: &dtop)
        }
        encoder.backward(dtop, forward: enc.encoder, parameters: p, gradient: g)
        return report
    }

    /// tanh(f_t + g_u) for utterance b: (T·N, J), row t·N + u.
    func jointHidden(_ encoded: [Float], batch B: Int, _ predicted: [Float], b: Int, frames T: Int, positions N: Int) -> [Float] {
        let J = transducer.jointDim
        var sum = [Float](repeating: 0, count: T * N * J)
        for t in 0 ..< T {
            for u in 0 ..< N {
                let dst = (t * N + u) * J, e = (t * B + b) * J, q = (u * B + b) * J
                for j in 0 ..< J { sum[dst + j] = encoded[e + j] + predicted[q + j] }
            }
        }
        var hidden = [Float](repeating: 0, count: sum.count)
        csp_tanh(sum, &hidden, sum.count)
        return hidden
    }
}
