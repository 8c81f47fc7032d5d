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
    /// `keepingNegativeZero`: −0.0 counts as a value to store (checkpoints keep every bit).
    public static func bitmask(_ values: UnsafeBufferPointer<Float>, keepingNegativeZero: Bool = false) -> (mask: [UInt8], nonZero: [UInt8]) {
        var mask = [UInt8](repeating: 0, count: Bits.byteCount(values.count))
        var nonZero: [Float] = []
        nonZero.reserveCapacity(values.count / 4)
        for (i, v) in values.enumerated() where v != 0 || (keepingNegativeZero && v.bitPattern != 0) {
            Bits.set(&mask, i)
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
            if Bits.isSet(mask, i) {
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
    public static func nonZeroBytes(_ values: UnsafeBufferPointer<Float>, keepingNegativeZero: Bool = false) -> [UInt8] {
        var nonZero: [Float] = []
        for v in values where v != 0 || (keepingNegativeZero && v.bitPattern != 0) { nonZero.append(v) }
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

    /// Decodes values sent for the positions where `out` is non-zero now (its support did not
    /// change): fills them in index order. Returns false when the counts disagree.
    public static func decodeValuesOnly(_ nonZero: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>) -> Bool {
        guard nonZero.count % 4 == 0 else { return false }
        let available = nonZero.count / 4
        var next = 0
        for i in 0 ..< out.count where out[i] != 0 {
            guard next < available else { return false }
            out[i] = Float(bitPattern: UInt32(littleEndian: nonZero.loadUnaligned(fromByteOffset: next * 4, as: UInt32.self)))
            next += 1
        }
        return next == available
    }

    /// True when `a` and `b` are non-zero at exactly the same positions.
    public static func sameSupport(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0 ..< a.count where (a[i] != 0) != (b[i] != 0) { return false }
        return true
    }

    /// float32 little-endian bytes narrowed to IEEE binary16 (round to nearest even; beyond
    /// ±65504 to infinity, as the conversion does).
    public static func narrowToHalf(_ float32: [UInt8]) -> [UInt8] {
        let n = float32.count / 4
        var out = [UInt8](repeating: 0, count: n * 2)
        float32.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                for i in 0 ..< n {
                    let f = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                    dst.storeBytes(of: Float16(f).bitPattern.littleEndian, toByteOffset: i * 2, as: UInt16.self)
                }
            }
        }
        return out
    }

    /// IEEE binary16 little-endian bytes widened to float32 little-endian bytes (exact). Nil
    /// for an odd byte count.
    public static func widenHalf(_ half: UnsafeRawBufferPointer) -> [UInt8]? {
        guard half.count % 2 == 0 else { return nil }
        let n = half.count / 2
        var out = [UInt8](repeating: 0, count: n * 4)
        out.withUnsafeMutableBytes { dst in
            for i in 0 ..< n {
                let h = Float16(bitPattern: UInt16(littleEndian: half.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
                dst.storeBytes(of: Float(h).bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
            }
        }
        return out
    }

    /// Rounds every value to the nearest binary16 (kept as Float): what a receiver of f16 values
    /// computes with.
    public static func roundToHalf(_ values: UnsafeMutableBufferPointer<Float>) {
        for i in values.indices { values[i] = Float(Float16(values[i])) }
    }

    /// Bytes the bitmask encoding takes for `count` values of which `nonZero` are non-zero.
    public static func bitmaskSize(count: Int, nonZero: Int) -> Int { (count + 7) / 8 + nonZero * 4 }
}
