/// The subset of ONNX's protobuf messages an exported csptrain model uses, written by hand
/// (onnx/onnx.proto, IR version 8): ModelProto, GraphProto, NodeProto, AttributeProto,
/// TensorProto, ValueInfoProto with TypeProto.Tensor and TensorShapeProto. Only writing: the
/// field numbers below are onnx.proto's. A message is its fields in field-number order, each a
/// varint key (number << 3 | wire type) and a varint, a little-endian fixed32, or a
/// length-delimited payload.
public enum ONNX {
    /// Protobuf wire encoding of one message.
    public struct Message: Sendable {
        public private(set) var bytes: [UInt8] = []
        public init() {}

        mutating func varint(_ v: UInt64) {
            var v = v
            while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
            bytes.append(UInt8(v))
        }

        mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

        public mutating func int(_ field: Int, _ v: Int) { key(field, 0); varint(UInt64(bitPattern: Int64(v))) }

        public mutating func float(_ field: Int, _ v: Float) {
            key(field, 5)
            withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }

        public mutating func bytes(_ field: Int, _ b: [UInt8]) {
            key(field, 2)
            varint(UInt64(b.count))
            bytes.append(contentsOf: b)
        }

        public mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }

        public mutating func message(_ field: Int, _ m: Message) { bytes(field, m.bytes) }

        /// A packed repeated int64.
        public mutating func packedInts(_ field: Int, _ values: [Int]) {
            var inner = Message()
            for v in values { inner.varint(UInt64(bitPattern: Int64(v))) }
            bytes(field, inner.bytes)
        }
    }

    public enum DataType: Int { case float = 1, int64 = 7 }

    /// TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9 (little-endian values).
    public static func tensor(_ name: String, dims: [Int], floats: [Float]) -> Message {
        precondition(dims.reduce(1, *) == floats.count, "\(name): dims \(dims) do not hold \(floats.count) values")
        var m = Message()
        m.packedInts(1, dims)
        m.int(2, DataType.float.rawValue)
        m.string(8, name)
        var raw = [UInt8]()
        raw.reserveCapacity(floats.count * 4)
        for v in floats { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw.append(contentsOf: $0) } }
        m.bytes(9, raw)
        return m
    }

    public static func tensor(_ name: String, dims: [Int], int64s: [Int]) -> Message {
        var m = Message()
        m.packedInts(1, dims)
        m.int(2, DataType.int64.rawValue)
        m.string(8, name)
        var raw = [UInt8]()
        for v in int64s { withUnsafeBytes(of: Int64(v).littleEndian) { raw.append(contentsOf: $0) } }
        m.bytes(9, raw)
        return m
    }

    /// AttributeProto: name = 1, f = 2, i = 3, s = 4, ints = 8, strings = 9, type = 20
    /// (FLOAT 1, INT 2, STRING 3, INTS 7, STRINGS 8).
    public enum Attribute {
        case int(Int)
        case float(Float)
        case string(String)
        case ints([Int])
        case strings([String])

        func encoded(_ name: String) -> Message {
            var m = Message()
            m.string(1, name)
            switch self {
            case let .float(v): m.float(2, v); m.int(20, 1)
            case let .int(v): m.int(3, v); m.int(20, 2)
            case let .string(s): m.string(4, s); m.int(20, 3)
            case let .ints(v): for x in v { m.int(8, x) }; m.int(20, 7)
            case let .strings(v): for s in v { m.string(9, s) }; m.int(20, 8)
            }
            return m
        }
    }

    /// NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5.
    public static func node(_ op: String, name: String, inputs: [String], outputs: [String],
                            attributes: [(String, Attribute)] = []) -> Message {
        var m = Message()
        for i in inputs { m.string(1, i) }
        for o in outputs { m.string(2, o) }
        m.string(3, name)
        m.string(4, op)
        for (n, a) in attributes { m.message(5, a.encoded(n)) }
        return m
    }

    /// ValueInfoProto (name = 1, type = 2) of a float tensor; a dimension is a size (dim_value = 1)
    /// or a symbolic name (dim_param = 2).
    public enum Dimension { case size(Int), named(String) }

    public static func valueInfo(_ name: String, dims: [Dimension]) -> Message {
        var shape = Message()
        for d in dims {
            var dim = Message()
            switch d {
            case let .size(v): dim.int(1, v)
            case let .named(s): dim.string(2, s)
            }
            shape.message(1, dim)
        }
        var tensorType = Message()
        tensorType.int(1, DataType.float.rawValue)
        tensorType.message(2, shape)
        var type = Message()
        type.message(1, tensorType)
        var m = Message()
        m.string(1, name)
        m.message(2, type)
        return m
    }

    /// GraphProto (node = 1, name = 2, initializer = 5, input = 11, output = 12) inside a
    /// ModelProto (ir_version = 1, producer_name = 2, producer_version = 3, graph = 7,
    /// opset_import = 8 with version = 2, metadata_props = 14 as key = 1, value = 2).
    public static func model(graphName: String, nodes: [Message], initializers: [Message], inputs: [Message],
                             outputs: [Message], opset: Int = 17, metadata: [(String, String)] = []) -> [UInt8] {
        var graph = Message()
        for n in nodes { graph.message(1, n) }
        graph.string(2, graphName)
        for t in initializers { graph.message(5, t) }
        for i in inputs { graph.message(11, i) }
        for o in outputs { graph.message(12, o) }
        var m = Message()
        m.int(1, 8)
        m.string(2, "csptrain")
        m.string(3, "1")
        m.message(7, graph)
        var opsetID = Message()
        opsetID.int(2, opset)
        m.message(8, opsetID)
        for (k, v) in metadata {
            var entry = Message()
            entry.string(1, k)
            entry.string(2, v)
            m.message(14, entry)
        }
        return m.bytes
    }
}
