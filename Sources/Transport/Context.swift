import CNNG

/// One request/reply exchange state machine on a REQ or REP socket.
///
/// A context runs one exchange at a time: on REP, receive a request then send its reply; on
/// REQ, send a request then receive its reply. Open one context per concurrent exchange.
public final class Context: Sendable {
    let handle: nng_ctx
    public let kind: Socket.Kind

    init(handle: nng_ctx, kind: Socket.Kind) {
        self.handle = handle
        self.kind = kind
    }

    deinit {
        nng_ctx_close(handle)
    }

    public func send(_ message: Message, timeout: Duration? = nil) async throws(NNGError) {
        try await Operation.send(message, timeout: timeout, what: "send on \(kind.rawValue) context") { aio in
            nng_ctx_send(handle, aio)
        }
    }

    public func receive(timeout: Duration? = nil) async throws(NNGError) -> Message {
        try await Operation.receive(timeout: timeout, what: "receive on \(kind.rawValue) context") { aio in
            nng_ctx_recv(handle, aio)
        }
    }

    /// REQ only: re-send the request when no reply came within `value` (the peer's handler must
    /// therefore be idempotent).
    public func setResendTime(_ value: Duration) throws(NNGError) {
        try nngCall("set \(NNG_OPT_REQ_RESENDTIME) to \(value)",
                    nng_ctx_set_ms(handle, NNG_OPT_REQ_RESENDTIME, AsyncIO.milliseconds(value)))
    }

    /// Sends `request` and waits for the reply (REQ contexts).
    public func request(_ request: Message, timeout: Duration? = nil) async throws(NNGError) -> Message {
        try await send(request, timeout: timeout)
        return try await receive(timeout: timeout)
    }
}

/// Transport settings, composed into the run configuration.
public struct TransportSettings: Sendable, Equatable {
    /// Largest message a socket accepts (`NNG_OPT_RECVMAXSZ`), in bytes.
    public var maxMessageBytes: Int = 256 << 20
    /// Concurrent request/reply exchanges the coordinator serves.
    public var coordinatorContexts: Int = 128
    /// REQ re-send time: a request without a reply after this long is sent again. Every
    /// coordinator handler is idempotent, so a lost reply costs this long rather than a worker's
    /// whole patience (a 30-second stall with one duplicate chunk was seen once in a 120-step
    /// run: a reply that never arrived). While the coordinator is busy for longer (a CSP support
    /// update takes seconds), waiting requests are re-sent and answered as duplicates: extra
    /// traffic, never a wrong result.
    public var resendSeconds: Double = 5
    /// A worker's request without an answer after this long is asked again, with a new number
    /// and the same session (a coordinator busy for longer, such as a CSP support update of tens
    /// of seconds, does not cost the worker its session); unanswered through a second one, the
    /// worker dials a fresh connection and joins again. It gives up after its patience.
    public var requestTimeoutSeconds: Double = 30
    /// Gradient chunks a worker keeps in flight at once.
    public var sendWindow: Int = 4
    /// Gradient buffers a worker computes into: 2 computes the next micro-batch while the last
    /// one's chunks travel, at the cost of a second copy of the gradient in memory; 1 computes
    /// only once the last send is done.
    public var gradientBuffers: Int = 2
    /// Workers send gradient chunks as frames on a byte stream beside the REQ socket (see
    /// Proto/README.md, "The chunk stream"); false: as requests on the REQ socket.
    public var chunkStream = true
    /// The chunk stream's TCP port on the coordinator's host; 0 picks a free one.
    public var chunkStreamPort = 0
    /// TLS for `tls+tcp://` addresses (see ``TLSSettings``).
    public var tls = TLSSettings()

    public init() {}
}
