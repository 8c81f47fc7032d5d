/// A padded batch of sequences in time-major order: `values[(t * batch + b) * channels + c]`.
///
/// Time-major keeps the rows of one time step contiguous, so a recurrent step over the whole
/// batch is one matrix product. Positions at or past a sequence's length hold zeros.
public struct SequenceBatch: Sendable, Equatable {
    public var values: [Float]          // (T, B, C)
    public let steps: Int               // T: the longest sequence
    public let batch: Int               // B
    public let channels: Int            // C
    public let lengths: [Int]           // per sequence, each ≤ T

    public init(values: [Float], steps: Int, batch: Int, channels: Int, lengths: [Int]) {
        precondition(values.count == steps * batch * channels && lengths.count == batch)
        self.values = values
        self.steps = steps
        self.batch = batch
        self.channels = channels
        self.lengths = lengths
    }

    public init(zeros steps: Int, batch: Int, channels: Int, lengths: [Int]) {
        self.init(values: [Float](repeating: 0, count: steps * batch * channels), steps: steps, batch: batch,
                  channels: channels, lengths: lengths)
    }

    /// Packs per-sequence (T_b, C) row-major matrices into a padded time-major batch.
    public init(sequences: [[Float]], channels: Int) {
        let lengths = sequences.map { $0.count / channels }
        let steps = lengths.max() ?? 0
        var values = [Float](repeating: 0, count: steps * sequences.count * channels)
        for (b, s) in sequences.enumerated() {
            for t in 0 ..< lengths[b] {
                let dst = (t * sequences.count + b) * channels
                for c in 0 ..< channels { values[dst + c] = s[t * channels + c] }
            }
        }
        self.init(values: values, steps: steps, batch: sequences.count, channels: channels, lengths: lengths)
    }

    @inline(__always) public func offset(_ t: Int, _ b: Int) -> Int { (t * batch + b) * channels }

    /// Sequence b as a (T_b, C) row-major matrix.
    public func sequence(_ b: Int) -> [Float] {
        var out = [Float](repeating: 0, count: lengths[b] * channels)
        for t in 0 ..< lengths[b] {
            for c in 0 ..< channels { out[t * channels + c] = values[offset(t, b) + c] }
        }
        return out
    }

    /// Each sequence reversed within its own length (padding stays at the end).
    public func reversedInLength() -> SequenceBatch {
        var out = SequenceBatch(zeros: steps, batch: batch, channels: channels, lengths: lengths)
        for b in 0 ..< batch {
            for t in 0 ..< lengths[b] {
                let src = offset(lengths[b] - 1 - t, b), dst = offset(t, b)
                for c in 0 ..< channels { out.values[dst + c] = values[src + c] }
            }
        }
        return out
    }
}
