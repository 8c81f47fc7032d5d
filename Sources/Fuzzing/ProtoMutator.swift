import Tensors

/// Field-aware mutations of protobuf messages: the input is parsed into its fields (nested
/// messages too, where a length-delimited field parses as one), a few fields are changed to
/// values decoders find hard (boundaries, lies about lengths, wrong wire types, duplicates,
/// fields from another message of the corpus), and the message is written back. Byte-level
/// damage (a flipped bit, a cut tail, a length that lies) is applied after, now and then, so that
/// malformed framing is tried too.
public struct ProtoMutator {
    /// One field of a parsed message.
    struct Field {
        var number: UInt64
        var wireType: UInt8
        var varint: UInt64 = 0
        var bytes: [UInt8] = []
        /// The fields of a length-delimited field that parses as a message.
        var children: [Field]?
    }

    var rng: SeededRandom

    public init(seed: UInt64) { rng = SeededRandom(key: seed) }

    /// Values at the edges of what varint fields hold (counts, indices, versions, lengths).
    static let interestingVarints: [UInt64] = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 127, 128, 255, 256, 1023, 1024, 4095, 4096, 65535, 65536,
                                               1 << 20, 1 << 24, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40, (1 << 63) - 1,
                                               1 << 63, .max - 1, .max]
    static let interestingDoubles: [Double] = [0, -0.0, 1, -1, .nan, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude,
                                               Double(Float.greatestFiniteMagnitude), 1e300]
    static let interestingFloats: [Float] = [0, -0.0, 1, .nan, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude, 3.4e38]

    /// A mutated copy of `input`; `donor` (another corpus entry) lends fields for crossovers.
    public mutating func mutate(_ input: [UInt8], donor: [UInt8]? = nil, maxBytes: Int = 1 << 20) -> [UInt8] {
        var out: [UInt8]
        if var fields = Self.parse(input[...], depth: 0) {
            let donorFields = donor.flatMap { Self.parse($0[...], depth: 0) } ?? []
            for _ in 0 ..< 1 + Int(rng.next() % 3) { mutateFields(&fields, donor: donorFields, depth: 0) }
            out = Self.serialize(fields)
        } else {
            out = input
        }
        if out.isEmpty || rng.next() % 5 == 0 { damageBytes(&out) }
        if out.count > maxBytes { out.removeLast(out.count - maxBytes) }
        return out
    }

    // MARK: Parsing and writing

    static func parse(_ bytes: ArraySlice<UInt8>, depth: Int) -> [Field]? {
        var fields: [Field] = []
        var i = bytes.startIndex
        func varint() -> UInt64? {
            var result: UInt64 = 0, shift: UInt64 = 0
            while i < bytes.endIndex, shift < 64 {
                let b = bytes[i]
                i += 1
                result |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return result }
                shift += 7
            }
            return nil
        }
        while i < bytes.endIndex {
            guard let tag = varint(), tag >> 3 > 0 else { return nil }
            var f = Field(number: tag >> 3, wireType: UInt8(tag & 7))
            switch f.wireType {
            case 0:
                guard let v = varint() else { return nil }
                f.varint = v
            case 1, 5:
                let n = f.wireType == 1 ? 8 : 4
                guard bytes.endIndex - i >= n else { return nil }
                f.bytes = Array(bytes[i ..< i + n])
                i += n
            case 2:
                guard let n = varint(), n <= UInt64(bytes.endIndex - i) else { return nil }
                f.bytes = Array(bytes[i ..< i + Int(n)])
                i += Int(n)
                if depth < 3, !f.bytes.isEmpty, let children = parse(f.bytes[...], depth: depth + 1), !children.isEmpty {
                    f.children = children
                }
            default:
                return nil
            }
            fields.append(f)
        }
        return fields
    }

    static func serialize(_ fields: [Field]) -> [UInt8] {
        var out: [UInt8] = []
        for f in fields {
            appendVarint(&out, f.number << 3 | UInt64(f.wireType & 7))
            switch f.wireType {
            case 0: appendVarint(&out, f.varint)
            case 2:
                let body = f.children.map(serialize) ?? f.bytes
                appendVarint(&out, UInt64(body.count))
                out += body
            default: out += f.bytes
            }
        }
        return out
    }

    static func appendVarint(_ out: inout [UInt8], _ value: UInt64) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    // MARK: Mutations

    private mutating func pick(_ n: Int) -> Int { Int(rng.next() % UInt64(max(1, n))) }

    private mutating func mutateFields(_ fields: inout [Field], donor: [Field], depth: Int) {
        guard !fields.isEmpty else {
            fields.append(randomField())
            return
        }
        let i = pick(fields.count)
        // Into a nested message, more often than not: that is where the meaning is.
        if fields[i].children != nil, rng.next() % 3 != 0 {
            mutateFields(&fields[i].children!, donor: donor.flatMap { $0.children ?? [] }, depth: depth + 1)
            return
        }
        switch pick(10) {
        case 0: fields.remove(at: i)
        case 1: fields.insert(fields[i], at: pick(fields.count + 1))
        case 2: fields.insert(randomField(), at: pick(fields.count + 1))
        case 3:
            // Same number, another wire type.
            var f = fields[i]
            f.wireType = [0, 1, 2, 5, 3, 7][pick(6)]
            f.children = nil
            if f.wireType == 1 { f.bytes = Array(f.bytes.prefix(8)) + [UInt8](repeating: 0, count: max(0, 8 - f.bytes.count)) }
            if f.wireType == 5 { f.bytes = Array(f.bytes.prefix(4)) + [UInt8](repeating: 0, count: max(0, 4 - f.bytes.count)) }
            if f.wireType == 3 || f.wireType == 7 { f.wireType = 0 }
            fields[i] = f
        case 4 where !donor.isEmpty:
            fields[i] = donor[pick(donor.count)]
        default:
            mutateValue(&fields[i])
        }
    }

    private mutating func mutateValue(_ f: inout Field) {
        switch f.wireType {
        case 0:
            switch pick(4) {
            case 0: f.varint = f.varint &+ 1
            case 1: f.varint = f.varint &- 1
            case 2: f.varint = rng.next() >> (rng.next() % 64)
            default: f.varint = Self.interestingVarints[pick(Self.interestingVarints.count)]
            }
        case 1:
            let d = Self.interestingDoubles[pick(Self.interestingDoubles.count)]
            f.bytes = withUnsafeBytes(of: (rng.next() % 2 == 0 ? d.bitPattern : rng.next()).littleEndian, Array.init)
        case 5:
            f.bytes = withUnsafeBytes(of: Self.interestingFloats[pick(Self.interestingFloats.count)].bitPattern.littleEndian, Array.init)
        default:
            f.children = nil
            mutateBytes(&f.bytes)
        }
    }

    /// Changes a length-delimited value: its length (cut, grown, odd), or its content (values
    /// that are not finite, flipped bits, a run of one byte).
    private mutating func mutateBytes(_ b: inout [UInt8]) {
        switch pick(8) {
        case 0: b.removeLast(pick(b.count + 1))
        case 1: b += (0 ..< 1 + pick(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        case 2: b = []
        case 3: if !b.isEmpty { b.removeLast() }  // an odd count of float bytes
        case 4 where b.count >= 4:
            // A float that is not finite, or huge, at a value boundary.
            let at = pick(b.count / 4) * 4
            let v = Self.interestingFloats[pick(Self.interestingFloats.count)].bitPattern.littleEndian
            withUnsafeBytes(of: v) { for k in 0 ..< 4 { b[at + k] = $0[k] } }
        case 5: b = [UInt8](repeating: [0x00, 0xFF, 0x80, 0x7F][pick(4)], count: b.isEmpty ? 1 + pick(256) : b.count)
        case 6: b += b  // twice as long
        default:
            for _ in 0 ..< 1 + pick(4) where !b.isEmpty { b[pick(b.count)] ^= 1 << UInt8(pick(8)) }
        }
    }

    private mutating func randomField() -> Field {
        var f = Field(number: UInt64(1 + pick(20)), wireType: [0, 1, 2, 5][pick(4)])
        switch f.wireType {
        case 0: f.varint = Self.interestingVarints[pick(Self.interestingVarints.count)]
        case 1: f.bytes = withUnsafeBytes(of: rng.next(), Array.init)
        case 5: f.bytes = withUnsafeBytes(of: UInt32(truncatingIfNeeded: rng.next()), Array.init)
        default: f.bytes = (0 ..< pick(40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        }
        return f
    }

    /// Damage below the field level: a flipped bit, a cut tail, inserted bytes, a length prefix
    /// that claims more than follows.
    private mutating func damageBytes(_ b: inout [UInt8]) {
        switch pick(4) {
        case 0 where !b.isEmpty: b[pick(b.count)] ^= 1 << UInt8(pick(8))
        case 1 where !b.isEmpty: b.removeLast(1 + pick(min(b.count, 16)))
        case 2: b.insert(contentsOf: (0 ..< 1 + pick(8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: pick(b.count + 1))
        default:
            // The first length-delimited tag's length, made to lie.
            if let at = b.indices.first(where: { b[$0] & 7 == 2 && $0 + 1 < b.count && b[$0 + 1] < 0x80 }) {
                b[at + 1] = UInt8(min(127, Int(b[at + 1]) + 1 + pick(100)))
            } else {
                b.append(UInt8(truncatingIfNeeded: rng.next()))
            }
        }
    }
}
