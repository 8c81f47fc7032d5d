import CNNG

/// An nng message: a byte body owned by this object until it is sent.
///
/// A message belongs to one task at a time (it is handed over, never shared), which is why the
/// class can be `@unchecked Sendable`: the only mutable state is the handle, which `take()`
/// clears exactly once when nng takes ownership on a send.
public final class Message: @unchecked Sendable {
    private var handle: OpaquePointer?

    /// A message holding a copy of `bytes`.
    public init(copying bytes: UnsafeRawBufferPointer) throws(NNGError) {
        var msg: OpaquePointer?
        try nngCall("allocate a message of \(bytes.count) bytes", nng_msg_alloc(&msg, bytes.count))
        if let base = bytes.baseAddress, bytes.count > 0 {
            nng_msg_body(msg).copyMemory(from: base, byteCount: bytes.count)
        }
        handle = msg
    }

    public convenience init(_ bytes: [UInt8]) throws(NNGError) {
        // withUnsafeBytes cannot forward typed throws, so copy out of the closure first.
        var result: Result<Void, NNGError> = .success(())
        var msg: OpaquePointer?
        bytes.withUnsafeBytes { raw in
            let rv = nng_msg_alloc(&msg, raw.count)
            if rv != 0 {
                result = .failure(NNGError(code: rv, operation: "allocate a message of \(raw.count) bytes"))
            } else if let base = raw.baseAddress, raw.count > 0 {
                nng_msg_body(msg).copyMemory(from: base, byteCount: raw.count)
            }
        }
        try result.get()
        self.init(adopting: msg!)
    }

    /// A message of `count` bytes that `fill` writes in place: the body is the only copy (a
    /// gradient chunk serialised straight from the gradient, a reply around shared weights).
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) throws(NNGError) {
        var msg: OpaquePointer?
        try nngCall("allocate a message of \(count) bytes", nng_msg_alloc(&msg, count))
        fill(UnsafeMutableRawBufferPointer(start: nng_msg_body(msg), count: count))
        handle = msg
    }

    /// Wraps a message that nng handed to us (a completed receive).
    init(adopting handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        if let handle { nng_msg_free(handle) }
    }

    /// Number of bytes in the body.
    public var count: Int {
        guard let handle else { return 0 }
        return nng_msg_len(handle)
    }

    /// The connection this message arrived on (valid for received messages).
    public var pipe: PipeID {
        guard let handle else { return PipeID(rawValue: 0) }
        return PipeID(rawValue: nng_msg_get_pipe(handle).id)
    }

    /// Reads the body without copying it.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        guard let handle else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try body(UnsafeRawBufferPointer(start: nng_msg_body(handle), count: nng_msg_len(handle)))
    }

    /// The body, valid while this message lives and is not changed (keep it alive, e.g. with
    /// `withExtendedLifetime`, for as long as the bytes are read).
    public var unsafeBytes: UnsafeRawBufferPointer {
        guard let handle else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: nng_msg_body(handle), count: nng_msg_len(handle))
    }

    /// A copy of the body.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Gives the handle to nng (on a send); the message is empty afterwards.
    func take() -> OpaquePointer? {
        defer { handle = nil }
        return handle
    }

    /// Takes a handle back after a failed send (nng returns ownership to the caller then).
    func restore(_ handle: OpaquePointer) {
        self.handle = handle
    }
}

/// Identifies one connection (nng pipe) of a socket.
public struct PipeID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { "pipe#\(rawValue)" }
}
