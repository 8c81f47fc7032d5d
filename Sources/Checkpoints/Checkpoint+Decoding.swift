import Crypto
import FileIO
import Foundation
import Tensors
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Reading a checkpoint: header first, then records, every CRC checked.
extension Checkpoint {
    /// What the header of a checkpoint file says, without reading its records.
    public struct Header: Sendable {
        public var formatVersion: UInt32
        public var fingerprint: [UInt8]
        public var meta: Csptrain_V1_CheckpointMeta
    }

    /// Parses and verifies a checkpoint. `source` names the file in errors.
    public init(decoding bytes: [UInt8], source: String) throws(CheckpointError) {
        var r = ByteReader(bytes: bytes, source: source)
        let header = try Self.readHeader(&r)
        let meta = header.meta
        var records: [Record] = []
        for info in meta.records {
            records.append(try Self.readRecord(info, from: &r, bytes: bytes, version: header.formatVersion))
        }
        guard try r.read(8, what: "end marker") == Self.endMagic else {
            throw .corrupt(source, "end marker missing: the file is incomplete")
        }
        self.init(header: header, records: records)
    }

    init(header: Header, records: [Record]) {
        let meta = header.meta
        self.init(step: Int(meta.step), runID: meta.runID, configYAML: meta.configYaml,
                  createdUnix: meta.createdUnix, lastLoss: meta.lastLoss, mathsSettings: meta.mathsSettings,
                  state: meta.state, records: records)
        formatVersion = header.formatVersion
    }

    static func readHeader(_ r: inout ByteReader) throws(CheckpointError) -> Header {
        let source = r.source
        guard try r.read(8) == Self.magic else { throw .notACheckpoint(source) }
        let version: UInt32 = try r.read()
        guard version == 1 || version == Self.currentVersion else { throw .unsupportedVersion(source, version) }
        _ = try r.read() as UInt32
        let fingerprint = version >= 2 ? try r.read(32) : [UInt8](repeating: 0, count: 32)
        let metaLength: UInt64 = try r.read()
        let metaBytes = try r.read(Int(clamping: metaLength), what: "metadata")
        let stored: UInt32 = try r.read()
        let computed = version >= 2 ? headerChecksum(fingerprint: fingerprint, meta: metaBytes) : CRC32C.checksum(metaBytes)
        guard stored == computed else {
            throw .corrupt(source, "header checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
        }
        do {
            return Header(formatVersion: version, fingerprint: fingerprint,
                          meta: try Csptrain_V1_CheckpointMeta(serializedBytes: metaBytes))
        } catch {
            throw .corrupt(source, "metadata does not parse: \(error)")
        }
    }

    static func readRecord(_ info: Csptrain_V1_RecordInfo, from r: inout ByteReader, bytes: [UInt8], version: UInt32) throws(CheckpointError) -> Record {
        let source = r.source
        let label = "record '\(info.role)/\(info.name)'"
        let start = r.offset
        let rawEncoding: UInt32 = try r.read(what: label)
        let count: UInt64 = try r.read(what: label)
        let indexLength: UInt64 = try r.read(what: label)
        let valuesLength: UInt64 = try r.read(what: label)
        // Positions and values are decoded in place, not copied out first.
        let index = try r.skip(Int(clamping: indexLength), what: label)
        let values = try r.skip(Int(clamping: valuesLength), what: label)
        let computed = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start ..< r.offset])) }
        let stored: UInt32 = try r.read(what: label)
        guard computed == stored else {
            throw .corrupt(source, "\(label) checksum mismatch (stored \(hex(stored)), computed \(hex(computed)))")
        }
        guard let encoding = Encoding(rawValue: rawEncoding), version >= 2 || encoding.rawValue <= 2 else {
            throw .corrupt(source, "\(label) has unknown encoding \(rawEncoding)")
        }
        if encoding == .bytes {
            guard count == valuesLength else { throw .corrupt(source, "\(label) says \(count) bytes but holds \(valuesLength)") }
            return Record(name: info.name, role: info.role, bytes: Array(bytes[values]))
        }
        let shape = info.shape.map { Int($0) }
        guard shape.reduce(1, *) == Int(count) else {
            throw .corrupt(source, "\(label) holds \(count) values but its shape \(shape) needs \(shape.reduce(1, *))")
        }
        var out = [Float](repeating: 0, count: Int(count))
        let ok = out.withUnsafeMutableBufferPointer { o in
            bytes.withUnsafeBytes { raw in
                let v = UnsafeRawBufferPointer(rebasing: raw[values]), m = UnsafeRawBufferPointer(rebasing: raw[index])
                return {
                    switch encoding {
                    case .dense: FloatEncoding.decodeDense(v, into: o)
                    case .bitmask: FloatEncoding.decodeBitmask(mask: m, nonZero: v, into: o)
                    case .rice: FloatEncoding.decodeRice(code: m, nonZero: v, into: o)
                    case .bytes: false
                    }
                }()
            }
        }
        guard ok else { throw .corrupt(source, "\(label): payload sizes do not match its value count \(count)") }
        return Record(name: info.name, shape: shape, role: info.role, values: out)
    }
}
