import Foundation
import Tensors

/// Writes the safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes
/// of JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__":
/// {string: string}}`, padded with spaces to a multiple of 8), then the tensors' bytes, each
/// little-endian and row-major, in offset order.
public struct SafeTensorsWriter {
    public enum DType: String, Sendable {
        case f32 = "F32", u8 = "U8", i64 = "I64"
    }

    struct Entry {
        let name: String
        let dtype: DType
        let shape: [Int]
        let bytes: [UInt8]
    }

    private var entries: [Entry] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public var names: [String] { entries.map(\.name) }

    public mutating func add(_ name: String, floats: [Float], shape: [Int]) {
        precondition(shape.reduce(1, *) == floats.count, "\(name): shape \(shape) does not hold \(floats.count) values")
        entries.append(Entry(name: name, dtype: .f32, shape: shape, bytes: FloatEncoding.denseBytes(floats)))
    }

    public mutating func add(_ name: String, bytes: [UInt8], shape: [Int]) {
        precondition(shape.reduce(1, *) == bytes.count)
        entries.append(Entry(name: name, dtype: .u8, shape: shape, bytes: bytes))
    }

    public mutating func add(_ name: String, int64 values: [Int64], shape: [Int]) {
        precondition(shape.reduce(1, *) == values.count)
        entries.append(Entry(name: name, dtype: .i64, shape: shape, bytes: values.withUnsafeBufferPointer { Self.littleEndian($0) }))
    }

    public func encoded() throws -> [UInt8] {
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]] as [String: Any]
            offset += e.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out += json
        for e in entries { out += e.bytes }
        return out
    }

    static func littleEndian<T: FixedWidthInteger>(_ values: UnsafeBufferPointer<T>) -> [UInt8] {
        #if _endian(little)
        return Array(UnsafeRawBufferPointer(values))
        #else
        var out: [UInt8] = []
        for v in values { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        return out
        #endif
    }
}

/// The sparse-bitmask layout of compressed-tensors (Neural Magic's SparseML / llm-compressor)
/// for one weight. Its tensors are named by the weight's name without a trailing `.weight`
/// (`output.weight` → `output.*`; LSTM names such as `lstm.weight_ih_l0` stay whole):
/// - `<prefix>.shape` (I64): the dense shape;
/// - `<prefix>.compressed` (F32): the non-zero values in row-major order;
/// - `<prefix>.bitmask` (U8, rows × ⌈columns/8⌉): bit c % 8 of byte c / 8 of a row (least
///   significant first) set where column c is non-zero;
/// - `<prefix>.row_offsets` (I64, rows): index in `compressed` of each row's first value.
/// Columns are the last dimension; rows are all leading dimensions flattened (a conv weight
/// (Cout, Cin, k) has Cout·Cin rows of k), which packs the same bits as compressed-tensors does
/// along the last axis. See /scripts/check-export.py for a decoder.
public enum SparseBitmask {
    public struct Parts: Sendable, Equatable {
        public var compressed: [Float]
        public var bitmask: [UInt8]
        public var rowOffsets: [Int64]
        public var rows: Int
        public var columns: Int
    }

    public static func prefix(of name: String) -> String {
        name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
    }

    public static func compress(_ values: [Float], shape: [Int]) -> Parts {
        let columns = shape.last ?? values.count
        let rows = columns == 0 ? 0 : values.count / columns
        let rowBytes = (columns + 7) / 8
        var parts = Parts(compressed: [], bitmask: [UInt8](repeating: 0, count: rows * rowBytes), rowOffsets: [], rows: rows, columns: columns)
        for r in 0 ..< rows {
            parts.rowOffsets.append(Int64(parts.compressed.count))
            for c in 0 ..< columns {
                let v = values[r * columns + c]
                guard v != 0 else { continue }
                Bits.set(&parts.bitmask, c, offset: r * rowBytes)
                parts.compressed.append(v)
            }
        }
        return parts
    }
}
