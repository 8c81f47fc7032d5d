import CNNG
import Foundation

/// A connected nng byte stream (`nng_stream`: TCP, or TLS over TCP): bytes read into and
/// written from the caller's own memory, with no message in between.
///
/// nng's socket protocols hand every message over in a buffer of nng's own, which it allocates
/// and zeroes, and which the sender must fill by copying; a stream reads straight into a buffer
/// the reader reuses and writes straight from the caller's memory (scatter/gather). The gradient
/// path uses one per worker (see Runtime's chunk stream).
///
/// The calls block their thread: run them on threads of their own, never on Swift's cooperative
/// pool. One thread may write while another reads; `close` from any thread ends both.
public final class ByteStream: @unchecked Sendable {
    private let handle: OpaquePointer
    private let sendAIO: OpaquePointer
    private let receiveAIO: OpaquePointer
    /// The peer's address, for messages that name who sent bad input.
    public let peer: String

    init(handle: OpaquePointer) throws(NNGError) {
        self.handle = handle
        var s: OpaquePointer?, r: OpaquePointer?
        do {
            try nngCall("allocate a stream's send aio", nng_aio_alloc(&s, nil, nil))
            try nngCall("allocate a stream's receive aio", nng_aio_alloc(&r, nil, nil))
        } catch {
            if let s { nng_aio_free(s) }
            nng_stream_free(handle)
            throw error
        }
        sendAIO = s!
        receiveAIO = r!
        // Small frames (the coordinator's answers, the last bytes of a chunk) go out at once, not
        // held back for an acknowledgement (Nagle's algorithm with delayed ACKs stalls them 40 ms).
        _ = nng_stream_set_bool(handle, NNG_OPT_TCP_NODELAY, true)
        // A peer behind a cut link is noticed by the kernel's probes (as on the REQ/REP socket).
        _ = nng_stream_set_bool(handle, NNG_OPT_TCP_KEEPALIVE, true)
        var address = nng_sockaddr()
        peer = nng_stream_get_addr(handle, NNG_OPT_REMADDR, &address) == 0 ? SocketAddress(address).description : "a stream peer"
    }

    deinit {
        // On a thread of its own: libnng 1.5.2 can wait a long time tearing down a TLS connection
        // whose peer died mid-send (see Socket.close(waitingAtMost:)), and the last reference may
        // be dropped on Swift's cooperative pool.
        let handles = Handles(stream: handle, send: sendAIO, receive: receiveAIO)
        Thread.detachNewThread {
            nng_stream_close(handles.stream)
            nng_aio_free(handles.send)
            nng_aio_free(handles.receive)
            nng_stream_free(handles.stream)
        }
    }

    private struct Handles: @unchecked Sendable {
        let stream: OpaquePointer
        let send: OpaquePointer
        let receive: OpaquePointer
    }

    /// Ends the stream: a read or write in progress fails with "closed", as do later ones.
    public func close() { nng_stream_close(handle) }

    /// Writes every byte of `parts`, in order (nng may take them in several writes), within
    /// `timeout` in all.
    public func write(_ parts: [UnsafeRawBufferPointer], timeout: Duration? = nil) throws(NNGError) {
        var parts = parts.filter { !$0.isEmpty }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while !parts.isEmpty {
            let count = try transfer(sendAIO, parts: parts.prefix(4).map { UnsafeMutableRawBufferPointer(mutating: $0) },
                                     timeout: Self.left(until: deadline), what: "write to \(peer)") { nng_stream_send(handle, $0) }
            var left = count
            while left > 0, let first = parts.first {
                if left >= first.count {
                    left -= first.count
                    parts.removeFirst()
                } else {
                    parts[0] = UnsafeRawBufferPointer(rebasing: first[left...])
                    left = 0
                }
            }
        }
    }

    /// Reads what has arrived into `buffer` (at least one byte, at most `buffer.count`), waiting
    /// at most `timeout` for the first. Fails with "closed" at the end of the stream.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(NNGError) -> Int {
        try transfer(receiveAIO, parts: [buffer], timeout: timeout, what: "read from \(peer)") { nng_stream_recv(handle, $0) }
    }

    /// Fills `buffer`, however many reads it takes, within `timeout` in all.
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(NNGError) {
        var filled = 0
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while filled < buffer.count {
            filled += try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), timeout: Self.left(until: deadline))
        }
    }

    /// The time left until `deadline` (nil: none); a passed deadline leaves a moment, so the
    /// operation times out rather than waiting without one.
    private static func left(until deadline: ContinuousClock.Instant?) -> Duration? {
        deadline.map { max(.milliseconds(1), $0 - ContinuousClock.now) }
    }

    private func transfer(_ aio: OpaquePointer, parts: [UnsafeMutableRawBufferPointer], timeout: Duration?, what: String,
                          _ start: (OpaquePointer) -> Void) throws(NNGError) -> Int {
        var iov = parts.map { nng_iov(iov_buf: $0.baseAddress, iov_len: $0.count) }
        try nngCall(what, nng_aio_set_iov(aio, UInt32(iov.count), &iov))
        nng_aio_set_timeout(aio, timeout.map(AsyncIO.milliseconds) ?? nng_duration(NNG_DURATION_INFINITE))
        start(aio)
        nng_aio_wait(aio)
        try nngCall(what, nng_aio_result(aio))
        let count = nng_aio_count(aio)
        // A zero-byte read is the peer's end of stream (nng reports it so on some platforms).
        if count == 0 { throw NNGError(code: Int32(NNG_ECLOSED.rawValue), operation: what) }
        return count
    }
}

/// Accepts byte streams on `tcp://` or `tls+tcp://` addresses.
public final class StreamListener: @unchecked Sendable {
    private let handle: OpaquePointer
    private let aio: OpaquePointer
    /// The address peers dial, port filled in for `:0`.
    public let url: String

    /// `tls`: a server configuration, required for (and only for) `tls+tcp://` addresses.
    public init(_ url: String, tls: TLSConfig? = nil) throws(NNGError) {
        var l: OpaquePointer?
        try nngCall("listen for streams on \(url)", nng_stream_listener_alloc(&l, url))
        handle = l!
        var a: OpaquePointer?
        do {
            try Socket.attachTLS(tls, url: url) { nng_stream_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, UnsafeMutableRawPointer($0)) }
            try nngCall("listen for streams on \(url)", nng_stream_listener_listen(l))
            try nngCall("allocate a listener's aio", nng_aio_alloc(&a, nil, nil))
        } catch {
            nng_stream_listener_free(l)
            throw error
        }
        aio = a!
        var port: Int32 = 0
        if nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) == 0, let colon = url.lastIndex(of: ":") {
            self.url = url[..<colon] + ":\(port)"
        } else {
            self.url = url
        }
    }

    deinit {
        nng_stream_listener_close(handle)
        nng_aio_free(aio)
        nng_stream_listener_free(handle)
    }

    /// Waits for the next connection (its TLS handshake done). Blocks; fails with "closed" once
    /// `close` is called.
    public func accept() throws(NNGError) -> ByteStream {
        nng_stream_listener_accept(handle, aio)
        nng_aio_wait(aio)
        try nngCall("accept a stream on \(url)", nng_aio_result(aio))
        return try ByteStream(handle: OpaquePointer(nng_aio_get_output(aio, 0)!))
    }

    /// Stops listening; a waiting `accept` fails with "closed".
    public func close() { nng_stream_listener_close(handle) }
}

public enum StreamDialer {
    /// Connects to `url` (`tcp://` or `tls+tcp://` with a client `tls`), waiting at most `timeout`.
    public static func dial(_ url: String, tls: TLSConfig? = nil, timeout: Duration) throws(NNGError) -> ByteStream {
        var d: OpaquePointer?
        try nngCall("dial a stream to \(url)", nng_stream_dialer_alloc(&d, url))
        defer { nng_stream_dialer_free(d) }
        try Socket.attachTLS(tls, url: url) { nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, UnsafeMutableRawPointer($0)) }
        var a: OpaquePointer?
        try nngCall("allocate a dialer's aio", nng_aio_alloc(&a, nil, nil))
        defer { nng_aio_free(a) }
        nng_aio_set_timeout(a, AsyncIO.milliseconds(timeout))
        nng_stream_dialer_dial(d, a)
        nng_aio_wait(a)
        try nngCall("dial a stream to \(url)", nng_aio_result(a))
        return try ByteStream(handle: OpaquePointer(nng_aio_get_output(a, 0)!))
    }
}
