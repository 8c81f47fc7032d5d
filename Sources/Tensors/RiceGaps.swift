/// The positions of a sparse tensor's non-zero values as Golomb–Rice-coded gaps.
///
/// For each non-zero value in index order, the number of zeros since the previous one (the gap)
/// is written as its quotient by 2^k in unary (that many 1 bits, then a 0) followed by its k low
/// bits. For a mask whose entries are independently non-zero with probability d, gaps are
/// geometric, for which a Golomb code is optimal; the best power-of-two parameter (Rice) stays
/// within a few percent of the entropy H(d) per entry at every density (measured in the tests:
/// within 1.15× of H(d)/8 bytes per value, mask and values together, at d = 0.5 … 0.01).
///
/// Layout: one byte k (0…24), then the bit stream, least significant bit of each byte first.
/// The number of non-zero values is not stored: it is the number of values that come with it.
public enum RiceGaps {
    /// The coded positions of the non-zero entries of `values`, and how many there are.
    /// `keepingNegativeZero`: −0.0 counts as a value to store (checkpoints keep every bit).
    public static func encode(_ values: UnsafeBufferPointer<Float>, keepingNegativeZero: Bool = false) -> (code: [UInt8], nonZero: Int) {
        var gaps: [Int] = []
        var run = 0
        for v in values {
            if v != 0 || (keepingNegativeZero && v.bitPattern != 0) { gaps.append(run); run = 0 } else { run += 1 }
        }
        let k = bestParameter(gaps)
        var writer = BitWriter()
        writer.bytes.reserveCapacity(1 + (gaps.count * (k + 2) + 7) / 8)
        writer.bytes.append(UInt8(k))
        for g in gaps {
            writer.writeUnary(g >> k)
            writer.write(UInt64(g & ((1 << k) - 1)), bits: k)
        }
        return (writer.finish(), gaps.count)
    }

    /// Decodes `code` into a mask over `count` entries with exactly `nonZero` set; nil when the
    /// code is malformed (truncated, positions past the end, trailing garbage).
    public static func decode(_ code: UnsafeRawBufferPointer, count: Int, nonZero: Int) -> [Bool]? {
        guard code.count >= 1, code[0] <= 24, nonZero >= 0, nonZero <= count else { return nil }
        let k = Int(code[0])
        var reader = BitReader(bytes: UnsafeRawBufferPointer(rebasing: code[1...]))
        var mask = [Bool](repeating: false, count: count)
        var position = -1
        for _ in 0 ..< nonZero {
            guard let q = reader.readUnary(limit: count), let r = reader.read(bits: k) else { return nil }
            let gap = (q << k) | Int(r)
            position += gap + 1
            guard position < count else { return nil }
            mask[position] = true
        }
        // Only zero padding may follow the last code word, and less than a byte of it.
        guard reader.remainingBitsAreZeroPadding else { return nil }
        return mask
    }

    /// The smallest k that minimises the coded size of these gaps. The size
    /// f(k) = Σ ⌊g/2^k⌋ + n·(1 + k) is convex in k (each step up saves Σ(⌊g/2^k⌋ − ⌊g/2^(k+1)⌋),
    /// which shrinks with k, and costs n), so walking downhill from the estimate for geometric
    /// gaps, about log2(mean gap · ln 2), finds the same k as trying all 25, in two or three passes:
    /// this runs once per pruned tensor per broadcast.
    static func bestParameter(_ gaps: [Int]) -> Int {
        guard !gaps.isEmpty else { return 0 }
        func bits(_ k: Int) -> Int { gaps.reduce(gaps.count * (1 + k)) { $0 + ($1 >> k) } }
        let mean = Double(gaps.reduce(0, +)) / Double(gaps.count)
        // ⌊log2(mean · ln 2)⌋ as a start: the descent below corrects it either way.
        var k = mean * 0.693 >= 1 ? min(24, Int((mean * 0.693).exponent)) : 0
        var here = bits(k)
        while k > 0, case let below = bits(k - 1), below <= here { k -= 1; here = below }
        while k < 24, case let above = bits(k + 1), above < here { k += 1; here = above }
        return k
    }

    /// Bytes of the code for these positions (the header byte included).
    public static func size(_ values: UnsafeBufferPointer<Float>) -> Int { encode(values).code.count }
}

/// Bits, least significant first, gathered 64 at a time (whole bytes go out as they fill).
struct BitWriter {
    var bytes: [UInt8] = []
    private var accumulator: UInt64 = 0
    /// Bits in `accumulator` not yet written out (below 8 between calls).
    private var pending = 0

    /// The low `bits` bits of `value` (at most 32).
    mutating func write(_ value: UInt64, bits: Int) {
        guard bits > 0 else { return }
        accumulator |= (value & (UInt64.max >> UInt64(64 - bits))) << UInt64(pending)
        pending += bits
        while pending >= 8 {
            bytes.append(UInt8(truncatingIfNeeded: accumulator))
            accumulator >>= 8
            pending -= 8
        }
    }

    /// n one bits, then a zero.
    mutating func writeUnary(_ n: Int) {
        var n = n
        while n >= 32 {
            write(0xFFFF_FFFF, bits: 32)
            n -= 32
        }
        write((1 << UInt64(n)) - 1, bits: n + 1)
    }

    /// The bytes, the last one padded with zero bits.
    mutating func finish() -> [UInt8] {
        if pending > 0 {
            bytes.append(UInt8(truncatingIfNeeded: accumulator))
            accumulator = 0
            pending = 0
        }
        return bytes
    }
}

struct BitReader {
    let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func readBit() -> Bool? {
        guard position < bytes.count * 8 else { return nil }
        defer { position += 1 }
        return bytes[position >> 3] >> UInt8(position & 7) & 1 == 1
    }

    /// A unary number (1 bits up to a 0); nil past the end or above `limit`.
    mutating func readUnary(limit: Int) -> Int? {
        var n = 0
        while true {
            guard let bit = readBit() else { return nil }
            if !bit { return n }
            n += 1
            if n > limit { return nil }
        }
    }

    mutating func read(bits: Int) -> UInt64? {
        var value: UInt64 = 0
        for i in 0 ..< bits {
            guard let bit = readBit() else { return nil }
            if bit { value |= 1 << UInt64(i) }
        }
        return value
    }

    var remainingBitsAreZeroPadding: Bool {
        let total = bytes.count * 8
        guard total - position < 8 else { return false }
        var p = position
        while p < total {
            if bytes[p >> 3] >> UInt8(p & 7) & 1 == 1 { return false }
            p += 1
        }
        return true
    }
}
