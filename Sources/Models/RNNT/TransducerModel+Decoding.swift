import CKernels
import Tensors

/// Greedy decoding (Graves 2012, §2 without the beam): at each frame, emit the joint network's
/// most likely label and feed it to the prediction network, until it says blank or
/// `maxSymbolsPerFrame` labels came out of that frame; then move to the next frame.
extension TransducerModel {
    /// One prediction-network state: each LSTM layer's h and c, (P) each.
    struct PredictorState {
        var h: [[Float]]
        var c: [[Float]]
        var output: [Float] = []     // g (J) for the last label fed
    }

    /// Label sequences (classes in 1..<V) for a batch of feature matrices (T_b, F).
    public func greedy(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], maxSymbolsPerFrame: Int = 8) -> [[Int]] {
        guard !features.isEmpty else { return [] }
        let enc = encode(features, parameters: p)
        let B = features.count, J = transducer.jointDim, V = settings.classes
        return (0 ..< B).map { b in
            var state = feed(0, to: PredictorState(h: predictor.map { [Float](repeating: 0, count: $0.hidden) },
                                                   c: predictor.map { [Float](repeating: 0, count: $0.hidden) }), parameters: p)
            var labels: [Int] = []
            var sum = [Float](repeating: 0, count: J), hidden = sum
            for t in 0 ..< enc.encoder.output.lengths[b] {
                let f = (t * B + b) * J
                for _ in 0 ..< maxSymbolsPerFrame {
                    for j in 0 ..< J { sum[j] = enc.projected[f + j] + state.output[j] }
                    csp_tanh(sum, &hidden, J)
                    let logits = joint.forward(hidden, rows: 1, parameters: p)
                    var best = 0
                    for k in 1 ..< V where logits[k] > logits[best] { best = k }
                    if best == 0 { break }
                    labels.append(best)
                    state = feed(best, to: state, parameters: p)
                }
            }
            return labels
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
}
