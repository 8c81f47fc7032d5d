/// One tensor's values in the smallest of the sparse encodings, for broadcasts and checkpoints
/// alike: dense, a bitmask of non-zero positions, Rice-coded gaps between them, or (for a receiver
/// holding the previous version, when the support did not change) the non-zero values only.
/// In every sparse encoding the non-zero values follow in index order.
public struct EncodedTensor: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case dense
        case bitmask
        case rice
        case valuesOnly
    }

    public var kind: Kind
    /// The bitmask (bit i, LSB first) or the Rice code; empty for dense and values-only.
    public var positions: [UInt8]
    /// Little-endian float32, or IEEE binary16 when `half`.
    public var values: [UInt8]
    public var half: Bool

    public init(kind: Kind, positions: [UInt8], values: [UInt8], half: Bool) {
        self.kind = kind
        self.positions = positions
        self.values = values
        self.half = half
    }

    /// Bytes on the wire or on disk, without framing.
    public var byteCount: Int { positions.count + values.count }

    /// The one chooser.
    /// - `half`: values as binary16 (the caller has rounded them to it).
    /// - `keepingNegativeZero`: −0.0 counts as a value to store. Checkpoints keep every bit; a
    ///   broadcast may let −0.0 become 0.
    /// - `previous`: the tensor as the receiver holds it (version − 1): when its non-zero
    ///   positions are the same, only the values are sent.
    /// - `riceBelowDensity`: Rice-coded positions are tried only below this density (they win
    ///   only on sparse tensors, and trying costs a pass).
    public static func encode(_ v: UnsafeBufferPointer<Float>, half: Bool = false, keepingNegativeZero: Bool = false,
                              previous: UnsafeBufferPointer<Float>? = nil, riceBelowDensity: Double = 0.5) -> EncodedTensor {
        let valueWidth = half ? 2 : 4
        func stored(_ x: Float) -> Bool { x != 0 || (keepingNegativeZero && x.bitPattern != 0) }
        var nonZero = 0
        for x in v where stored(x) { nonZero += 1 }
        func values(_ float32: [UInt8]) -> [UInt8] { half ? FloatEncoding.narrowToHalf(float32) : float32 }
        if nonZero < v.count, let previous, !keepingNegativeZero, FloatEncoding.sameSupport(previous, v) {
            return EncodedTensor(kind: .valuesOnly, positions: [],
                                 values: values(FloatEncoding.nonZeroBytes(v)), half: half)
        }
        let maskBytes = (v.count + 7) / 8
        let denseBytes = v.count * valueWidth
        if Double(nonZero) < riceBelowDensity * Double(v.count) {
            let rice = RiceGaps.encode(v, keepingNegativeZero: keepingNegativeZero).code
            if rice.count < maskBytes, rice.count + nonZero * valueWidth < denseBytes {
                return EncodedTensor(kind: .rice, positions: rice,
                                     values: values(FloatEncoding.nonZeroBytes(v, keepingNegativeZero: keepingNegativeZero)), half: half)
            }
        }
        if maskBytes + nonZero * valueWidth < denseBytes {
            let (mask, nz) = FloatEncoding.bitmask(v, keepingNegativeZero: keepingNegativeZero)
            return EncodedTensor(kind: .bitmask, positions: mask, values: values(nz), half: half)
        }
        return EncodedTensor(kind: .dense, positions: [], values: values(FloatEncoding.denseBytes(v)), half: half)
    }
}

/// A weights version with every tensor encoded (Wire frames it once for every reply).
public struct EncodedWeights: Sendable {
    public let version: UInt64
    public let tensors: [EncodedTensor]
    public init(version: UInt64, tensors: [EncodedTensor]) {
        self.version = version
        self.tensors = tensors
    }
}
