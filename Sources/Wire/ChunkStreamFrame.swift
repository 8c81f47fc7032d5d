import Foundation

/// Frames on a chunk stream (Proto/README.md, "The chunk stream"): a byte stream beside the REQ
/// socket that carries a worker's gradient chunks, read by the coordinator straight into a
/// buffer it reuses. Every frame is an 8-byte header, then `length` bytes:
///
///     length: u32 little-endian | tag: u32 little-endian | body
///
/// - The coordinator opens with a frame of tag 0 whose body is a 32-byte nonce.
/// - The worker answers with tag 0: its session (16 bytes) and
///   ``JoinHandshake/streamMAC(token:runID:serverNonce:session:)`` (32 bytes).
/// - Then each worker frame (tag ≥ 1) is a `csptrain.v1.Request` holding a chunk, and the
///   coordinator answers each with a frame of the same tag holding its `csptrain.v1.Reply`.
/// - The coordinator may also write the weights of a task whose reply says
///   `weights_on_stream`: tag `weightsTag`, body the version (u64 little-endian) then the
///   `csptrain.v1.Weights` message.
public enum ChunkStreamFrame {
    /// The tag of a frame that carries weights (coordinator to worker).
    public static let weightsTag = UInt32.max
    public static let headerBytes = 8
    public static let nonceBytes = 32
    public static let sessionBytes = 16
    public static let macBytes = 32
    public static var attachBytes: Int { sessionBytes + macBytes }

    /// The header of a frame of `length` body bytes.
    public static func header(length: Int, tag: UInt32) -> [UInt8] {
        precondition(length >= 0 && length <= Int(UInt32.max), "a chunk stream frame of \(length) bytes")
        let l = UInt32(length).littleEndian, t = tag.littleEndian
        return withUnsafeBytes(of: l) { Array($0) } + withUnsafeBytes(of: t) { Array($0) }
    }

    /// The header and version that come before a weights frame's `Weights` message of `count` bytes.
    public static func weightsPrefix(version: UInt64, count: Int) -> [UInt8] {
        header(length: 8 + count, tag: weightsTag) + withUnsafeBytes(of: version.littleEndian) { Array($0) }
    }

    /// Reads a header (`bytes` holds at least `headerBytes`).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer) -> (length: Int, tag: UInt32) {
        let length = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let tag = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        return (Int(length), tag)
    }
}
