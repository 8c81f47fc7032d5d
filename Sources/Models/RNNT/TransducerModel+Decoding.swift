import CKernels
import Tensors

/// Greedy decoding (Graves 2012, §2 without the beam): at each frame, emit the joint network's
/// most likely label and feed it to the prediction network, until it says blank or
/// `maxSymbolsPerFrame` labels came out of that frame; then move to the next frame.
extension TransducerModel {
    /// One prediction-network state: each LSTM layer's h and c, (P) each.
    struct PredictorState: Sendable {
        var h: [[Float]]
        var c: [[Float]]
        var output: [Float] = []     // g (J) for the last label fed
    }

    /// Greedy decoding of one utterance, a frame at a time: takes the transcriber's outputs f_t
    /// as they come (whole files, or a stream), keeps the prediction network's state between.
    public struct GreedyDecoder: Sendable {
        let model: TransducerModel
        var state: PredictorState
        public let maxSymbolsPerFrame: Int
        /// Labels (1..<V) so far.
        public private(set) var labels: [Int] = []

        public init(model: TransducerModel, parameters p: UnsafeBufferPointer<Float>, maxSymbolsPerFrame: Int = 64) {
            self.model = model
            self.maxSymbolsPerFrame = maxSymbolsPerFrame
            let zeros = model.predictor.map { [Float](repeating: 0, count: $0.hidden) }
            state = model.feed(0, to: PredictorState(h: zeros, c: zeros), parameters: p)
        }

        /// Consumes encoded frames f (m, J), the transcriber's output_linear outputs; returns
        /// whether any label came out.
        @discardableResult
        public mutating func push(_ encoded: ArraySlice<Float>, parameters p: UnsafeBufferPointer<Float>) -> Bool {
            let J = model.transducer.jointDim, V = model.settings.classes
            precondition(encoded.count % J == 0)
            let before = labels.count
            var sum = [Float](repeating: 0, count: J), hidden = sum
            var f = encoded.startIndex
            while f < encoded.endIndex {
                for _ in 0 ..< maxSymbolsPerFrame {
                    for j in 0 ..< J { sum[j] = encoded[f + j] + state.output[j] }
                    csp_tanh(sum, &hidden, J)
                    let logits = model.joint.forward(hidden, rows: 1, parameters: p)
                    var best = 0
                    for k in 1 ..< V where logits[k] > logits[best] { best = k }
                    if best == 0 { break }
                    labels.append(best)
                    state = model.feed(best, to: state, parameters: p)
                }
                f += J
            }
            return labels.count > before
        }
    }

    /// Label sequences (classes in 1..<V) for a batch of feature matrices (T_b, F).
    public func greedy(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], maxSymbolsPerFrame: Int = 64) -> [[Int]] {
        guard !features.isEmpty else { return [] }
        let enc = encode(features, parameters: p)
        let B = features.count, J = transducer.jointDim
        return (0 ..< B).map { b in
            var decoder = GreedyDecoder(model: self, parameters: p, maxSymbolsPerFrame: maxSymbolsPerFrame)
            for t in 0 ..< enc.encoder.output.lengths[b] {
                decoder.push(enc.projected[(t * B + b) * J ..< (t * B + b + 1) * J], parameters: p)
            }
            return decoder.labels
        }
    }

    /// The prediction network one label further: embedding, each LSTM layer one step, projection.
    func feed(_ label: Int, to state: PredictorState, parameters p: UnsafeBufferPointer<Float>) -> PredictorState {
        let E = transducer.predictorEmbedding
        var x = Array(p[embedding.offset + label * E ..< embedding.offset + (label + 1) * E])
        var next = state
        for (n, d) in predictor.enumerated() {
            let H = d.hidden, G = 4 * H
            // a = W_ih x + W_hh h_{t−1}  (4H); the cell kernel adds b_ih + b_hh and activates.
            var a = [Float](repeating: 0, count: G)
            x.withUnsafeBufferPointer { xv in
                a.withUnsafeMutableBufferPointer { av in
                    VectorMath.gemm(transposeB: true, m: 1, n: G, k: d.inputSize, xv.baseAddress!, p.baseAddress! + d.weightIH.offset, av.baseAddress!)
                    state.h[n].withUnsafeBufferPointer { hv in
                        VectorMath.gemm(transposeB: true, m: 1, n: G, k: H, hv.baseAddress!, p.baseAddress! + d.weightHH.offset,
                                        beta: 1, av.baseAddress!)
                    }
                }
            }
            let bias = (0 ..< G).map { p[d.biasIH.offset + $0] + p[d.biasHH.offset + $0] }
            var c = [Float](repeating: 0, count: H), tc = c, h = c
            csp_lstm_cell_forward(&a, bias, state.c[n], &c, &tc, &h, 1, H)
            next.h[n] = h
            next.c[n] = c
            x = h
        }
        next.output = predictorProjection.forward(x, rows: 1, parameters: p)
        return next
    }

    /// The transcriber as CTC's acoustic model with `jointDim` outputs: its logits are the
    /// transcriber's f_t. Sparse inference (the Inference module packs acoustic models, whole
    /// files or streamed) runs the transcriber through it.
    public func transcriberAsAcousticModel(parameters p: [Float]) -> (model: AcousticModel, parameters: [Float]) {
        var s = settings
        s.classes = transducer.jointDim
        let acoustic = AcousticModel(settings: s)
        var q = [Float](repeating: 0, count: acoustic.layout.totalCount)
        for spec in acoustic.layout.tensors {
            let name = spec.name.hasPrefix("output.") ? "transcriber.output_linear." + spec.name.dropFirst("output.".count) : "transcriber." + spec.name
            guard let source = layout[name], source.shape == spec.shape else { preconditionFailure("no transcriber tensor \(name) of shape \(spec.shape)") }
            q.replaceSubrange(spec.range, with: p[source.range])
        }
        return (acoustic, q)
    }
}
