import Foundation
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// Prepared shards: 16 kHz audio and transcripts, readable by example index from any process.
///
/// A shard set is a folder with `shards.json` (the index of shard files, example counts,
/// feature settings and normalisation statistics) and shard files laid out as (little-endian):
///
///     "CSPTSHRD"  u32 version (1)  u32 example count
///     per example:  u32 samples  u32 text bytes  text (UTF-8)  samples × int16 PCM  u32 CRC32C of the record
///     index:        example count × u64 record offset
///     u64 index offset   u32 CRC32C of the index   "CSPTSEND"
public enum ShardFormat {
    static let magic = Array("CSPTSHRD".utf8)
    static let endMagic = Array("CSPTSEND".utf8)
    static let version: UInt32 = 1
}

public struct ShardError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let message: String
    public var description: String { "\(file): \(message)" }
}

/// Writes one shard file.
public final class ShardWriter {
    private var bytes: [UInt8] = []
    private var offsets: [UInt64] = []
    public let path: String

    public init(path: String) {
        self.path = path
        bytes = ShardFormat.magic
        append(ShardFormat.version)
        append(UInt32(0))  // example count, patched in finish()
    }

    public var count: Int { offsets.count }

    public func add(samples: [Float], text: String) {
        offsets.append(UInt64(bytes.count))
        let start = bytes.count
        let utf8 = Array(text.utf8)
        append(UInt32(samples.count))
        append(UInt32(utf8.count))
        bytes += utf8
        for s in samples { append(UInt16(bitPattern: Int16(clamping: Int((max(-1, min(1, s)) * 32767).rounded())))) }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        append(crc)
    }

    /// Writes the file (atomically: temporary name, then rename).
    public func finish() throws {
        withUnsafeBytes(of: UInt32(offsets.count).littleEndian) { bytes.replaceSubrange(12 ..< 16, with: $0) }
        let indexOffset = UInt64(bytes.count)
        let indexStart = bytes.count
        for o in offsets { append(o) }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[indexStart...])) }
        append(indexOffset)
        append(crc)
        bytes += ShardFormat.endMagic
        let temp = path + ".tmp"
        try Data(bytes).write(to: URL(fileURLWithPath: temp))
        guard rename(temp, path) == 0 else { throw ShardError(file: path, message: "cannot move \(temp) into place") }
    }

    private func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads examples of one shard file by index (pread: safe from many threads at once).
public final class ShardReader: Sendable {
    public let path: String
    private let fd: Int32
    private let offsets: [UInt64]
    private let indexOffset: UInt64
    /// The file's size and its index's checksum: what `ShardSet.fingerprint` is made of.
    public let size: Int
    public let indexChecksum: UInt32

    public init(path: String) throws(ShardError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ShardError(file: path, message: "cannot open: \(String(cString: strerror(errno)))") }
        self.fd = fd
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        func read(_ at: Int, _ n: Int) -> [UInt8]? {
            guard at >= 0, n >= 0, at <= size, n <= size - at else { return nil }
            var out = [UInt8](repeating: 0, count: n)
            let got = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(at)) }
            return got == n ? out : nil
        }
        guard let head = read(0, 16), Array(head[0 ..< 8]) == ShardFormat.magic else {
            close(fd)
            throw ShardError(file: path, message: "not a csptrain shard (bad magic bytes)")
        }
        let version = Self.u32(head, 8), count = Int(Self.u32(head, 12))
        guard version == ShardFormat.version else {
            close(fd)
            throw ShardError(file: path, message: "shard format version \(version) is not supported (this build reads \(ShardFormat.version))")
        }
        guard let tail = read(size - 20, 20), Array(tail[12 ..< 20]) == ShardFormat.endMagic else {
            close(fd)
            throw ShardError(file: path, message: "end marker missing: the shard is truncated")
        }
        let indexOffset = Self.u64(tail, 0), storedCRC = Self.u32(tail, 8)
        guard indexOffset <= UInt64(size), let index = read(Int(indexOffset), count * 8), CRC32C.checksum(index) == storedCRC else {
            close(fd)
            throw ShardError(file: path, message: "index checksum mismatch: the shard is corrupt")
        }
        let offsets = (0 ..< count).map { Self.u64(index, $0 * 8) }
        // Records lie in order between the header and the index, each at least its 12 fixed bytes.
        let bounds = offsets + [indexOffset]
        guard indexOffset <= UInt64(size), (offsets.first ?? 16) >= 16,
              zip(bounds, bounds.dropFirst()).allSatisfy({ $1 >= $0 && $1 - $0 >= 12 }) else {
            close(fd)
            throw ShardError(file: path, message: "record offsets out of order: the shard is corrupt")
        }
        self.offsets = offsets
        self.indexOffset = indexOffset
        self.size = size
        indexChecksum = storedCRC
    }

    deinit { close(fd) }

    public var count: Int { offsets.count }

    /// Each example's record size in bytes (2 per sample plus its transcript): a length known
    /// without reading the records.
    public var recordSizes: [Int] {
        (0 ..< offsets.count).map { i in Int((i + 1 < offsets.count ? offsets[i + 1] : indexOffset) - offsets[i]) }
    }

    /// Example `i`: 16 kHz samples in [−1, 1] and its transcript. The record's checksum is verified.
    public func example(_ i: Int) throws(ShardError) -> (samples: [Float], text: String) {
        guard i >= 0, i < offsets.count else { throw ShardError(file: path, message: "example \(i) is outside 0..<\(offsets.count)") }
        let start = Int(offsets[i]), end = i + 1 < offsets.count ? Int(offsets[i + 1]) : Int(indexOffset)
        var record = [UInt8](repeating: 0, count: end - start)
        let got = record.withUnsafeMutableBytes { pread(fd, $0.baseAddress, end - start, off_t(start)) }
        guard got == end - start, record.count >= 12 else { throw ShardError(file: path, message: "example \(i): short read") }
        let samples = Int(Self.u32(record, 0)), textBytes = Int(Self.u32(record, 4))
        guard 8 + textBytes + 2 * samples + 4 == record.count else {
            throw ShardError(file: path, message: "example \(i): record sizes disagree (corrupt)")
        }
        let crc = record.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0 ..< record.count - 4])) }
        guard crc == Self.u32(record, record.count - 4) else {
            throw ShardError(file: path, message: "example \(i): checksum mismatch (corrupt)")
        }
        let text = String(decoding: record[8 ..< 8 + textBytes], as: UTF8.self)
        var audio = [Float](repeating: 0, count: samples)
        record.withUnsafeBytes { raw in
            let base = 8 + textBytes
            for s in 0 ..< samples {
                audio[s] = Float(Int16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: base + 2 * s, as: UInt16.self)))) / 32767
            }
        }
        return (audio, text)
    }

    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 { b.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
}

/// `shards.json`: what a shard set holds.
public struct ShardIndex: Codable, Sendable, Equatable {
    public struct Shard: Codable, Sendable, Equatable {
        public var file: String
        public var examples: Int
    }
    public struct Skipped: Codable, Sendable, Equatable {
        public var file: String
        public var reason: String
    }
    public var format = "csptrain-shards"
    public var version = 1
    public var sampleRate = 16_000
    public var shards: [Shard] = []
    public var examples = 0
    public var seconds = 0.0
    /// Per mel band, over every frame of the set: mean and standard deviation of the log-mel features.
    public var featureMean: [Float] = []
    public var featureStd: [Float] = []
    public var skipped: [Skipped] = []

    public init() {}
}

/// A prepared shard set, readable by global example index.
public final class ShardSet: Sendable {
    public let folder: String
    public let index: ShardIndex
    private let readers: [ShardReader]
    private let firstIndex: [Int]
    /// Identifies the prepared data without reading it: CRC32C over shards.json and each shard's
    /// size and index checksum, with the example count. Two copies of a preparation agree; another
    /// preparation (other files, order, statistics) almost surely does not.
    public let fingerprint: String

    public init(folder: String) throws {
        self.folder = folder
        let indexPath = folder + "/shards.json"
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let data = FileManager.default.contents(atPath: indexPath) else {
            throw ShardError(file: indexPath, message: "missing: is \(folder) a prepared shard set? (csptrain data prepare)")
        }
        do { index = try decoder.decode(ShardIndex.self, from: data) } catch {
            throw ShardError(file: indexPath, message: "not a shard index: \(error)")
        }
        var readers: [ShardReader] = []
        var first: [Int] = []
        var total = 0
        for shard in index.shards {
            let reader = try ShardReader(path: folder + "/" + shard.file)
            guard reader.count == shard.examples else {
                throw ShardError(file: reader.path, message: "holds \(reader.count) examples, shards.json says \(shard.examples)")
            }
            first.append(total)
            total += reader.count
            readers.append(reader)
        }
        self.readers = readers
        firstIndex = first
        var identity = [UInt8](data)
        for r in readers {
            withUnsafeBytes(of: UInt64(r.size).littleEndian) { identity += $0 }
            withUnsafeBytes(of: r.indexChecksum.littleEndian) { identity += $0 }
        }
        fingerprint = String(format: "%08x-%d", CRC32C.checksum(identity), total)
    }

    public var count: Int { firstIndex.last.map { $0 + readers.last!.count } ?? 0 }

    /// Every example's record size in bytes, in example order (see `ShardReader.recordSizes`).
    public var recordSizes: [Int] { readers.flatMap(\.recordSizes) }

    public func example(_ i: Int) throws -> (samples: [Float], text: String) {
        guard i >= 0, i < count else { throw ShardError(file: folder, message: "example \(i) is outside 0..<\(count)") }
        var lo = 0, hi = firstIndex.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if firstIndex[mid] <= i { lo = mid } else { hi = mid - 1 }
        }
        return try readers[lo].example(i - firstIndex[lo])
    }
}
