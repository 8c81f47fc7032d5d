/// The few pieces of protobuf's wire format that Wire writes and reads by hand, where
/// SwiftProtobuf would copy: gradient chunks serialised straight from the gradient and read
/// where they were received, and replies framed around weights encoded once per version.
/// (protobuf encoding: https://protobuf.dev/programming-guides/encoding/)
enum ProtoBytes {
    enum WireType: UInt64 {
        case varint = 0
        case fixed64 = 1
        case lengthDelimited = 2
        case fixed32 = 5
    }

    static func varintSize(_ value: UInt64) -> Int {
        var v = value, n = 1
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }

    static func tagSize(_ field: Int) -> Int { varintSize(UInt64(field) << 3) }

    /// Bytes of a length-delimited field of `length` bytes, tag and length included.
    static func fieldSize(_ field: Int, length: Int) -> Int { tagSize(field) + varintSize(UInt64(length)) + length }

    /// Writes into a buffer sized in advance; `position` is where the next byte goes.
    struct Writer {
        let buffer: UnsafeMutableRawBufferPointer
        var position = 0

        init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }

        mutating func varint(_ value: UInt64) {
            var v = value
            while v >= 0x80 {
                buffer[position] = UInt8(truncatingIfNeeded: v) | 0x80
                position += 1
                v >>= 7
            }
            buffer[position] = UInt8(v)
            position += 1
        }

        mutating func tag(_ field: Int, _ type: WireType) { varint(UInt64(field) << 3 | type.rawValue) }

        /// A varint field, skipped when zero (proto3's default).
        mutating func uint(_ field: Int, _ value: UInt64) {
            guard value != 0 else { return }
            tag(field, .varint)
            varint(value)
        }

        mutating func double(_ field: Int, _ value: Double) {
            guard value.bitPattern != 0 else { return }
            tag(field, .fixed64)
            withUnsafeBytes(of: value.bitPattern.littleEndian) { raw in
                buffer.baseAddress!.advanced(by: position).copyMemory(from: raw.baseAddress!, byteCount: 8)
            }
            position += 8
        }

        /// Tag and length of a length-delimited field whose bytes the caller writes next.
        mutating func lengthDelimited(_ field: Int, length: Int) {
            tag(field, .lengthDelimited)
            varint(UInt64(length))
        }

        mutating func bytes(_ source: UnsafeRawBufferPointer) {
            guard let base = source.baseAddress, !source.isEmpty else { return }
            buffer.baseAddress!.advanced(by: position).copyMemory(from: base, byteCount: source.count)
            position += source.count
        }

        mutating func bytes(_ field: Int, _ source: UnsafeRawBufferPointer) {
            lengthDelimited(field, length: source.count)
            bytes(source)
        }
    }

    /// Reads fields in place; every read is bounds-checked and a malformed input ends in nil.
    struct Reader {
        let buffer: UnsafeRawBufferPointer
        var position: Int
        let end: Int

        init(_ buffer: UnsafeRawBufferPointer, range: Range<Int>? = nil) {
            self.buffer = buffer
            position = range?.lowerBound ?? 0
            end = range?.upperBound ?? buffer.count
        }

        var atEnd: Bool { position >= end }

        mutating func varint() -> UInt64? {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while position < end, shift < 64 {
                let byte = buffer[position]
                position += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
            return nil
        }

        enum Value {
            case varint(UInt64)
            case fixed64(UInt64)
            case fixed32(UInt32)
            /// The field's bytes, as a range of the buffer.
            case bytes(Range<Int>)
        }

        /// The next field, or nil at a malformed one.
        mutating func field() -> (number: Int, value: Value)? {
            guard let key = varint(), key >> 3 > 0, key >> 3 <= UInt64(Int32.max) else { return nil }
            let number = Int(key >> 3)
            switch key & 7 {
            case 0:
                guard let v = varint() else { return nil }
                return (number, .varint(v))
            case 1:
                guard end - position >= 8 else { return nil }
                let v = UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: position, as: UInt64.self))
                position += 8
                return (number, .fixed64(v))
            case 2:
                guard let n = varint(), n <= UInt64(end - position) else { return nil }
                let range = position ..< position + Int(n)
                position += Int(n)
                return (number, .bytes(range))
            case 5:
                guard end - position >= 4 else { return nil }
                let v = UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: position, as: UInt32.self))
                position += 4
                return (number, .fixed32(v))
            default:
                return nil
            }
        }
    }
}
