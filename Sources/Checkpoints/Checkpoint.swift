import Foundation
import Tensors
import Wire

/// A training checkpoint: metadata plus named float tensors.
///
/// File layout (all integers little-endian), version 1:
///
///     "CSPTCKPT"                      8 bytes magic
///     u32 format version              1
///     u32 flags                       0 (reserved)
///     u64 metadata length L
///     L bytes                         csptrain.v1.CheckpointMeta (protobuf), names the records
///     u32 CRC32C of the metadata
///     per record, in the order of meta.records:
///       u32 encoding                  1 = dense float32, 2 = bitmask + non-zero float32
///       u64 value count
///       u64 mask length M             (0 for dense)
///       u64 values length V
///       M + V bytes                   mask, then values
///       u32 CRC32C of this record from its encoding field to its last byte
///     "CSPTDONE"                      8 bytes: the file is complete
///
/// Each record picks the smaller of its two encodings, so a sparse model's checkpoint shrinks
/// with its density. See Sources/Checkpoints/README.md.
public struct Checkpoint: Sendable, Equatable {
    public struct Record: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        /// "param" for model weights, "optimizer/<slot>" for optimizer state, ...
        public var role: String
        public var values: [Float]

        public init(name: String, shape: [Int], role: String, values: [Float]) {
            self.name = name
            self.shape = shape
            self.role = role
            self.values = values
        }
    }

    public var step: Int
    public var runID: String
    /// The resolved run configuration, enough to rebuild model and data.
    public var configYAML: String
    public var createdUnix: Double
    public var lastLoss: Double
    public var records: [Record]

    public init(step: Int, runID: String, configYAML: String, createdUnix: Double = Date().timeIntervalSince1970,
                lastLoss: Double = .nan, records: [Record]) {
        self.step = step
        self.runID = runID
        self.configYAML = configYAML
        self.createdUnix = createdUnix
        self.lastLoss = lastLoss
        self.records = records
    }

    public func record(named name: String, role: String = "param") -> Record? {
        records.first { $0.name == name && $0.role == role }
    }

    /// Concatenates the records of `role` in the order of `layout` into one flat buffer.
    public func flatValues(role: String, layout: ParameterLayout) throws(CheckpointError) -> [Float] {
        var out = [Float](repeating: 0, count: layout.totalCount)
        for spec in layout.tensors {
            guard let r = record(named: spec.name, role: role) else { throw .missingRecord(spec.name, role: role) }
            guard r.values.count == spec.count, r.shape == spec.shape else {
                throw .shapeMismatch(spec.name, expected: spec.shape, found: r.shape)
            }
            out.replaceSubrange(spec.range, with: r.values)
        }
        return out
    }

    static let magic = Array("CSPTCKPT".utf8)
    static let endMagic = Array("CSPTDONE".utf8)
    public static let formatVersion: UInt32 = 1

    enum Encoding: UInt32 { case dense = 1, bitmask = 2 }

    // MARK: Encoding

    public func encoded() -> [UInt8] {
        var meta = Csptrain_V1_CheckpointMeta()
        meta.step = UInt64(step)
        meta.runID = runID
        meta.configYaml = configYAML
        meta.createdUnix = createdUnix
        meta.lastLoss = lastLoss
        meta.records = records.map { r in
            var info = Csptrain_V1_RecordInfo()
            info.name = r.name
            info.shape = r.shape.map { UInt32($0) }
            info.role = r.role
            return info
        }
        let metaBytes: [UInt8] = (try? meta.serializedBytes()) ?? []

        var out = ByteWriter()
        out.append(Self.magic)
        out.append(Self.formatVersion)
        out.append(UInt32(0))
        out.append(UInt64(metaBytes.count))
        out.append(metaBytes)
        out.append(CRC32C.checksum(metaBytes))
        for r in records {
            let start = out.bytes.count
            let nonZero = r.values.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            r.values.withUnsafeBufferPointer { v in
                if FloatEncoding.bitmaskSize(count: v.count, nonZero: nonZero) < v.count * 4 {
                    let (mask, values) = FloatEncoding.bitmask(v)
                    out.append(Encoding.bitmask.rawValue)
                    out.append(UInt64(v.count))
                    out.append(UInt64(mask.count))
                    out.append(UInt64(values.count))
                    out.append(mask)
                    out.append(values)
                } else {
                    let values = FloatEncoding.denseBytes(v)
                    out.append(Encoding.dense.rawValue)
                    out.append(UInt64(v.count))
                    out.append(UInt64(0))
                    out.append(UInt64(values.count))
                    out.append(values)
                }
            }
            let crc = out.bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            out.append(crc)
        }
        out.append(Self.endMagic)
        return out.bytes
    }

    // MARK: Decoding

    /// Parses and verifies a checkpoint. `source` names the file in errors.
    public init(decoding bytes: [UInt8], source: String) throws(CheckpointError) {
        var r = ByteReader(bytes: bytes, source: source)
        guard try r.read(8) == Self.magic else { throw .notACheckpoint(source) }
        let version: UInt32 = try r.read()
        guard version == Self.formatVersion else { throw .unsupportedVersion(source, version) }
        _ = try r.read() as UInt32
        let metaLength: UInt64 = try r.read()
        let metaBytes = try r.read(Int(clamping: metaLength), what: "metadata")
        let metaCRC: UInt32 = try r.read()
        guard CRC32C.checksum(metaBytes) == metaCRC else {
            throw .corrupt(source, "metadata checksum mismatch (stored \(hex(metaCRC)), computed \(hex(CRC32C.checksum(metaBytes))))")
        }
        let meta: Csptrain_V1_CheckpointMeta
        do { meta = try Csptrain_V1_CheckpointMeta(serializedBytes: metaBytes) } catch {
            throw .corrupt(source, "metadata does not parse: \(error)")
        }
        var records: [Record] = []
        for info in meta.records {
            let label = "record '\(info.role)/\(info.name)'"
            let start = r.offset
            let rawEncoding: UInt32 = try r.read()
            let count: UInt64 = try r.read()
            let maskLength: UInt64 = try r.read()
            let valuesLength: UInt64 = try r.read()
            let mask = try r.read(Int(clamping: maskLength), what: label)
            let values = try r.read(Int(clamping: valuesLength), what: label)
            let computed = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start ..< r.offset])) }
            let stored: UInt32 = try r.read()
            guard computed == stored else {
                throw .corrupt(source, "\(label) checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
            }
            guard let encoding = Encoding(rawValue: rawEncoding) else {
                throw .corrupt(source, "\(label) has unknown encoding \(rawEncoding)")
            }
            let shape = info.shape.map { Int($0) }
            guard shape.reduce(1, *) == Int(count) else {
                throw .corrupt(source, "\(label) holds \(count) values but its shape \(shape) needs \(shape.reduce(1, *))")
            }
            var out = [Float](repeating: 0, count: Int(count))
            let ok = out.withUnsafeMutableBufferPointer { o in
                values.withUnsafeBytes { v in
                    switch encoding {
                    case .dense: FloatEncoding.decodeDense(v, into: o)
                    case .bitmask: mask.withUnsafeBytes { m in FloatEncoding.decodeBitmask(mask: m, nonZero: v, into: o) }
                    }
                }
            }
            guard ok else { throw .corrupt(source, "\(label): payload sizes do not match its value count \(count)") }
            records.append(Record(name: info.name, shape: shape, role: info.role, values: out))
        }
        guard try r.read(8, what: "end marker") == Self.endMagic else {
            throw .corrupt(source, "end marker missing: the file is incomplete")
        }
        self.init(step: Int(meta.step), runID: meta.runID, configYAML: meta.configYaml,
                  createdUnix: meta.createdUnix, lastLoss: meta.lastLoss, records: records)
    }
}

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case notACheckpoint(String)
    case unsupportedVersion(String, UInt32)
    case truncated(String, String)
    case corrupt(String, String)
    case missingRecord(String, role: String)
    case shapeMismatch(String, expected: [Int], found: [Int])
    case io(String, String)
    case noCheckpoint(String)

    public var description: String {
        switch self {
        case let .notACheckpoint(f): "\(f): not a csptrain checkpoint (bad magic bytes)"
        case let .unsupportedVersion(f, v): "\(f): checkpoint format version \(v) is not supported (this build reads version \(Checkpoint.formatVersion))"
        case let .truncated(f, what): "\(f): file ends inside the \(what): it is truncated (was the write interrupted?)"
        case let .corrupt(f, what): "\(f): corrupt: \(what)"
        case let .missingRecord(name, role): "checkpoint has no \(role) record for tensor '\(name)': it was written for a different model"
        case let .shapeMismatch(name, e, f): "tensor '\(name)' has shape \(f) in the checkpoint but the model expects \(e)"
        case let .io(f, what): "\(f): \(what)"
        case let .noCheckpoint(dir): "no checkpoint in \(dir)"
        }
    }
}

private func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

struct ByteReader {
    let bytes: [UInt8]
    let source: String
    var offset = 0

    mutating func read(_ n: Int, what: String = "header") throws(CheckpointError) -> [UInt8] {
        guard n >= 0, bytes.count - offset >= n else { throw .truncated(source, what) }
        defer { offset += n }
        return Array(bytes[offset ..< offset + n])
    }

    mutating func read<T: FixedWidthInteger>() throws(CheckpointError) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - offset >= size else { throw .truncated(source, "header") }
        defer { offset += size }
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
