import Tensors

/// The speech model as an ONNX graph (opset 17) that onnxruntime and other runtimes run as is:
///
///     features (1, T, F) raw log-mels
///       → Sub mean, Div std                        the checkpoint's feature normalisation
///       → Transpose (1, F, T) → [Conv k3 s2 p1 → Relu] × convLayers
///       → Transpose (T', 1, C) → per layer, one LSTM node per direction, outputs concatenated
///       → MatMul output.weightᵀ, Add output.bias → Transpose → logits (1, T', V)
///
/// ONNX's LSTM gate order is i, o, f, c where PyTorch's (and csptrain's) is i, f, g, o: the gate
/// blocks of every weight and bias are reordered. Pruned weights are plain zeros: ONNX has no
/// sparse weights an LSTM or Conv node takes, so the file is as large as the dense model.
/// A tensor the low-rank projection factored (rank r in `ranks`) is exported as its two SVD
/// factors where the operator allows it: a convolution as a k-wide convolution to r channels
/// followed by a 1-wide one, an LSTM input weight as a MatMul to r features feeding an LSTM
/// whose input weight is the (4H × r) factor, the output layer as two MatMuls. A recurrent
/// weight stays its dense (rank-r) product: the LSTM node takes one R.
public struct ONNXAcousticGraph {
    public struct Architecture: Sendable {
        public var features: Int
        public var convChannels: Int
        public var convLayers: Int
        public var lstmHidden: Int
        public var lstmLayers: Int
        public var bidirectional: Bool
        public var classes: Int
        public init(features: Int, convChannels: Int, convLayers: Int, lstmHidden: Int, lstmLayers: Int, bidirectional: Bool, classes: Int) {
            self.features = features
            self.convChannels = convChannels
            self.convLayers = convLayers
            self.lstmHidden = lstmHidden
            self.lstmLayers = lstmLayers
            self.bidirectional = bidirectional
            self.classes = classes
        }
    }

    public enum ExportError: Error, CustomStringConvertible {
        case missing(String)
        case factorization(String, Int)
        public var description: String {
            switch self {
            case let .missing(name): "the checkpoint has no tensor '\(name)' the model needs"
            case let .factorization(name, rank): "'\(name)': the SVD for its rank-\(rank) factors failed (non-finite weights?)"
            }
        }
    }

    let architecture: Architecture
    let tensor: (String) -> [Float]?
    let ranks: [String: Int]
    var nodes: [ONNX.Message] = []
    var initializers: [ONNX.Message] = []
    var counter = 0

    /// `tensor(name)`: the weights by PyTorch name (conv.0.weight, lstm.weight_ih_l0, ...);
    /// `mean`, `std`: the feature normalisation.
    public static func export(_ a: Architecture, tensor: @escaping (String) -> [Float]?, mean: [Float], std: [Float],
                              ranks: [String: Int] = [:], metadata: [(String, String)] = []) throws(ExportError) -> [UInt8] {
        var g = ONNXAcousticGraph(architecture: a, tensor: tensor, ranks: ranks)
        return try g.build(mean: mean, std: std, metadata: metadata)
    }

    mutating func fresh(_ stem: String) -> String {
        counter += 1
        return "\(stem)_\(counter)"
    }

    mutating func constant(_ name: String, dims: [Int], _ values: [Float]) -> String {
        initializers.append(ONNX.tensor(name, dims: dims, floats: values))
        return name
    }

    mutating func node(_ op: String, _ inputs: [String], _ attributes: [(String, ONNX.Attribute)] = [], stem: String? = nil) -> String {
        let out = fresh(stem ?? op.lowercased())
        nodes.append(ONNX.node(op, name: out, inputs: inputs, outputs: [out], attributes: attributes))
        return out
    }

    func weights(_ name: String) throws(ExportError) -> [Float] {
        guard let w = tensor(name) else { throw .missing(name) }
        return w
    }

    /// (A (rows × r), B (r × columns)) with A·B the stored rank-r matrix, or nil when not factored.
    func factors(_ name: String, _ w: [Float], rows: Int, columns: Int) throws(ExportError) -> (a: [Float], b: [Float], rank: Int)? {
        guard let r = ranks[name], r > 0, r * (rows + columns) < rows * columns else { return nil }
        guard let svd = w.withUnsafeBufferPointer({ SVD($0, rows: rows, columns: columns) }) else { throw .factorization(name, r) }
        var a = svd.leftColumns(r)
        for i in 0 ..< rows { for j in 0 ..< r { a[i * r + j] *= svd.singularValues[j] } }
        return (a, Array(svd.right[0 ..< r * columns]), r)
    }

    /// Rows of a (4H × n) PyTorch gate-blocked matrix in ONNX's order i, o, f, c.
    static func onnxGateOrder(_ w: [Float], hidden H: Int) -> [Float] {
        let n = w.count / (4 * H)
        let block = { (g: Int) in w[(g * H * n) ..< ((g + 1) * H * n)] }
        return Array(block(0) + block(3) + block(1) + block(2))   // i, o, f, g(=c)
    }

    static func transpose(_ w: [Float], rows: Int, columns: Int) -> [Float] {
        var out = [Float](repeating: 0, count: w.count)
        for r in 0 ..< rows { for c in 0 ..< columns { out[c * rows + r] = w[r * columns + c] } }
        return out
    }

    mutating func build(mean: [Float], std: [Float], metadata: [(String, String)]) throws(ExportError) -> [UInt8] {
        let a = architecture, H = a.lstmHidden
        var x = node("Sub", ["features", constant("feature_normalization.mean", dims: [a.features], mean)])
        x = node("Div", [x, constant("feature_normalization.std", dims: [a.features], std)])
        x = node("Transpose", [x], [("perm", .ints([0, 2, 1]))])          // (1, F, T)
        var channels = a.features
        for n in 0 ..< a.convLayers {
            let name = "conv.\(n).weight", cout = a.convChannels
            let w = try weights(name), bias = try weights("conv.\(n).bias")
            let conv: [(String, ONNX.Attribute)] = [("kernel_shape", .ints([3])), ("strides", .ints([2])), ("pads", .ints([1, 1]))]
            if let f = try factors(name, w, rows: cout, columns: channels * 3) {
                let b = constant("\(name).factor_b", dims: [f.rank, channels, 3], f.b)
                x = node("Conv", [x, b], conv)
                let a2 = constant("\(name).factor_a", dims: [cout, f.rank, 1], f.a)
                x = node("Conv", [x, a2, constant("conv.\(n).bias", dims: [cout], bias)], [("kernel_shape", .ints([1]))])
            } else {
                x = node("Conv", [x, constant(name, dims: [cout, channels, 3], w), constant("conv.\(n).bias", dims: [cout], bias)], conv)
            }
            x = node("Relu", [x])
            channels = cout
        }
        x = node("Transpose", [x], [("perm", .ints([2, 0, 1]))])          // (T', 1, C)
        for n in 0 ..< a.lstmLayers {
            var outputs: [String] = []
            for (suffix, direction) in a.bidirectional ? [("l\(n)", "forward"), ("l\(n)_reverse", "reverse")] : [("l\(n)", "forward")] {
                let wih = try weights("lstm.weight_ih_\(suffix)"), whh = try weights("lstm.weight_hh_\(suffix)")
                let bias = Self.onnxGateOrder(try weights("lstm.bias_ih_\(suffix)"), hidden: H) + Self.onnxGateOrder(try weights("lstm.bias_hh_\(suffix)"), hidden: H)
                var input = x, inputSize = channels, w = wih
                if let f = try factors("lstm.weight_ih_\(suffix)", wih, rows: 4 * H, columns: channels) {
                    // x · Bᵀ (T', 1, r), then the LSTM's own input product with A.
                    input = node("MatMul", [x, constant("lstm.weight_ih_\(suffix).factor_b_t", dims: [channels, f.rank], Self.transpose(f.b, rows: f.rank, columns: channels))])
                    inputSize = f.rank
                    w = f.a
                }
                let W = constant("lstm.W_\(suffix)", dims: [1, 4 * H, inputSize], Self.onnxGateOrder(w, hidden: H))
                let R = constant("lstm.R_\(suffix)", dims: [1, 4 * H, H], Self.onnxGateOrder(whh, hidden: H))
                let B = constant("lstm.B_\(suffix)", dims: [1, 8 * H], bias)
                outputs.append(node("LSTM", [input, W, R, B], [("hidden_size", .int(H)), ("direction", .string(direction))], stem: "lstm_\(suffix)"))
            }
            // Each Y is (T', 1 direction, 1, H); directions side by side as PyTorch concatenates them.
            let y = outputs.count == 1 ? outputs[0] : node("Concat", outputs, [("axis", .int(3))])
            initializers.append(ONNX.tensor("shape_l\(n)", dims: [3], int64s: [0, 1, -1]))
            x = node("Reshape", [y, "shape_l\(n)"])                          // (T', 1, dirs·H)
            channels = H * outputs.count
        }
        let wout = try weights("output.weight"), bout = try weights("output.bias")
        if let f = try factors("output.weight", wout, rows: a.classes, columns: channels) {
            x = node("MatMul", [x, constant("output.factor_b_t", dims: [channels, f.rank], Self.transpose(f.b, rows: f.rank, columns: channels))])
            x = node("MatMul", [x, constant("output.factor_a_t", dims: [f.rank, a.classes], Self.transpose(f.a, rows: a.classes, columns: f.rank))])
        } else {
            x = node("MatMul", [x, constant("output.weight_t", dims: [channels, a.classes], Self.transpose(wout, rows: a.classes, columns: channels))])
        }
        x = node("Add", [x, constant("output.bias", dims: [a.classes], bout)])
        nodes.append(ONNX.node("Transpose", name: "logits_transpose", inputs: [x], outputs: ["logits"], attributes: [("perm", .ints([1, 0, 2]))]))
        return ONNX.model(graphName: "csptrain_ctc", nodes: nodes, initializers: initializers,
                          inputs: [ONNX.valueInfo("features", dims: [.size(1), .named("frames"), .size(a.features)])],
                          outputs: [ONNX.valueInfo("logits", dims: [.size(1), .named("output_frames"), .size(a.classes)])],
                          metadata: metadata)
    }
}
