import Tensors

/// Inverted dropout on the output sequence of each (bi)LSTM layer of the ``SpeechEncoder``, for
/// training only: a unit is zeroed with probability p and kept ones are scaled by 1/(1 − p), so
/// the expected output is the undropped one and evaluation needs no rescaling.
///
/// Masks are keyed, never drawn from generator state: utterance b's mask at (layer, t, unit) is a
/// pure function of `keys[b]` (which the task derives from the run seed, the epoch and the
/// example index), so the same example gets the same mask alone or inside any micro-batch, on any
/// worker. Each (utterance, layer, frame) has its own stream; units draw from it in order.
public struct EncoderDropout: Sendable, Equatable {
    /// Probability of zeroing a unit, in [0, 1).
    public let probability: Float
    /// One key per utterance of the batch, in batch order.
    public let keys: [UInt64]

    public init(probability: Float, keys: [UInt64]) {
        precondition(probability >= 0 && probability < 1, "dropout probability \(probability) is outside [0, 1)")
        self.probability = probability
        self.keys = keys
    }

    /// The key of one example's masks: (seed, purpose, epoch, example).
    public static func key(seed: UInt64, epoch: Int, example: Int) -> UInt64 {
        SeededRandom.key([seed, purpose, UInt64(epoch), UInt64(example)])
    }

    static let purpose: UInt64 = 0x4452_4F50  // "DROP"

    /// Whether any unit can be dropped; p = 0 leaves the encoder's maths untouched.
    var isActive: Bool { probability > 0 }

    /// The mask of layer `layer` for a batch (T, B, D): 0 or 1/(1 − p) at t < lengths[b], 0 in
    /// the padding (whose outputs are zero anyway).
    func mask(layer: Int, steps: Int, lengths: [Int], width: Int) -> [Float] {
        precondition(lengths.count == keys.count, "dropout has \(keys.count) keys for a batch of \(lengths.count)")
        let B = lengths.count, scale = 1 / (1 - probability), p = probability
        var mask = [Float](repeating: 0, count: steps * B * width)   // (T, B, D)
        mask.withUnsafeMutableBufferPointer { m in
            for b in 0 ..< B {
                for t in 0 ..< lengths[b] {
                    // One stream per (utterance, layer, frame); units draw from it in order.
                    var rng = SeededRandom(keys[b], UInt64(layer), UInt64(t))
                    let o = (t * B + b) * width
                    for j in 0 ..< width { m[o + j] = rng.nextUnitFloat() < p ? 0 : scale }
                }
            }
        }
        return mask
    }

    /// Multiplies `values` by `mask` element by element (the forward pass's outputs, the
    /// backward pass's incoming gradient).
    static func apply(_ mask: [Float], to values: inout [Float]) {
        precondition(mask.count == values.count)
        mask.withUnsafeBufferPointer { m in
            values.withUnsafeMutableBufferPointer { v in
                for i in 0 ..< v.count { v[i] *= m[i] }
            }
        }
    }
}
