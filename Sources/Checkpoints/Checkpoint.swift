import Crypto
import FileIO
import Foundation
import Tensors
import Wire

/// A training checkpoint: metadata plus named records (float tensors or opaque bytes).
///
/// File layout (all integers little-endian), version 2:
///
///     "CSPTCKPT"                      8 bytes magic
///     u32 format version              2
///     u32 flags                       0 (reserved)
///     32 bytes                        fingerprint: SHA-256 of the settings that change the maths
///                                     (meta.maths_settings); zeros when unknown
///     u64 metadata length L
///     L bytes                         csptrain.v1.CheckpointMeta (protobuf), names the records
///     u32 CRC32C of the fingerprint and the metadata
///     per record, in the order of meta.records:
///       u32 encoding                  1 dense float32, 2 bitmask + float32, 3 Rice gaps + float32,
///                                     4 bytes
///       u64 value count               (bytes: the byte count)
///       u64 index length M            (0 for dense and bytes)
///       u64 values length V
///       M + V bytes                   positions, then values
///       u32 CRC32C of this record from its encoding field to its last byte
///     "CSPTDONE"                      8 bytes: the file is complete
///
/// Float records pick the smallest of their encodings (the sparse ones of the broadcast), so a
/// sparse model's checkpoint shrinks with its density; every bit is kept (−0.0 included).
/// Version 1 files (no fingerprint, encodings 1 and 2) are still read. See
/// Sources/Checkpoints/README.md.
public struct Checkpoint: Sendable, Equatable {
    public struct Record: Sendable, Equatable {
        public enum Payload: Sendable, Equatable {
            case floats([Float])
            case bytes([UInt8])
        }
        public var name: String
        public var shape: [Int]
        /// "param" for model weights, "optimizer/<slot>" for optimizer state, ...
        public var role: String
        public var payload: Payload

        public init(name: String, shape: [Int], role: String, values: [Float]) {
            self.name = name
            self.shape = shape
            self.role = role
            payload = .floats(values)
        }

        public init(name: String, role: String, bytes: [UInt8]) {
            self.name = name
            shape = [bytes.count]
            self.role = role
            payload = .bytes(bytes)
        }

        /// The float values ([] for a bytes record).
        public var values: [Float] {
            if case let .floats(v) = payload { return v }
            return []
        }

        public var bytes: [UInt8]? {
            if case let .bytes(b) = payload { return b }
            return nil
        }

        public var count: Int {
            switch payload {
            case let .floats(v): v.count
            case let .bytes(b): b.count
            }
        }

        /// Bit-exact equality (Float's == would equate −0 and +0, and never NaN with itself).
        public static func == (a: Record, b: Record) -> Bool {
            guard a.name == b.name, a.shape == b.shape, a.role == b.role else { return false }
            switch (a.payload, b.payload) {
            case let (.floats(x), .floats(y)): return x.count == y.count && zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern }
            case let (.bytes(x), .bytes(y)): return x == y
            default: return false
            }
        }
    }

    public var step: Int
    public var runID: String
    /// The resolved run configuration, enough to rebuild model and data.
    public var configYAML: String
    public var createdUnix: Double
    public var lastLoss: Double
    /// The settings that change the maths ("key = value" lines); the fingerprint hashes them.
    public var mathsSettings: String
    /// Data order, optimizer counter, RNG, pruning scalars: what a resume needs besides records.
    public var state: Csptrain_V1_TrainingState
    public var records: [Record]
    /// The format version the checkpoint was read from (written files are always the current one).
    public internal(set) var formatVersion: UInt32 = Checkpoint.currentVersion

    public init(step: Int, runID: String, configYAML: String, createdUnix: Double = Date().timeIntervalSince1970,
                lastLoss: Double = .nan, mathsSettings: String = "", state: Csptrain_V1_TrainingState = .init(),
                records: [Record]) {
        self.step = step
        self.runID = runID
        self.configYAML = configYAML
        self.createdUnix = createdUnix
        self.lastLoss = lastLoss
        self.mathsSettings = mathsSettings
        self.state = state
        self.records = records
    }

    /// SHA-256 of `mathsSettings` (zeros when there are none).
    public var fingerprint: [UInt8] {
        mathsSettings.isEmpty ? [UInt8](repeating: 0, count: 32) : Array(SHA256.hash(data: Data(mathsSettings.utf8)))
    }

    public func record(named name: String, role: String = "param") -> Record? {
        records.first { $0.name == name && $0.role == role }
    }

    public func records(role: String) -> [Record] { records.filter { $0.role == role } }

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
    public static let currentVersion: UInt32 = 2

    public enum Encoding: UInt32, Sendable, CaseIterable {
        case dense = 1, bitmask = 2, rice = 3, bytes = 4
        public var name: String {
            switch self {
            case .dense: "dense"
            case .bitmask: "bitmask"
            case .rice: "rice"
            case .bytes: "bytes"
            }
        }
    }

}

/// The size of each record as stored, for `checkpoint inspect`.
public struct RecordLayout: Sendable {
    public var name: String
    public var role: String
    public var shape: [Int]
    public var encoding: Checkpoint.Encoding
    public var count: Int
    /// Bytes in the file, framing and checksum included.
    public var storedBytes: Int
    /// The record's CRC32C as stored (equal values give equal checksums: compare two checkpoints).
    public var checksum: UInt32
}

extension Checkpoint {
    /// Reads a checkpoint with its header and each record's encoding, size and checksum as stored
    /// (for `checkpoint inspect`), verifying every checksum.
    public static func layout(of bytes: [UInt8], source: String) throws(CheckpointError) -> (Header, [RecordLayout], Checkpoint) {
        var r = ByteReader(bytes: bytes, source: source)
        let header = try readHeader(&r)
        var out: [RecordLayout] = []
        var records: [Record] = []
        for info in header.meta.records {
            let start = r.offset
            let record = try readRecord(info, from: &r, bytes: bytes, version: header.formatVersion)
            records.append(record)
            let (raw, crc) = bytes.withUnsafeBytes {
                ($0.loadUnaligned(fromByteOffset: start, as: UInt32.self), $0.loadUnaligned(fromByteOffset: r.offset - 4, as: UInt32.self))
            }
            out.append(RecordLayout(name: record.name, role: record.role, shape: record.shape,
                                    encoding: Encoding(rawValue: UInt32(littleEndian: raw)) ?? .dense,
                                    count: record.count, storedBytes: r.offset - start, checksum: UInt32(littleEndian: crc)))
        }
        guard try r.read(8, what: "end marker") == endMagic else {
            throw .corrupt(source, "end marker missing: the file is incomplete")
        }
        return (header, out, Checkpoint(header: header, records: records))
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
    /// A file operation failed: the errno, its text, the path and, for a full or failing disk, the file system.
    case file(FileError)
    case noCheckpoint(String)

    public var description: String {
        switch self {
        case let .notACheckpoint(f): "\(f): not a csptrain checkpoint (bad magic bytes)"
        case let .unsupportedVersion(f, v): "\(f): checkpoint format version \(v) is not supported (this build reads versions 1 to \(Checkpoint.currentVersion); a newer csptrain wrote it?)"
        case let .truncated(f, what): "\(f): file ends inside the \(what): it is truncated (was the write interrupted?)"
        case let .corrupt(f, what): "\(f): corrupt: \(what)"
        case let .missingRecord(name, role): "checkpoint has no \(role) record for tensor '\(name)': it was written for a different model"
        case let .shapeMismatch(name, e, f): "tensor '\(name)' has shape \(f) in the checkpoint but the model expects \(e)"
        case let .io(f, what): "\(f): \(what)"
        case let .file(error): "\(error)"
        case let .noCheckpoint(dir): "\(dir) holds no checkpoint (no checkpoints/latest, or it is empty)"
        }
    }
}

func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    mutating func appendRecordHeader(_ encoding: Checkpoint.Encoding, count: Int, indexLength: Int, valuesLength: Int) {
        append(encoding.rawValue)
        append(UInt64(count))
        append(UInt64(indexLength))
        append(UInt64(valuesLength))
    }
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

    /// The range of the next `n` bytes, skipped.
    mutating func skip(_ n: Int, what: String) throws(CheckpointError) -> Range<Int> {
        guard n >= 0, bytes.count - offset >= n else { throw .truncated(source, what) }
        defer { offset += n }
        return offset ..< offset + n
    }

    mutating func read<T: FixedWidthInteger>(what: String = "header") throws(CheckpointError) -> T {
        let size = MemoryLayout<T>.size
        guard bytes.count - offset >= size else { throw .truncated(source, what) }
        defer { offset += size }
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
