import CKernels
import Tensors

/// The running, example-weighted sum of one step's micro-batch gradients.
///
/// Each micro-batch's gradient arrives as the mean over its examples, in chunks; a chunk is
/// folded as `count × values` at its offset. The step's gradient is the sum divided by the total
/// example count, which is the mean over all examples of the step whatever the micro-batch sizes.
/// Memory is one flat buffer, independent of the number of workers.
///
/// Two ways to sum:
/// - `.float`: float32 `axpy` in arrival order. Fast, but float addition is not associative, so
///   the result depends on which chunk arrived first (on the number of workers, on timing).
/// - `.fixedPoint`: every term `count × value` is rounded once to a multiple of 2^−40 and summed
///   in int64. Each term is a pure function of its chunk, and integer addition is associative
///   and exact, so the sum is the same bit for bit in any arrival order. Resolution 2^−40
///   ≈ 9.1e−13; range: |sum of count × gradient| < 2^23 ≈ 8.4e6 per value. A term or sum outside
///   the range is counted in `overflows` and the step must not be applied (a gradient that large
///   means a diverging model, not a rounding problem).
///
/// Loss sums are kept per micro-batch and added in micro-batch order, so the reported loss does
/// not depend on arrival order either.
public struct GradientAccumulator: Sendable {
    public enum Mode: Sendable, Equatable {
        case float
        case fixedPoint
    }

    /// The fixed-point scale: values are multiples of 2^−scaleBits.
    public static let scaleBits: Int32 = 40

    public let mode: Mode
    /// `.float`: the sum (empty in `.fixedPoint`).
    public private(set) var sum: [Float]
    /// `.fixedPoint`: the sum in units of 2^−scaleBits.
    private var fixed: [Int64]
    private var microBatchLoss: [Int: Double] = [:]
    public private(set) var examples = 0
    /// `.fixedPoint`: values whose term or sum left the int64 range this step.
    public private(set) var overflows = 0
    /// The offset of the first value that overflowed, for the error message.
    public private(set) var firstOverflowOffset: Int?

    /// Chunks that had to be copied before folding because their bytes were not aligned to 4
    /// (the tests check that csptrain's own chunks never are).
    public private(set) var copiedFolds = 0

    public init(parameterCount: Int, mode: Mode = .float) {
        self.mode = mode
        sum = mode == .float ? [Float](repeating: 0, count: parameterCount) : []
        fixed = mode == .fixedPoint ? [Int64](repeating: 0, count: parameterCount) : []
    }

    public var parameterCount: Int { mode == .float ? sum.count : fixed.count }

    /// sum[offset ..< offset + values.count] += weight × values.
    public mutating func fold(_ values: UnsafeBufferPointer<Float>, at offset: Int, weight: Int) {
        guard let base = values.baseAddress, !values.isEmpty else { return }
        switch mode {
        case .float:
            sum.withUnsafeMutableBufferPointer { s in
                VectorMath.axpy(Float(weight), values, UnsafeMutableBufferPointer(rebasing: s[offset ..< offset + values.count]))
            }
        case .fixedPoint:
            let n = fixed.withUnsafeMutableBufferPointer { s in
                csp_fold_fixed(s.baseAddress! + offset, base, values.count, weight, Self.scaleBits)
            }
            if n > 0 {
                overflows += n
                if firstOverflowOffset == nil {
                    firstOverflowOffset = fixed[offset ..< offset + values.count].firstIndex { $0 == .max || $0 == .min } ?? offset
                }
            }
        }
    }

    /// Decodes little-endian float32 bytes and folds them (no intermediate array on little-endian hosts).
    /// Returns false when the byte count is not a whole number of values or overruns the buffer.
    public mutating func fold(littleEndianBytes bytes: UnsafeRawBufferPointer, at offset: Int, weight: Int) -> Bool {
        guard bytes.count % 4 == 0, offset >= 0, offset + bytes.count / 4 <= parameterCount else { return false }
        let n = bytes.count / 4
        #if _endian(little)
        if let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            fold(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: n), at: offset, weight: weight)
            return true
        }
        #endif
        // Misaligned bytes (a peer that does not pad its chunks): one copy, counted.
        copiedFolds += 1
        var tmp = [Float](repeating: 0, count: n)
        _ = tmp.withUnsafeMutableBufferPointer { FloatEncoding.decodeDense(bytes, into: $0) }
        tmp.withUnsafeBufferPointer { fold($0, at: offset, weight: weight) }
        return true
    }

    /// Folds little-endian bfloat16 `bytes` (widened exactly to float32) at `offset`, weighted.
    /// False when they do not fit.
    public mutating func fold(bf16Bytes bytes: UnsafeRawBufferPointer, at offset: Int, weight: Int) -> Bool {
        guard bytes.count % 2 == 0, offset >= 0, offset + bytes.count / 2 <= parameterCount else { return false }
        let n = bytes.count / 2
        guard n > 0, let base = bytes.baseAddress else { return true }
        switch mode {
        case .float:
            sum.withUnsafeMutableBufferPointer { s in csp_axpy_bf16(s.baseAddress! + offset, base, n, Float(weight)) }
        case .fixedPoint:
            // Widened once into a scratch buffer, then summed exactly like float32 values.
            var widened = [Float](repeating: 0, count: n)
            widened.withUnsafeMutableBufferPointer { csp_from_bf16(base, $0.baseAddress!, n) }
            widened.withUnsafeBufferPointer { fold($0, at: offset, weight: weight) }
        }
        return true
    }

    /// Records micro-batch `index`'s example count and loss sum (once per micro-batch).
    public mutating func addMicroBatch(_ index: Int, examples: Int, lossSum: Double) {
        guard microBatchLoss[index] == nil else { return }
        self.examples += examples
        microBatchLoss[index] = lossSum
    }

    /// The example-weighted mean gradient.
    public func mean() -> [Float] {
        var out = [Float](repeating: 0, count: parameterCount)
        mean(into: &out)
        return out
    }

    /// The example-weighted mean gradient, written into `out` (no allocation).
    public func mean(into out: inout [Float]) {
        precondition(out.count == parameterCount)
        out.withUnsafeMutableBufferPointer { o in mean(range: 0 ..< o.count, into: o) }
    }

    /// The mean into `out`, block by block concurrently, with each block's Σ g² (float64) taken
    /// while the block is in cache; the sums come back in block order.
    public func meanAndSumsOfSquares(blocks: [Range<Int>], into out: inout [Float]) -> [Double] {
        precondition(out.count <= parameterCount && blocks.allSatisfy { $0.upperBound <= out.count })
        var sums = [Double](repeating: 0, count: blocks.count)
        out.withUnsafeMutableBufferPointer { g in
            sums.withUnsafeMutableBufferPointer { s in
                Parallel.forEach(blocks.count) { b in
                    mean(range: blocks[b], into: g)
                    s[b] = VectorMath.sumOfSquares(UnsafeBufferPointer(rebasing: g[blocks[b]]))
                }
            }
        }
        return sums
    }

    /// The mean of the values in `range`, written to the same positions of `out` (a block of the
    /// parameters: blocks can be averaged concurrently).
    public func mean(range: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) {
        guard !range.isEmpty else { return }
        switch mode {
        case .float:
            let scale = examples > 0 ? 1 / Float(examples) : 1
            sum.withUnsafeBufferPointer { s in
                for i in range { out[i] = s[i] * scale }
            }
        case .fixedPoint:
            guard examples > 0 else {
                UnsafeMutableBufferPointer(rebasing: out[range]).update(repeating: 0)
                return
            }
            fixed.withUnsafeBufferPointer { s in
                csp_fixed_mean(s.baseAddress! + range.lowerBound, out.baseAddress! + range.lowerBound, range.count, examples, Self.scaleBits)
            }
        }
    }

    /// The mean of the values in `range`, written to the start of `out` (`out[i]` is position
    /// `range.lowerBound + i`).
    public func mean(range: Range<Int>, toStartOf out: UnsafeMutableBufferPointer<Float>) {
        precondition(out.count >= range.count)
        guard !range.isEmpty else { return }
        switch mode {
        case .float:
            let scale = examples > 0 ? 1 / Float(examples) : 1
            sum.withUnsafeBufferPointer { s in
                for i in range { out[i - range.lowerBound] = s[i] * scale }
            }
        case .fixedPoint:
            guard examples > 0 else {
                UnsafeMutableBufferPointer(rebasing: out[0 ..< range.count]).update(repeating: 0)
                return
            }
            fixed.withUnsafeBufferPointer { s in
                csp_fixed_mean(s.baseAddress! + range.lowerBound, out.baseAddress!, range.count, examples, Self.scaleBits)
            }
        }
    }

    /// Sum of the micro-batches' loss sums, added in micro-batch order.
    public var lossSum: Double { microBatchLoss.keys.sorted().reduce(0) { $0 + microBatchLoss[$1]! } }

    public var meanLoss: Double { examples > 0 ? lossSum / Double(examples) : .nan }

    public mutating func reset() {
        switch mode {
        case .float: sum.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        case .fixedPoint: fixed.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        }
        examples = 0
        microBatchLoss = [:]
        overflows = 0
        firstOverflowOffset = nil
    }
}
