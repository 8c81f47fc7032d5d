import Tensors

/// Convolutional subsampling and (bi)LSTM layers: the acoustic encoder that CTC's output layer
/// and the RNN transducer's joint network both read. Its tensors are named `<prefix>conv.<n>.*`
/// and `<prefix>lstm.weight_ih_l<n>[_reverse]`, ... (PyTorch's names; the prefix is empty for CTC).
public struct SpeechEncoder: Sendable {
    let convs: [Conv1D]
    let lstm: [[LSTMDirection]]
    let lstmHidden: Int
    /// Channels of the output: lstmHidden, twice that when bidirectional.
    public let outputChannels: Int

    public init(settings s: AcousticSettings, prefix: String = "", layout: inout ParameterLayout) {
        var channels = s.features
        var convs: [Conv1D] = []
        for n in 0 ..< s.convLayers {
            convs.append(Conv1D(inChannels: channels, outChannels: s.convChannels, name: "\(prefix)conv.\(n)", layout: &layout))
            channels = s.convChannels
        }
        var lstm: [[LSTMDirection]] = []
        for n in 0 ..< s.lstmLayers {
            var directions = [LSTMDirection(inputSize: channels, hidden: s.lstmHidden, reverse: false, name: "\(prefix)lstm", suffix: "l\(n)", layout: &layout)]
            if s.bidirectional {
                directions.append(LSTMDirection(inputSize: channels, hidden: s.lstmHidden, reverse: true, name: "\(prefix)lstm", suffix: "l\(n)_reverse", layout: &layout))
            }
            lstm.append(directions)
            channels = s.lstmHidden * directions.count
        }
        self.convs = convs
        self.lstm = lstm
        lstmHidden = s.lstmHidden
        outputChannels = channels
    }

    /// Frames after subsampling for an input of `frames` frames.
    public func outputFrames(_ frames: Int) -> Int { convs.reduce(frames) { $1.outputLength($0) } }

    /// Fan-in of each tensor for PyTorch's default initialisation (hidden size for LSTM tensors).
    var fanIn: [String: Int] {
        var fanIn: [String: Int] = [:]
        for c in convs { fanIn[c.weight.name] = c.inChannels * c.kernel; fanIn[c.bias.name] = c.inChannels * c.kernel }
        for d in lstm.joined() { for spec in [d.weightIH, d.weightHH, d.biasIH, d.biasHH] { fanIn[spec.name] = d.hidden } }
        return fanIn
    }

    struct Forward {
        var convCaches: [Conv1D.Cache] = []
        var convInputs: [SequenceBatch] = []
        var lstmInputs: [SequenceBatch] = []
        var lstmCaches: [[LSTMDirection.Cache]] = []
        /// With dropout: each LSTM layer's mask (T', B, D); empty without.
        var lstmMasks: [[Float]] = []
        var output: SequenceBatch         // (T', B, D)
    }

    /// `dropout` (training only) masks each LSTM layer's output; nil or p = 0: none. The inputs
    /// the next layers see (and input statistics record, ``record(_:prefix:into:)``) are the
    /// masked ones: over the masks, E[x xᵀ] keeps its off-diagonal and has its diagonal scaled
    /// by 1/(1 − p), which ranks a layer's inputs alike for Wanda and acts as a ridge term for
    /// the methods that invert it.
    func forward(_ x: SequenceBatch, parameters p: UnsafeBufferPointer<Float>, dropout: EncoderDropout? = nil) -> Forward {
        var h = x
        var f = Forward(output: x)
        for conv in convs {
            f.convInputs.append(h)
            let cache = conv.forward(h, parameters: p)
            f.convCaches.append(cache)
            h = cache.output
        }
        for (n, directions) in lstm.enumerated() {
            f.lstmInputs.append(h)
            var caches: [LSTMDirection.Cache] = []
            var outputs: [SequenceBatch] = []
            for d in directions {
                let (y, cache) = d.forward(h, parameters: p)
                outputs.append(y)
                caches.append(cache)
            }
            f.lstmCaches.append(caches)
            h = Self.concatenate(outputs)
            if let dropout, dropout.isActive {
                let mask = dropout.mask(layer: n, steps: h.steps, lengths: h.lengths, width: h.channels)
                EncoderDropout.apply(mask, to: &h.values)
                f.lstmMasks.append(mask)
            }
        }
        f.output = h
        return f
    }

    /// Back-propagates `doutput` (T', B, D) through the LSTM layers and the convolutions,
    /// accumulating into `g`; returns the gradient of the input features.
    @discardableResult
    func backward(_ doutput: [Float], forward f: Forward, parameters p: UnsafeBufferPointer<Float>,
                  gradient g: UnsafeMutableBufferPointer<Float>) -> [Float] {
        var dh = doutput
        for (n, directions) in lstm.enumerated().reversed() {
            if !f.lstmMasks.isEmpty { EncoderDropout.apply(f.lstmMasks[n], to: &dh) }
            let input = f.lstmInputs[n]
            let parts = Self.split(dh, steps: input.steps, batch: input.batch, pieces: directions.count, width: lstmHidden)
            var dx = [Float](repeating: 0, count: input.values.count)
            for (d, direction) in directions.enumerated() {
                let part = direction.backward(parts[d], cache: f.lstmCaches[n][d], parameters: p, gradient: g)
                for i in 0 ..< dx.count { dx[i] += part[i] }
            }
            dh = dx
        }
        for (n, conv) in convs.enumerated().reversed() {
            dh = conv.backward(dh, cache: f.convCaches[n], input: f.convInputs[n], parameters: p, gradient: g)
        }
        return dh
    }

    /// Concatenates along channels: (T, B, H) × k → (T, B, k·H).
    static func concatenate(_ parts: [SequenceBatch]) -> SequenceBatch {
        guard parts.count > 1 else { return parts[0] }
        let first = parts[0], H = first.channels, k = parts.count
        var out = SequenceBatch(zeros: first.steps, batch: first.batch, channels: H * k, lengths: first.lengths)
        for r in 0 ..< first.steps * first.batch {
            for (i, part) in parts.enumerated() {
                for j in 0 ..< H { out.values[r * H * k + i * H + j] = part.values[r * H + j] }
            }
        }
        return out
    }

    /// The inverse of `concatenate` for gradients.
    static func split(_ values: [Float], steps: Int, batch: Int, pieces: Int, width: Int) -> [[Float]] {
        guard pieces > 1 else { return [values] }
        var out = [[Float]](repeating: [Float](repeating: 0, count: steps * batch * width), count: pieces)
        for r in 0 ..< steps * batch {
            for i in 0 ..< pieces {
                for j in 0 ..< width { out[i][r * width + j] = values[r * width * pieces + i * width + j] }
            }
        }
        return out
    }
}
