import Crypto
import FileIO
import Foundation
import Tensors
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Writing a checkpoint: the file image (see README.md beside this file).
extension Checkpoint {
    public func encoded() -> [UInt8] {
        var meta = Csptrain_V1_CheckpointMeta()
        meta.step = UInt64(step)
        meta.runID = runID
        meta.configYaml = configYAML
        meta.createdUnix = createdUnix
        meta.lastLoss = lastLoss
        meta.mathsSettings = mathsSettings
        meta.state = state
        meta.records = records.map { r in
            var info = Csptrain_V1_RecordInfo()
            info.name = r.name
            info.shape = r.shape.map { UInt32($0) }
            info.role = r.role
            return info
        }
        // Serialising a message of plain fields cannot fail.
        let metaBytes: [UInt8] = (try? meta.serializedBytes()) ?? []

        var out = ByteWriter()
        // One allocation for the whole image: growing it by doubling copied it several times.
        out.bytes.reserveCapacity(64 + metaBytes.count + records.reduce(0) { $0 + 4 * $1.count + 40 })
        out.append(Self.magic)
        out.append(Self.currentVersion)
        out.append(UInt32(0))
        out.append(fingerprint)
        out.append(UInt64(metaBytes.count))
        out.append(metaBytes)
        out.append(Self.headerChecksum(fingerprint: fingerprint, meta: metaBytes))
        for r in records {
            let start = out.bytes.count
            switch r.payload {
            case let .bytes(b):
                out.appendRecordHeader(.bytes, count: b.count, indexLength: 0, valuesLength: b.count)
                out.append(b)
            case let .floats(v):
                v.withUnsafeBufferPointer { Self.appendFloats($0, to: &out) }
            }
            let crc = out.bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            out.append(crc)
        }
        out.append(Self.endMagic)
        return out.bytes
    }

    /// Writes the smallest encoding of `v` (the broadcast's chooser, keeping every bit: −0.0 is a
    /// stored value here): dense, bitmask or Rice-coded positions.
    static func appendFloats(_ v: UnsafeBufferPointer<Float>, to out: inout ByteWriter) {
        let plan = EncodedTensor.plan(v, keepingNegativeZero: true)
        switch plan.kind {
        case .rice:
            let code = plan.rice ?? []
            let values = FloatEncoding.nonZeroBytes(v, keepingNegativeZero: true)
            out.appendRecordHeader(.rice, count: v.count, indexLength: code.count, valuesLength: values.count)
            out.append(code)
            out.append(values)
        case .bitmask:
            let (mask, values) = FloatEncoding.bitmask(v, keepingNegativeZero: true)
            out.appendRecordHeader(.bitmask, count: v.count, indexLength: mask.count, valuesLength: values.count)
            out.append(mask)
            out.append(values)
        case .dense, .valuesOnly:
            out.appendRecordHeader(.dense, count: v.count, indexLength: 0, valuesLength: v.count * 4)
            #if _endian(little)
            out.bytes.append(contentsOf: UnsafeRawBufferPointer(v))  // the memory layout is the file's
            #else
            out.append(FloatEncoding.denseBytes(v))
            #endif
        }
    }

    static func headerChecksum(fingerprint: [UInt8], meta: [UInt8]) -> UInt32 {
        var crc = CRC32C()
        fingerprint.withUnsafeBytes { crc.update($0) }
        meta.withUnsafeBytes { crc.update($0) }
        return crc.value
    }
}
