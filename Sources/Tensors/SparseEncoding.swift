import CKernels

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

    /// Which encoding `v` takes, with the Rice code when that is the one (values not built).
    public struct Plan: Sendable {
        public var kind: Kind
        /// Values stored (non-zero, and −0.0 when kept).
        public var stored: Int
        public var rice: [UInt8]?
    }

    /// The one chooser, for broadcasts and checkpoints alike: the smallest of dense, bitmask and
    /// Rice-coded positions, or values only when the receiver holds the previous version and
    /// the support did not change.
    /// - `valueWidth`: bytes per stored value (4, or 2 for binary16).
    /// - `keepingNegativeZero`: −0.0 counts as a value to store. Checkpoints keep every bit; a
    ///   broadcast may let −0.0 become 0.
    /// - `previous`: the tensor as the receiver holds it (version − 1).
    /// - Rice-coded positions are tried only below 30% density: they take about H(d) bits per
    ///   value against the bitmask's 1, and H(d) > 0.88 from 0.3 to 0.7, where coding overhead
    ///   makes them lose; trying costs a pass over the gaps.
    public static func plan(_ v: UnsafeBufferPointer<Float>, valueWidth: Int = 4, keepingNegativeZero: Bool = false,
                            previous: UnsafeBufferPointer<Float>? = nil) -> Plan {
        let stored = v.isEmpty ? 0 : csp_count_stored(v.baseAddress!, v.count, keepingNegativeZero ? 1 : 0)
        if stored < v.count, let previous, !keepingNegativeZero, FloatEncoding.sameSupport(previous, v) {
            return Plan(kind: .valuesOnly, stored: stored)
        }
        let maskBytes = Bits.byteCount(v.count)
        let denseBytes = v.count * valueWidth
        if stored * 10 < v.count * 3 {
            let rice = RiceGaps.encode(v, keepingNegativeZero: keepingNegativeZero).code
            if rice.count < maskBytes, rice.count + stored * valueWidth < denseBytes {
                return Plan(kind: .rice, stored: stored, rice: rice)
            }
        }
        if maskBytes + stored * valueWidth < denseBytes { return Plan(kind: .bitmask, stored: stored) }
        return Plan(kind: .dense, stored: stored)
    }

    /// `v` encoded as ``plan`` chooses. `half`: values as binary16 (the caller has rounded them).
    /// `denseValues: false` leaves a dense tensor's values out (empty `values`): the framing
    /// copies them from the weights themselves, once.
    public static func encode(_ v: UnsafeBufferPointer<Float>, half: Bool = false, keepingNegativeZero: Bool = false,
                              previous: UnsafeBufferPointer<Float>? = nil, denseValues: Bool = true) -> EncodedTensor {
        let p = plan(v, valueWidth: half ? 2 : 4, keepingNegativeZero: keepingNegativeZero, previous: previous)
        func values(_ float32: [UInt8]) -> [UInt8] { half ? FloatEncoding.narrowToHalf(float32) : float32 }
        switch p.kind {
        case .valuesOnly:
            return EncodedTensor(kind: .valuesOnly, positions: [], values: values(FloatEncoding.nonZeroBytes(v)), half: half)
        case .rice:
            return EncodedTensor(kind: .rice, positions: p.rice ?? [],
                                 values: values(FloatEncoding.nonZeroBytes(v, keepingNegativeZero: keepingNegativeZero)), half: half)
        case .bitmask:
            let (mask, nz) = FloatEncoding.bitmask(v, keepingNegativeZero: keepingNegativeZero)
            return EncodedTensor(kind: .bitmask, positions: mask, values: values(nz), half: half)
        case .dense:
            guard denseValues || half else { return EncodedTensor(kind: .dense, positions: [], values: [], half: false) }
            return EncodedTensor(kind: .dense, positions: [], values: values(FloatEncoding.denseBytes(v)), half: half)
        }
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

    /// True when no tensor is sent as values only: the weights decode without the previous
    /// version, and are the same bytes as the whole model's encoding.
    public var isSelfContained: Bool { !tensors.contains { $0.kind == .valuesOnly } }
}
