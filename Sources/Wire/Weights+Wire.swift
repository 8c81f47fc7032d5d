import Foundation
import Tensors

/// A weights version serialised once as a `csptrain.v1.Weights` message: every reply that carries
/// this version shares these bytes.
public final class WeightsFrame: Sendable {
    public let version: UInt64
    public let bytes: [UInt8]

    /// Frames tensors that carry their values (dense ones encoded with `denseValues: false` need
    /// ``init(_:layout:source:)``).
    public convenience init(_ weights: EncodedWeights) {
        self.init(weights, layout: nil, source: nil)
    }

    /// With `source` (the weights the version was encoded from, laid out by `layout`), dense
    /// tensors encoded without their values are copied from it straight into the frame: the
    /// only copy of a dense model's values on the coordinator before the replies.
    public init(_ weights: EncodedWeights, layout: ParameterLayout?, source: UnsafeBufferPointer<Float>?) {
        version = weights.version
        func denseFromSource(_ i: Int, _ t: EncodedTensor) -> Range<Int>? {
            guard t.kind == .dense, t.values.isEmpty, let layout, source != nil, layout.tensors[i].count > 0 else { return nil }
            return layout.tensors[i].range
        }
        let sourced = weights.tensors.enumerated().map { denseFromSource($0, $1) }
        let bodies = weights.tensors.enumerated().map { i, t in
            Self.tensorBytes(t, index: i, valueBytes: sourced[i].map { $0.count * 4 } ?? t.values.count)
        }
        let total = (weights.version == 0 ? 0 : ProtoBytes.tagSize(1) + ProtoBytes.varintSize(weights.version))
            + bodies.reduce(0) { $0 + ProtoBytes.fieldSize(2, length: $1) }
        // Every byte is written below: no need to zero the buffer first.
        bytes = [UInt8](unsafeUninitializedCapacity: total) { raw, count in
            var w = ProtoBytes.Writer(UnsafeMutableRawBufferPointer(raw))
            w.uint(1, weights.version)
            for (i, t) in weights.tensors.enumerated() {
                w.lengthDelimited(2, length: bodies[i])
                w.uint(1, UInt64(i))
                w.uint(2, Self.code(t.kind))
                if let range = sourced[i], let source {
                    #if _endian(little)
                    w.bytes(3, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: source[range])))
                    #else
                    FloatEncoding.denseBytes(UnsafeBufferPointer(rebasing: source[range])).withUnsafeBytes { w.bytes(3, $0) }
                    #endif
                } else {
                    t.values.withUnsafeBytes { if !$0.isEmpty { w.bytes(3, $0) } }
                }
                t.positions.withUnsafeBytes { if !$0.isEmpty { w.bytes(4, $0) } }
                if t.half { w.uint(5, 1) }
            }
            precondition(w.position == total, "weights frame: wrote \(w.position) of \(total) bytes")
            count = total
        }
    }

    /// Bytes of one `TensorData` message (without its field tag and length in `Weights`).
    static func tensorBytes(_ t: EncodedTensor, index: Int, valueBytes: Int? = nil) -> Int {
        let values = valueBytes ?? t.values.count
        return (index == 0 ? 0 : ProtoBytes.tagSize(1) + ProtoBytes.varintSize(UInt64(index)))
            + ProtoBytes.tagSize(2) + ProtoBytes.varintSize(code(t.kind))
            + (values == 0 ? 0 : ProtoBytes.fieldSize(3, length: values))
            + (t.positions.isEmpty ? 0 : ProtoBytes.fieldSize(4, length: t.positions.count))
            + (t.half ? ProtoBytes.tagSize(5) + 1 : 0)
    }

    static func code(_ kind: EncodedTensor.Kind) -> UInt64 {
        switch kind {
        case .dense: UInt64(Csptrain_V1_Encoding.denseF32.rawValue)
        case .bitmask: UInt64(Csptrain_V1_Encoding.bitmaskF32.rawValue)
        case .rice: UInt64(Csptrain_V1_Encoding.riceF32.rawValue)
        case .valuesOnly: UInt64(Csptrain_V1_Encoding.values.rawValue)
        }
    }
}

/// A peer broke the protocol; the message says how.
public struct ProtocolViolation: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension Csptrain_V1_Weights {
    /// Decodes into `out` (laid out by `layout`), which holds version `current` (values-only
    /// tensors need version − 1 there); the error names the tensor.
    public func decode(layout: ParameterLayout, into out: inout [Float], current: UInt64?) throws(ProtocolViolation) {
        let bytes: [UInt8]
        do { bytes = try serializedBytes() } catch { throw ProtocolViolation("weights do not serialise: \(error)") }
        var failure: ProtocolViolation?
        bytes.withUnsafeBytes { raw in
            do { try WeightsDecoding.decode(raw, layout: layout, into: &out, current: current) } catch let error as ProtocolViolation { failure = error } catch { failure = ProtocolViolation("\(error)") }
        }
        if let failure { throw failure }
    }
}

/// The one weights decoder: reads a `csptrain.v1.Weights` message where it lies (a received
/// reply) and writes the values into the model's flat buffer.
public enum WeightsDecoding {
    struct Part {
        var tensor = 0
        var encoding = 0
        var values: Range<Int> = 0 ..< 0
        var mask: Range<Int> = 0 ..< 0
        var half = false
    }

    /// Decodes the message in `bytes[range]` into `out`; returns its version.
    @discardableResult
    public static func decode(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil, layout: ParameterLayout,
                              into out: inout [Float], current: UInt64?) throws(ProtocolViolation) -> UInt64 {
        var version: UInt64 = 0
        var parts: [Part] = []
        var reader = ProtoBytes.Reader(bytes, range: range)
        while !reader.atEnd {
            guard let (number, value) = reader.field() else { throw ProtocolViolation("weights: malformed field at byte \(reader.position)") }
            switch (number, value) {
            case let (1, .varint(v)): version = v
            case let (2, .bytes(r)):
                var part = Part()
                var t = ProtoBytes.Reader(bytes, range: r)
                while !t.atEnd {
                    guard let (n, v) = t.field() else { throw ProtocolViolation("weights: malformed tensor at byte \(t.position)") }
                    switch (n, v) {
                    case let (1, .varint(x)): part.tensor = Int(clamping: x)
                    case let (2, .varint(x)): part.encoding = Int(clamping: x)
                    case let (3, .bytes(x)): part.values = x
                    case let (4, .bytes(x)): part.mask = x
                    case let (5, .varint(x)): part.half = x != 0
                    default: break  // unknown fields are skipped, as protobuf readers do
                    }
                }
                parts.append(part)
            default: break
            }
        }
        guard parts.count == layout.tensors.count else {
            throw ProtocolViolation("weights carry \(parts.count) tensors, the model has \(layout.tensors.count)")
        }
        let valuesOnly = Int(Csptrain_V1_Encoding.values.rawValue)
        if let p = parts.first(where: { $0.encoding == valuesOnly }), current != version &- 1 {
            let name = p.tensor < layout.tensors.count ? layout.tensors[p.tensor].name : "#\(p.tensor)"
            throw ProtocolViolation("weights version \(version) send values only for tensor '\(name)', but this copy is at version \(current.map(String.init) ?? "none"), not \(version &- 1)")
        }
        var seen = Set<Int>()
        var failure: ProtocolViolation?
        out.withUnsafeMutableBufferPointer { all in
            for p in parts {
                guard p.tensor < layout.tensors.count else { failure = ProtocolViolation("weights name tensor \(p.tensor), which does not exist"); return }
                guard seen.insert(p.tensor).inserted else { failure = ProtocolViolation("weights carry tensor \(p.tensor) twice"); return }
                let spec = layout.tensors[p.tensor]
                let target = UnsafeMutableBufferPointer(rebasing: all[spec.range])
                let mask = UnsafeRawBufferPointer(rebasing: bytes[p.mask])
                var widened: [UInt8]?
                if p.half {
                    widened = FloatEncoding.widenHalf(UnsafeRawBufferPointer(rebasing: bytes[p.values]))
                    guard widened != nil else { failure = ProtocolViolation("weights for tensor '\(spec.name)': an odd number of binary16 value bytes"); return }
                }
                let decodeValues = { (v: UnsafeRawBufferPointer) -> Bool in
                    switch Csptrain_V1_Encoding(rawValue: p.encoding) {
                    case .denseF32?: return FloatEncoding.decodeDense(v, into: target)
                    case .bitmaskF32?: return FloatEncoding.decodeBitmask(mask: mask, nonZero: v, into: target)
                    case .riceF32?: return FloatEncoding.decodeRice(code: mask, nonZero: v, into: target)
                    case .values?: return FloatEncoding.decodeValuesOnly(v, into: target)
                    default: return false
                    }
                }
                let ok = widened.map { $0.withUnsafeBytes(decodeValues) } ?? decodeValues(UnsafeRawBufferPointer(rebasing: bytes[p.values]))
                guard ok else {
                    failure = ProtocolViolation("weights for tensor '\(spec.name)' do not decode (encoding \(p.encoding), \(p.values.count) value bytes)")
                    return
                }
            }
        }
        if let failure { throw failure }
        return version
    }
}

extension ParameterLayout {
    /// The model's tensors as the welcome describes them.
    public var wireTensors: [Csptrain_V1_TensorInfo] {
        tensors.map { spec in
            Csptrain_V1_TensorInfo.with {
                $0.name = spec.name
                $0.shape = spec.shape.map { UInt32($0) }
                $0.offset = UInt64(spec.offset)
                $0.count = UInt64(spec.count)
                $0.prunable = spec.prunable
            }
        }
    }
}

/// Bytes each tensor of `values` takes in a weights broadcast (the encoding the coordinator
/// would choose, with its framing): what a model costs to send or store in the sparse formats.
public func broadcastBytesPerTensor(_ values: [Float], layout: ParameterLayout, half: Bool = false) -> [Int] {
    values.withUnsafeBufferPointer { all in
        layout.tensors.enumerated().map { i, spec in
            let t = EncodedTensor.encode(UnsafeBufferPointer(rebasing: all[spec.range]), half: half)
            return WeightsFrame.tensorBytes(t, index: i)
        }
    }
}
