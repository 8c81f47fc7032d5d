import Tensors

/// The running, example-weighted sum of one step's micro-batch gradients.
///
/// Each micro-batch's gradient arrives as the mean over its examples, in chunks; a chunk is
/// folded as `count × values` at its offset. The step's gradient is the sum divided by the total
/// example count, which is the mean over all examples of the step whatever the micro-batch sizes.
/// Memory is one flat buffer, independent of the number of workers.
public struct GradientAccumulator: Sendable {
    public private(set) var sum: [Float]
    public private(set) var examples = 0
    public private(set) var lossSum = 0.0

    public init(parameterCount: Int) {
        sum = [Float](repeating: 0, count: parameterCount)
    }

    /// sum[offset ..< offset + values.count] += weight × values.
    public mutating func fold(_ values: UnsafeBufferPointer<Float>, at offset: Int, weight: Int) {
        sum.withUnsafeMutableBufferPointer { s in
            VectorMath.axpy(Float(weight), values,
                            UnsafeMutableBufferPointer(rebasing: s[offset ..< offset + values.count]))
        }
    }

    /// Decodes little-endian float32 bytes and folds them (no intermediate array on little-endian hosts).
    /// Returns false when the byte count is not a whole number of values or overruns the buffer.
    public mutating func fold(littleEndianBytes bytes: UnsafeRawBufferPointer, at offset: Int, weight: Int) -> Bool {
        guard bytes.count % 4 == 0, offset >= 0, offset + bytes.count / 4 <= sum.count else { return false }
        let n = bytes.count / 4
        #if _endian(little)
        if let base = bytes.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            fold(UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: n), at: offset, weight: weight)
            return true
        }
        #endif
        var tmp = [Float](repeating: 0, count: n)
        _ = tmp.withUnsafeMutableBufferPointer { FloatEncoding.decodeDense(bytes, into: $0) }
        tmp.withUnsafeBufferPointer { fold($0, at: offset, weight: weight) }
        return true
    }

    /// Records a micro-batch's example count and loss sum (once per micro-batch).
    public mutating func addMicroBatch(examples: Int, lossSum: Double) {
        self.examples += examples
        self.lossSum += lossSum
    }

    /// The example-weighted mean gradient.
    public func mean() -> [Float] {
        var out = sum
        if examples > 0 { out.withUnsafeMutableBufferPointer { VectorMath.scale(1 / Float(examples), $0) } }
        return out
    }

    public var meanLoss: Double { examples > 0 ? lossSum / Double(examples) : .nan }

    public mutating func reset() {
        sum.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        examples = 0
        lossSum = 0
    }
}
