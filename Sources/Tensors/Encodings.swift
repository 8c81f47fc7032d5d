/// Byte encodings of float tensors, shared by the wire and the checkpoint format.
/// All multi-byte values are little-endian.
public enum FloatEncoding {
    /// count float32 values, little-endian.
    public static func denseBytes(_ values: UnsafeBufferPointer<Float>) -> [UInt8] {
        #if _endian(little)
        return Array(UnsafeRawBufferPointer(values))  // the in-memory layout is the wire layout
        #else
        var out = [UInt8](repeating: 0, count: values.count * 4)
        out.withUnsafeMutableBytes { raw in
            for (i, v) in values.enumerated() {
                raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
            }
        }
        return out
        #endif
    }

    public static func denseBytes(_ values: [Float]) -> [UInt8] {
        values.withUnsafeBufferPointer { denseBytes($0) }
    }

    /// Decodes `denseBytes` into `out`. Returns false when the byte count is not 4 × out.count.
    public static func decodeDense(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>) -> Bool {
        guard bytes.count == out.count * 4 else { return false }
        #if _endian(little)
        if let base = bytes.baseAddress, let target = out.baseAddress {
            UnsafeMutableRawPointer(target).copyMemory(from: base, byteCount: bytes.count)
        }
        #else
        for i in 0 ..< out.count {
            out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
        }
        #endif
        return true
    }

    /// A bitmask (bit i set, LSB first, where value i is non-zero) and the non-zero values in
    /// index order. For a 90%-sparse tensor this is 1/8 + 0.1·4 = 0.525 bytes per value instead of 4.
    public static func bitmask(_ values: UnsafeBufferPointer<Float>) -> (mask: [UInt8], nonZero: [UInt8]) {
        var mask = [UInt8](repeating: 0, count: (values.count + 7) / 8)
        var nonZero: [Float] = []
        nonZero.reserveCapacity(values.count / 4)
        for (i, v) in values.enumerated() where v != 0 {
            mask[i >> 3] |= 1 << UInt8(i & 7)
            nonZero.append(v)
        }
        return (mask, nonZero.withUnsafeBufferPointer { denseBytes($0) })
    }

    /// Decodes `bitmask` into `out` (count = out.count). Returns false when the sizes disagree.
    public static func decodeBitmask(mask: UnsafeRawBufferPointer, nonZero: UnsafeRawBufferPointer,
                                     into out: UnsafeMutableBufferPointer<Float>) -> Bool {
        guard mask.count == (out.count + 7) / 8, nonZero.count % 4 == 0 else { return false }
        let available = nonZero.count / 4
        var next = 0
        for i in 0 ..< out.count {
            if mask[i >> 3] & (1 << UInt8(i & 7)) != 0 {
                guard next < available else { return false }
                out[i] = Float(bitPattern: UInt32(littleEndian: nonZero.loadUnaligned(fromByteOffset: next * 4, as: UInt32.self)))
                next += 1
            } else {
                out[i] = 0
            }
        }
        return next == available
    }

    /// The non-zero values in index order, float32 little-endian.
    public static func nonZeroBytes(_ values: UnsafeBufferPointer<Float>) -> [UInt8] {
        var nonZero: [Float] = []
        for v in values where v != 0 { nonZero.append(v) }
        return nonZero.withUnsafeBufferPointer { denseBytes($0) }
    }

    /// Decodes Rice-coded positions (`RiceGaps`) and their non-zero values into `out`. Returns
    /// false when the code is malformed or disagrees with the number of values.
    public static func decodeRice(code: UnsafeRawBufferPointer, nonZero: UnsafeRawBufferPointer,
                                  into out: UnsafeMutableBufferPointer<Float>) -> Bool {
        guard nonZero.count % 4 == 0, let mask = RiceGaps.decode(code, count: out.count, nonZero: nonZero.count / 4) else { return false }
        var next = 0
        for i in 0 ..< out.count {
            if mask[i] {
                out[i] = Float(bitPattern: UInt32(littleEndian: nonZero.loadUnaligned(fromByteOffset: next * 4, as: UInt32.self)))
                next += 1
            } else {
                out[i] = 0
            }
        }
        return true
    }

    /// Bytes the bitmask encoding takes for `count` values of which `nonZero` are non-zero.
    public static func bitmaskSize(count: Int, nonZero: Int) -> Int { (count + 7) / 8 + nonZero * 4 }
}
