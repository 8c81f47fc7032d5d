import Tensors

/// The transducer's tensors under torchaudio.models.RNNT's names, for `checkpoint export`.
///
/// torchaudio's RNNT is made of `transcriber`, `predictor` and `joiner`. Ours keep their names
/// where the parts are the same: `transcriber.output_linear`, `predictor.embedding`,
/// `predictor.linear` and `joiner.linear` (applied to tanh(f + g)). The transcriber's
/// convolutions and LSTM are torch.nn's Conv1d and LSTM (`transcriber.conv.<n>.*`,
/// `transcriber.lstm.weight_ih_l<n>`, ...), and the predictor's LSTM layers take the names of
/// torchaudio's `_CustomLSTM` without layer norm: `predictor.lstm_layers.<n>.x2g.weight` = W_ih
/// (4H, I), `x2g.bias` = b_ih + b_hh, `p2g.weight` = W_hh (4H, H), gates i, f, g, o. torchaudio's
/// predictor also has layer norms on its input and output, which this model does not. The
/// auxiliary CTC head (`transcriber.ctc_linear`, training only) is left out.
extension TransducerModel {
    public struct ExportedTensor: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let values: [Float]
        /// Whether the projection step may have pruned it (a weight matrix).
        public let prunable: Bool
    }

    public func exportedTensors(parameters p: [Float]) -> [ExportedTensor] {
        precondition(p.count == layout.totalCount)
        func tensor(_ spec: TensorSpec, as name: String? = nil) -> ExportedTensor {
            ExportedTensor(name: name ?? spec.name, shape: spec.shape, values: Array(p[spec.range]), prunable: spec.prunable)
        }
        var predictorTensors = Set<String>()
        var out: [ExportedTensor] = []
        for (n, d) in predictor.enumerated() {
            let prefix = "predictor.lstm_layers.\(n)"
            out.append(tensor(d.weightIH, as: "\(prefix).x2g.weight"))
            out.append(ExportedTensor(name: "\(prefix).x2g.bias", shape: d.biasIH.shape,
                                      values: zip(p[d.biasIH.range], p[d.biasHH.range]).map { $0 + $1 }, prunable: false))
            out.append(tensor(d.weightHH, as: "\(prefix).p2g.weight"))
            for spec in [d.weightIH, d.weightHH, d.biasIH, d.biasHH] { predictorTensors.insert(spec.name) }
        }
        // Everything else under its own name, in layout order; the LSTM layers where they were.
        var result: [ExportedTensor] = []
        var placed = false
        let trainingOnly = Set(ctcHead.map { [$0.weight.name, $0.bias.name] } ?? [])
        for spec in layout.tensors where !trainingOnly.contains(spec.name) {
            if predictorTensors.contains(spec.name) {
                if !placed { result += out; placed = true }
                continue
            }
            result.append(tensor(spec))
        }
        return result
    }

    /// The architecture as the export's metadata describes it.
    public var exportedArchitecture: [String: Any] {
        let s = settings, r = transducer
        return ["kind": "rnnt", "features": s.features, "conv_channels": s.convChannels, "conv_layers": s.convLayers,
                "conv_kernel": 3, "conv_stride": 2, "conv_padding": 1, "lstm_hidden": s.lstmHidden, "lstm_layers": s.lstmLayers,
                "bidirectional": s.bidirectional, "classes": s.classes, "blank": 0,
                "predictor_embedding": r.predictorEmbedding, "predictor_hidden": r.predictorHidden,
                "predictor_layers": r.predictorLayers, "joint_dim": r.jointDim, "joiner_activation": "tanh",
                "predictor_layer_norm": false]
    }
}
