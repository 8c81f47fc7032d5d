import CNNG
import Foundation
import Synchronization

/// An nng socket of one of the protocols csptrain's design uses.
///
/// - `rep`/`req`: request/reply. The coordinator's control endpoint is a REP socket served
///   through many contexts; each worker holds a REQ socket. REQ re-sends a request on its own
///   when no reply came within the resend time, so every request handler must be idempotent.
/// - `push`/`pull`: a one-way pipeline with back-pressure but no addressing (the benchmark's
///   baseline stream).
public final class Socket: Sendable {
    public enum Kind: String, Sendable {
        case req, rep, push, pull
    }

    public let kind: Kind
    let handle: nng_socket
    private let pipeEventBox: PipeEventBox
    private let listened = Mutex<String?>(nil)
    private let closed = Atomic<Bool>(false)

    /// The URL of this socket's last listener (port filled in), for peers to dial.
    public var listenerURL: String? { listened.withLock { $0 } }

    /// Connects and disconnects of this socket's pipes, delivered from nng's notification
    /// callback (which only enqueues: it must not block or touch the socket).
    public var pipeEvents: AsyncStream<PipeEvent> { pipeEventBox.stream }

    public init(_ kind: Kind) throws(NNGError) {
        var socket = nng_socket()
        let rv: Int32
        switch kind {
        case .req: rv = nng_req0_open(&socket)
        case .rep: rv = nng_rep0_open(&socket)
        case .push: rv = nng_push0_open(&socket)
        case .pull: rv = nng_pull0_open(&socket)
        }
        try nngCall("open a \(kind.rawValue) socket", rv)
        self.kind = kind
        self.handle = socket
        self.pipeEventBox = PipeEventBox()
        let arg = Unmanaged.passUnretained(pipeEventBox).toOpaque()
        for event in [NNG_PIPE_EV_ADD_PRE, NNG_PIPE_EV_ADD_POST, NNG_PIPE_EV_REM_POST] {
            try nngCall("register pipe notifications", nng_pipe_notify(socket, event, { pipe, event, arg in
                Unmanaged<PipeEventBox>.fromOpaque(arg!)._withUnsafeGuaranteedRef { $0.notify(pipe, event) }
            }, arg))
        }
    }

    /// At most `limit` connections at once: one past it is closed as soon as its handshake is
    /// done, before the socket ever sees it (a `.refused` pipe event tells who). Each open
    /// connection holds a file descriptor; this keeps a flood of them from taking the ones the
    /// process needs for its files. nil: no limit.
    public func limitConnections(_ limit: Int?) {
        pipeEventBox.limit.withLock { $0 = limit }
    }

    /// Closes one connection (its pending exchanges fail; a dialer on the other side reconnects).
    public func closePipe(_ pipe: PipeID) {
        nng_pipe_close(nng_pipe(id: pipe.rawValue))
    }

    /// Connections open now (admitted, not yet removed).
    public var openConnections: Int { pipeEventBox.admitted.withLock { $0.count } }

    /// TCP keepalive on this socket's future connections (`NNG_OPT_TCP_KEEPALIVE`): the kernel
    /// probes an idle connection and closes it when the peer is gone (a cut link), after
    /// `net.ipv4.tcp_keepalive_time` + probes (see Deploy/README.md).
    public func setKeepAlive(_ on: Bool) throws(NNGError) {
        try nngCall("set \(NNG_OPT_TCP_KEEPALIVE) to \(on)", nng_socket_set_bool(handle, NNG_OPT_TCP_KEEPALIVE, on))
    }

    deinit {
        close()
    }

    /// Closes the socket: every pending operation on it and its contexts fails with "closed".
    /// Only the first call does anything: a close that hangs in nng (below) is not repeated
    /// by `deinit`.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        nng_pipe_notify(handle, NNG_PIPE_EV_ADD_PRE, nil, nil)
        nng_pipe_notify(handle, NNG_PIPE_EV_ADD_POST, nil, nil)
        nng_pipe_notify(handle, NNG_PIPE_EV_REM_POST, nil, nil)
        nng_close(handle)
        pipeEventBox.finish()
    }

    /// Closes the socket on a thread of its own and waits for it at most `limit`; returns
    /// whether the close finished.
    ///
    /// libnng 1.5.2 (Debian 12's) can hang forever in `nng_close`: a TLS send issued after the
    /// connection's TCP stream failed is never completed (the TLS layer starts a TCP send on an
    /// aio already stopped, and waits for its callback), so the pipe carrying it is never torn
    /// down, and nng's single reaper thread, which tears down every pipe of the process, waits
    /// on it for good. Operations on the socket's contexts fail with "closed" at once all the
    /// same (nng closes contexts before it waits for pipes). A `false` means this process's nng
    /// can no longer tear down connections: the caller decides what to do (a worker restarts
    /// itself in place, a coordinator at the end of its run goes on to exit).
    public func close(waitingAtMost limit: Duration) async -> Bool {
        let done = Mutex<CheckedContinuation<Bool, Never>?>(nil)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            done.withLock { $0 = continuation }
            let finish: @Sendable (Bool) -> Void = { finished in
                done.withLock { waiting in
                    waiting?.resume(returning: finished)
                    waiting = nil
                }
            }
            Thread.detachNewThread { [self] in
                close()
                finish(true)
            }
            Task {
                try? await Task.sleep(for: limit)
                finish(false)
            }
        }
    }

    // MARK: Endpoints

    /// Listens on `url` (`tcp://host:port`, `tls+tcp://host:port`, `ipc:///path`, `inproc://name`).
    /// Port 0 picks a free port; read it back from the returned listener.
    ///
    /// `maxMessageSize` is required: nng's default is unlimited, so a peer could make us allocate
    /// any amount of memory. Larger messages are dropped and their connection closed.
    /// `tls`: a server configuration, required for (and only for) `tls+tcp://` URLs.
    @discardableResult
    public func listen(_ url: String, maxMessageSize: Int, tls: TLSConfig? = nil) throws(NNGError) -> Listener {
        try setSize(NNG_OPT_RECVMAXSZ, maxMessageSize)
        var listener = nng_listener()
        try nngCall("listen on \(url)", nng_listener_create(&listener, handle, url))
        do {
            try Self.attachTLS(tls, url: url) { nng_listener_set_ptr(listener, NNG_OPT_TLS_CONFIG, UnsafeMutableRawPointer($0)) }
            try nngCall("listen on \(url)", nng_listener_start(listener, 0))
        } catch {
            nng_listener_close(listener)
            throw error
        }
        let result = Listener(handle: listener, requestedURL: url)
        listened.withLock { $0 = result.url }
        return result
    }

    /// Dials `url` in the background: the dialer keeps reconnecting, with back-off between
    /// `reconnect.lowerBound` and `reconnect.upperBound`, whenever the connection drops (or its
    /// TLS handshake fails). `tls`: a client configuration, required for `tls+tcp://` URLs.
    public func dial(_ url: String, maxMessageSize: Int,
                     reconnect: ClosedRange<Duration> = .milliseconds(100) ... .seconds(2),
                     tls: TLSConfig? = nil) throws(NNGError) {
        try setSize(NNG_OPT_RECVMAXSZ, maxMessageSize)
        try setDuration(NNG_OPT_RECONNMINT, reconnect.lowerBound)
        try setDuration(NNG_OPT_RECONNMAXT, reconnect.upperBound)
        var dialer = nng_dialer()
        try nngCall("dial \(url)", nng_dialer_create(&dialer, handle, url))
        do {
            try Self.attachTLS(tls, url: url) { nng_dialer_set_ptr(dialer, NNG_OPT_TLS_CONFIG, UnsafeMutableRawPointer($0)) }
            try nngCall("dial \(url)", nng_dialer_start(dialer, Int32(NNG_FLAG_NONBLOCK)))
        } catch {
            nng_dialer_close(dialer)
            throw error
        }
    }

    /// Gives an endpoint its TLS configuration; a `tls+tcp://` URL without one, or a plain URL
    /// with one, is refused here rather than by nng's less telling "not supported".
    static func attachTLS(_ tls: TLSConfig?, url: String, _ set: (OpaquePointer) -> Int32) throws(NNGError) {
        switch (TLSConfig.isTLS(url), tls) {
        case (true, let config?): try nngCall("set the TLS configuration of \(url)", set(config.handle))
        case (false, nil): break
        case (true, nil): throw NNGError(code: Int32(NNG_EINVAL.rawValue), operation: "\(url) needs a TLS configuration (--tls DIR)")
        case (false, _?): throw NNGError(code: Int32(NNG_EINVAL.rawValue), operation: "\(url) is not a tls+tcp:// address, but a TLS configuration was given")
        }
    }

    // MARK: Options

    public func setSize(_ option: String, _ value: Int) throws(NNGError) {
        try nngCall("set \(option) to \(value)", nng_socket_set_size(handle, option, value))
    }

    public func setDuration(_ option: String, _ value: Duration) throws(NNGError) {
        try nngCall("set \(option) to \(value)", nng_socket_set_ms(handle, option, AsyncIO.milliseconds(value)))
    }

    /// REQ only: how long to wait for a reply before re-sending the request.
    public func setResendTime(_ value: Duration) throws(NNGError) {
        try setDuration(NNG_OPT_REQ_RESENDTIME, value)
    }

    /// The address of the peer on `pipe`, for messages that name who sent bad input.
    public func peerAddress(_ pipe: PipeID) -> String {
        var address = nng_sockaddr()
        guard nng_pipe_get_addr(nng_pipe(id: pipe.rawValue), NNG_OPT_REMADDR, &address) == 0 else {
            return pipe.description
        }
        return SocketAddress(address).description
    }

    // MARK: Socket-level messaging (for protocols without contexts, such as PUSH/PULL)

    public func send(_ message: Message, timeout: Duration? = nil) async throws(NNGError) {
        try await Operation.send(message, timeout: timeout, what: "send on \(kind.rawValue) socket") { aio in
            nng_send_aio(handle, aio)
        }
    }

    public func receive(timeout: Duration? = nil) async throws(NNGError) -> Message {
        try await Operation.receive(timeout: timeout, what: "receive on \(kind.rawValue) socket") { aio in
            nng_recv_aio(handle, aio)
        }
    }

    /// A context: an independent request/reply state machine on this socket, so that many
    /// exchanges can be in flight at once (REQ and REP only).
    public func openContext() throws(NNGError) -> Context {
        var ctx = nng_ctx()
        try nngCall("open a context on a \(kind.rawValue) socket", nng_ctx_open(&ctx, handle))
        return Context(handle: ctx, kind: kind)
    }
}

/// A listening endpoint.
public struct Listener: Sendable {
    let handle: nng_listener
    public let requestedURL: String

    /// The TCP port actually bound (useful after listening on port 0); nil for other transports.
    public var boundPort: Int? {
        var port: Int32 = 0
        guard requestedURL.hasPrefix("tcp") || TLSConfig.isTLS(requestedURL), nng_listener_get_int(handle, NNG_OPT_TCP_BOUND_PORT, &port) == 0 else {
            return nil
        }
        return Int(port)
    }

    /// The URL peers should dial: the requested one, with the bound port filled in for `:0`.
    public var url: String {
        guard let port = boundPort, let colon = requestedURL.lastIndex(of: ":") else { return requestedURL }
        return String(requestedURL[..<colon]) + ":\(port)"
    }
}

/// A pipe connected, was refused (over the connection limit), or went away.
public struct PipeEvent: Sendable, Equatable {
    public enum Kind: Sendable { case added, refused, removed }
    public let kind: Kind
    public let pipe: PipeID
}

/// Receives nng's pipe notifications. The callback counts, may close a pipe over the limit
/// (allowed in ADD_PRE), and yields to a stream; it never blocks.
final class PipeEventBox: Sendable {
    let stream: AsyncStream<PipeEvent>
    private let continuation: AsyncStream<PipeEvent>.Continuation
    let limit = Mutex<Int?>(nil)
    /// Pipes let in and not yet removed.
    let admitted = Mutex<Set<UInt32>>([])

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: PipeEvent.self, bufferingPolicy: .bufferingNewest(4096))
    }

    func notify(_ pipe: nng_pipe, _ event: nng_pipe_ev) {
        let id = PipeID(rawValue: pipe.id)
        switch event {
        case NNG_PIPE_EV_ADD_PRE:
            let max = limit.withLock { $0 }
            let admit = admitted.withLock { open in
                guard max.map({ open.count < $0 }) ?? true else { return false }
                open.insert(pipe.id)
                return true
            }
            if !admit {
                nng_pipe_close(pipe)
                deliver(PipeEvent(kind: .refused, pipe: id))
            }
        case NNG_PIPE_EV_ADD_POST:
            deliver(PipeEvent(kind: .added, pipe: id))
        default:
            let known = admitted.withLock { $0.remove(pipe.id) != nil }
            if known { deliver(PipeEvent(kind: .removed, pipe: id)) }
        }
    }

    func deliver(_ event: PipeEvent) { continuation.yield(event) }
    func finish() { continuation.finish() }
}

/// Shared send/receive logic for sockets and contexts.
enum Operation {
    static func send(_ message: Message, timeout: Duration?, what: @autoclosure () -> String,
                     _ submit: (OpaquePointer) -> Void) async throws(NNGError) {
        let io = try AsyncIO()
        io.setMessage(message.take())
        let rv = await io.run(timeout: timeout, submit)
        if rv != 0 {
            // On failure nng leaves the message with us.
            if let msg = io.message() { message.restore(msg) }
            throw NNGError(code: rv, operation: what())
        }
    }

    static func receive(timeout: Duration?, what: @autoclosure () -> String,
                        _ submit: (OpaquePointer) -> Void) async throws(NNGError) -> Message {
        let io = try AsyncIO()
        let rv = await io.run(timeout: timeout, submit)
        try nngCall(what(), rv)
        return Message(adopting: io.message()!)
    }
}

/// A printable nng socket address.
struct SocketAddress: CustomStringConvertible {
    let description: String
    /// The TCP port of an IPv4 or IPv6 address; nil for other families.
    let port: UInt16?

    init(_ address: nng_sockaddr) {
        switch Int32(address.s_family) {
        case Int32(NNG_AF_INET.rawValue):
            let a = UInt32(bigEndian: address.s_in.sa_addr)
            let port = UInt16(bigEndian: address.s_in.sa_port)
            self.port = port
            description = "\(a >> 24).\((a >> 16) & 0xff).\((a >> 8) & 0xff).\(a & 0xff):\(port)"
        case Int32(NNG_AF_INET6.rawValue):
            var a6 = address.s_in6
            let groups = withUnsafeBytes(of: &a6.sa_addr) { raw in
                stride(from: 0, to: 16, by: 2).map { String(UInt16(raw[$0]) << 8 | UInt16(raw[$0 + 1]), radix: 16) }
            }
            let port = UInt16(bigEndian: address.s_in6.sa_port)
            self.port = port
            description = "[\(groups.joined(separator: ":"))]:\(port)"
        case Int32(NNG_AF_IPC.rawValue):
            port = nil
            var ipc = address.s_ipc
            description = "ipc://" + withUnsafeBytes(of: &ipc.sa_path) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
        default:
            port = nil
            description = "(address family \(address.s_family))"
        }
    }
}
