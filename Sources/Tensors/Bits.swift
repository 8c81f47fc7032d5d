/// Bit sets packed least significant bit first, eight to a byte: the one packer behind the
/// broadcast's and the checkpoint's bitmasks, pruning masks in checkpoints, and the
/// compressed-tensors export (row by row).
public enum Bits {
    public static func byteCount(_ bits: Int) -> Int { (bits + 7) / 8 }

    /// Sets bit `i` of `bytes` (sized by `byteCount`).
    @inline(__always)
    public static func set(_ bytes: inout [UInt8], _ i: Int, offset: Int = 0) {
        bytes[offset + (i >> 3)] |= 1 << UInt8(i & 7)
    }

    /// Bit `i`; false past the end.
    @inline(__always)
    public static func isSet(_ bytes: UnsafeRawBufferPointer, _ i: Int) -> Bool {
        i >> 3 < bytes.count && bytes[i >> 3] & (1 << UInt8(i & 7)) != 0
    }

    /// `count` bits, bit i set where `isSet(i)`.
    public static func pack(count: Int, where isSet: (Int) -> Bool) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount(count))
        for i in 0 ..< count where isSet(i) { set(&out, i) }
        return out
    }

    /// 0/1 bytes (a pruning mask) packed.
    public static func pack(_ flags: [UInt8]) -> [UInt8] { pack(count: flags.count) { flags[$0] != 0 } }

    /// Packed bits back to 0/1 bytes.
    public static func unpack(_ bits: [UInt8], count: Int) -> [UInt8] {
        bits.withUnsafeBytes { b in (0 ..< count).map { isSet(b, $0) ? 1 : 0 } }
    }
}
