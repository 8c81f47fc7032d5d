import Foundation
import Tensors

/// A weights version serialised once as a `csptrain.v1.Weights` message: every reply that carries
/// this version shares these bytes.
public final class WeightsFrame: Sendable {
    public let version: UInt64
    public let bytes: [UInt8]

    public init(_ weights: EncodedWeights) {
        version = weights.version
        let bodies = weights.tensors.enumerated().map { Self.tensorBytes($1, index: $0) }
        let total = (weights.version == 0 ? 0 : ProtoBytes.tagSize(1) + ProtoBytes.varintSize(weights.version))
            + bodies.reduce(0) { $0 + ProtoBytes.fieldSize(2, length: $1) }
        var out = [UInt8](repeating: 0, count: total)
        out.withUnsafeMutableBytes { raw in
            var w = ProtoBytes.Writer(raw)
            w.uint(1, weights.version)
            for (i, t) in weights.tensors.enumerated() {
                w.lengthDelimited(2, length: bodies[i])
                w.uint(1, UInt64(i))
                w.uint(2, Self.code(t.kind))
                t.values.withUnsafeBytes { if !$0.isEmpty { w.bytes(3, $0) } }
                t.positions.withUnsafeBytes { if !$0.isEmpty { w.bytes(4, $0) } }
                if t.half { w.uint(5, 1) }
            }
            precondition(w.position == total, "weights frame: wrote \(w.position) of \(total) bytes")
        }
        bytes = out
    }

    /// Bytes of one `TensorData` message (without its field tag and length in `Weights`).
    static func tensorBytes(_ t: EncodedTensor, index: Int) -> Int {
        (index == 0 ? 0 : ProtoBytes.tagSize(1) + ProtoBytes.varintSize(UInt64(index)))
            + ProtoBytes.tagSize(2) + ProtoBytes.varintSize(code(t.kind))
            + (t.values.isEmpty ? 0 : ProtoBytes.fieldSize(3, length: t.values.count))
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
        guard tensors.count == layout.tensors.count else {
            throw ProtocolViolation("weights carry \(tensors.count) tensors, the model has \(layout.tensors.count)")
        }
        if let t = tensors.first(where: { $0.encoding == .values }), current != version &- 1 {
            let name = Int(t.tensor) < layout.tensors.count ? layout.tensors[Int(t.tensor)].name : "#\(t.tensor)"
            throw ProtocolViolation("weights version \(version) send values only for tensor '\(name)', but this copy is at version \(current.map(String.init) ?? "none"), not \(version &- 1)")
        }
        var seen = Set<UInt32>()
        var failure: ProtocolViolation?
        out.withUnsafeMutableBufferPointer { all in
            for t in tensors {
                guard Int(t.tensor) < layout.tensors.count else { failure = ProtocolViolation("weights name tensor \(t.tensor), which does not exist"); return }
                guard seen.insert(t.tensor).inserted else { failure = ProtocolViolation("weights carry tensor \(t.tensor) twice"); return }
                let spec = layout.tensors[Int(t.tensor)]
                let target = UnsafeMutableBufferPointer(rebasing: all[spec.range])
                var widened: [UInt8]?
                if t.valuesF16 {
                    widened = t.values.withUnsafeBytes { FloatEncoding.widenHalf($0) }
                    guard widened != nil else { failure = ProtocolViolation("weights for tensor '\(spec.name)': an odd number of binary16 value bytes"); return }
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
                guard ok else { failure = ProtocolViolation("weights for tensor '\(spec.name)' do not decode (\(t.encoding), \(t.values.count) value bytes)"); return }
            }
        }
        if let failure { throw failure }
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
