import Foundation
import Tensors
import Transport
import Wire

public typealias Request = Csptrain_V1_Request
public typealias Reply = Csptrain_V1_Reply

/// The protocol version this build speaks (Proto/csptrain/v1).
public let protocolVersion: UInt32 = 1

/// Protobuf ↔ nng message conversions and the protocol's small helpers.
/// Bytes each tensor of `values` takes in a weights broadcast (the encoding the coordinator would
/// choose, with its framing): what a model costs to send or store in the sparse formats.
public func broadcastBytesPerTensor(_ values: [Float], layout: ParameterLayout, half: Bool = false) -> [Int] {
    WireCodec.weights(values, layout: layout, version: 0, half: half).tensors.map { (try? $0.serializedData().count) ?? 0 }
}

enum WireCodec {
    static func header(runID: String, step: Int, session: Data = Data()) -> Csptrain_V1_Header {
        var h = Csptrain_V1_Header()
        h.protocolVersion = protocolVersion
        h.runID = runID
        h.step = UInt64(step)
        h.session = session
        return h
    }

    static func message(_ request: Request) throws -> Message {
        try Message(request.serializedBytes() as [UInt8])
    }

    static func message(_ reply: Reply) throws -> Message {
        try Message(reply.serializedBytes() as [UInt8])
    }

    static func refusal(_ code: Csptrain_V1_Refusal.Code, _ reason: String, runID: String, step: Int) -> Reply {
        var reply = Reply()
        reply.header = header(runID: runID, step: step)
        var r = Csptrain_V1_Refusal()
        r.code = code
        r.reason = reason
        reply.refusal = r
        return reply
    }

    /// Float32 values as little-endian bytes in one copy.
    static func littleEndianData(_ values: UnsafeBufferPointer<Float>) -> Data {
        #if _endian(little)
        return Data(buffer: values)
        #else
        return Data(FloatEncoding.denseBytes(values))
        #endif
    }

    /// A Data view of a received message's bytes, without copying them, for parsing inside the
    /// scope of `withUnsafeBytes`. Safe because protobuf parsing copies what it keeps (it reads
    /// through a scoped pointer itself).
    static func borrowedData(_ bytes: UnsafeRawBufferPointer) -> Data {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return Data() }
        return Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
    }

    static func tensorInfos(_ layout: ParameterLayout) -> [Csptrain_V1_TensorInfo] {
        layout.tensors.map { spec in
            var t = Csptrain_V1_TensorInfo()
            t.name = spec.name
            t.shape = spec.shape.map { UInt32($0) }
            t.offset = UInt64(spec.offset)
            t.count = UInt64(spec.count)
            t.prunable = spec.prunable
            return t
        }
    }

    /// Encodes each tensor in the smallest of dense, bitmask and Rice-coded positions. With
    /// `previous` (the weights of version − 1), a tensor whose non-zero positions did not change
    /// is sent as values only; such a message is for receivers holding exactly that version.
    /// With `half`, values travel as binary16 (the caller has rounded them to it).
    static func weights(_ values: [Float], layout: ParameterLayout, version: UInt64, previous: [Float]? = nil,
                        half: Bool = false) -> Csptrain_V1_Weights {
        var w = Csptrain_V1_Weights()
        w.version = version
        func valueData(_ float32: [UInt8]) -> Data { Data(half ? FloatEncoding.narrowToHalf(float32) : float32) }
        let valueWidth = half ? 2 : 4
        values.withUnsafeBufferPointer { all in
            for (i, spec) in layout.tensors.enumerated() {
                let v = UnsafeBufferPointer(rebasing: all[spec.range])
                var t = Csptrain_V1_TensorData()
                t.tensor = UInt32(i)
                t.valuesF16 = half
                let nonZero = v.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
                if nonZero < v.count, let previous,
                   previous.withUnsafeBufferPointer({ FloatEncoding.sameSupport(UnsafeBufferPointer(rebasing: $0[spec.range]), v) }) {
                    t.encoding = .values
                    t.values = valueData(FloatEncoding.nonZeroBytes(v))
                    w.tensors.append(t)
                    continue
                }
                // The smallest of dense, bitmask and Rice-coded positions (values follow in every case).
                let maskBytes = (v.count + 7) / 8
                let rice = nonZero < v.count / 2 ? RiceGaps.encode(v).code : nil
                if let rice, rice.count < maskBytes, rice.count + nonZero * valueWidth < v.count * valueWidth {
                    t.encoding = .riceF32
                    t.mask = Data(rice)
                    t.values = valueData(FloatEncoding.nonZeroBytes(v))
                } else if maskBytes + nonZero * valueWidth < v.count * valueWidth {
                    let (mask, values) = FloatEncoding.bitmask(v)
                    t.encoding = .bitmaskF32
                    t.mask = Data(mask)
                    t.values = valueData(values)
                } else {
                    t.encoding = .denseF32
                    t.values = half ? valueData(FloatEncoding.denseBytes(v)) : littleEndianData(v)
                }
                w.tensors.append(t)
            }
        }
        return w
    }

    /// Decodes broadcast weights into `out` (laid out by `layout`), which holds version
    /// `current` (values-only tensors need version − 1 there); the error names the tensor.
    static func decode(_ weights: Csptrain_V1_Weights, layout: ParameterLayout, into out: inout [Float], current: UInt64?) throws {
        guard weights.tensors.count == layout.tensors.count else {
            throw ProtocolViolation("weights carry \(weights.tensors.count) tensors, the model has \(layout.tensors.count)")
        }
        if let t = weights.tensors.first(where: { $0.encoding == .values }), current != weights.version &- 1 {
            let name = Int(t.tensor) < layout.tensors.count ? layout.tensors[Int(t.tensor)].name : "#\(t.tensor)"
            throw ProtocolViolation("weights version \(weights.version) send values only for tensor '\(name)', but this copy is at version \(current.map(String.init) ?? "none"), not \(weights.version &- 1)")
        }
        var seen = Set<UInt32>()
        try out.withUnsafeMutableBufferPointer { all in
            for t in weights.tensors {
                guard Int(t.tensor) < layout.tensors.count else { throw ProtocolViolation("weights name tensor \(t.tensor), which does not exist") }
                guard seen.insert(t.tensor).inserted else { throw ProtocolViolation("weights carry tensor \(t.tensor) twice") }
                let spec = layout.tensors[Int(t.tensor)]
                let target = UnsafeMutableBufferPointer(rebasing: all[spec.range])
                var widened: [UInt8]?
                if t.valuesF16 {
                    widened = t.values.withUnsafeBytes { FloatEncoding.widenHalf($0) }
                    guard widened != nil else { throw ProtocolViolation("weights for tensor '\(spec.name)': an odd number of binary16 value bytes") }
                }
                let decodeValues = { (v: UnsafeRawBufferPointer) -> Bool in
                    switch t.encoding {
                    case .denseF32: return FloatEncoding.decodeDense(v, into: target)
                    case .bitmaskF32: return t.mask.withUnsafeBytes { m in FloatEncoding.decodeBitmask(mask: m, nonZero: v, into: target) }
                    case .riceF32: return t.mask.withUnsafeBytes { m in FloatEncoding.decodeRice(code: m, nonZero: v, into: target) }
                    case .values: return FloatEncoding.decodeValuesOnly(v, into: target)
                    default: return false
                    }
                }
                let ok = widened.map { $0.withUnsafeBytes(decodeValues) } ?? t.values.withUnsafeBytes(decodeValues)
                guard ok else { throw ProtocolViolation("weights for tensor '\(spec.name)' do not decode (\(t.encoding), \(t.values.count) value bytes)") }
            }
        }
    }
}

/// A peer broke the protocol; the message says how.
public struct ProtocolViolation: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Monotonic seconds since the process started: for deadlines, never for wall time.
enum Monotonic {
    private static let origin = ContinuousClock.now
    static var now: Double {
        let d = ContinuousClock.now - origin
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

func randomBytes(_ n: Int) -> Data {
    var g = SystemRandomNumberGenerator()
    return Data((0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &g) })
}
