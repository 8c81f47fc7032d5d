import CNNG
import Foundation
import Synchronization

/// A request as nng's HTTP server hands it over: the method, the path and query, and the headers
/// the caller asked for.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path without the query (`/api/metrics`).
    public var path: String
    /// The query's `key=value` pairs, percent-decoded.
    public var query: [String: String]
    /// `Authorization`, when the request had one.
    public var authorization: String?

    public init(method: String, uri: String, authorization: String? = nil) {
        self.method = method
        self.authorization = authorization
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map(String.init) ?? "/"
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                query[key] = kv.count == 2 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            }
        }
        self.query = query
    }
}

public struct HTTPResponse: Sendable {
    public var status: UInt16
    public var contentType: String
    public var body: [UInt8]
    public var headers: [(String, String)]

    public init(status: UInt16 = 200, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public init(status: UInt16 = 200, contentType: String = "text/plain; charset=utf-8", text: String, headers: [(String, String)] = []) {
        self.init(status: status, contentType: contentType, body: Array(text.utf8), headers: headers)
    }
}

/// nng's own HTTP server (libnng's `nng_http_server_*`): one handler for every path under `/`,
/// answered synchronously on nng's thread by `handle`, which must therefore be quick and must
/// not block (read a snapshot, render it).
///
/// A server is held per address inside nng: starting it binds, ``stop()`` stops accepting and
/// releases it. Port 0 picks a free port; read it back from ``port``.
public final class HTTPServer: @unchecked Sendable {
    // @unchecked: the C handles are touched only by init and stop (serialised by `stopped`);
    // nng serialises the rest.
    private let server: OpaquePointer
    private let handler: OpaquePointer
    private let stopped = Mutex(false)
    /// The bound address as given, with the port filled in (`http://127.0.0.1:9400`).
    public let url: String
    public let port: Int

    /// nng keeps one server per host and port; holding two at once with port 0 before either has
    /// bound would share one. Starts are serialised so that each binds before the next holds.
    private static let startLock = Mutex(())

    /// `address`: `host:port` (`127.0.0.1:0`, `0.0.0.0:9400`).
    public init(address: String, handle: @escaping @Sendable (HTTPRequest) -> HTTPResponse) throws(NNGError) {
        let requested = "http://\(address)"
        var parsed: UnsafeMutablePointer<nng_url>?
        try nngCall("parse the HTTP address \(address) (expected host:port)", nng_url_parse(&parsed, requested))
        defer { nng_url_free(parsed) }
        let box = Unmanaged.passRetained(HandlerBox(handle))
        var handlerPointer: OpaquePointer?
        do {
            try nngCall("allocate an HTTP handler", nng_http_handler_alloc(&handlerPointer, "/", { aio in
                guard let aio else { return }
                HTTPServer.serve(aio)
            }))
        } catch {
            box.release()
            throw error
        }
        let handler = handlerPointer!
        nng_http_handler_set_tree(handler)
        // From here on nng owns the box: the handler's destructor releases it once no callback
        // can run any more.
        nng_http_handler_set_data(handler, box.toOpaque(), { data in
            if let data { Unmanaged<HandlerBox>.fromOpaque(data).release() }
        })
        var serverPointer: OpaquePointer?
        var bound: Int32 = 0
        let result: Int32 = Self.startLock.withLock { _ in
            var rv = nng_http_server_hold(&serverPointer, parsed)
            if rv != 0 { return rv }
            rv = nng_http_server_add_handler(serverPointer, handler)
            if rv != 0 { nng_http_server_release(serverPointer); return rv }
            // Once added, the server owns the handler; taken back on failure, so that the
            // caller's free below is the only one.
            rv = nng_http_server_start(serverPointer)
            if rv != 0 {
                nng_http_server_del_handler(serverPointer, handler)
                nng_http_server_release(serverPointer)
                return rv
            }
            var addr = nng_sockaddr()
            if nng_http_server_get_addr(serverPointer, &addr) == 0 {
                switch Int32(addr.s_family) {
                case Int32(NNG_AF_INET.rawValue): bound = Int32(UInt16(bigEndian: addr.s_in.sa_port))
                case Int32(NNG_AF_INET6.rawValue): bound = Int32(UInt16(bigEndian: addr.s_in6.sa_port))
                default: break
                }
            }
            return 0
        }
        do { try nngCall("serve HTTP on \(address)", result) } catch {
            // The handler is not (or no longer) the server's: free it here.
            nng_http_handler_free(handler)
            throw error
        }
        server = serverPointer!
        self.handler = handler
        port = Int(bound)
        let host = String(cString: parsed!.pointee.u_hostname)
        url = "http://\(host.contains(":") ? "[\(host)]" : host):\(bound)"
    }

    deinit { stop() }

    /// Stops accepting connections and releases the server (requests in progress finish).
    public func stop() {
        let first = stopped.withLock { s in
            defer { s = true }
            return !s
        }
        guard first else { return }
        nng_http_server_stop(server)
        nng_http_server_release(server)
    }

    private static func serve(_ aio: OpaquePointer) {
        let request = OpaquePointer(nng_aio_get_input(aio, 0))
        let handler = OpaquePointer(nng_aio_get_input(aio, 1))
        guard let request, let handler, let data = nng_http_handler_get_data(handler) else {
            nng_aio_finish(aio, Int32(NNG_EINTERNAL.rawValue))
            return
        }
        let method = String(cString: nng_http_req_get_method(request))
        let uri = String(cString: nng_http_req_get_uri(request))
        let authorization = nng_http_req_get_header(request, "Authorization").map { String(cString: $0) }
        let response = Unmanaged<HandlerBox>.fromOpaque(data).takeUnretainedValue()
            .handle(HTTPRequest(method: method, uri: uri, authorization: authorization))
        var res: OpaquePointer?
        guard nng_http_res_alloc(&res) == 0, let res else {
            nng_aio_finish(aio, Int32(NNG_ENOMEM.rawValue))
            return
        }
        nng_http_res_set_status(res, response.status)
        nng_http_res_set_header(res, "Content-Type", response.contentType)
        nng_http_res_set_header(res, "Cache-Control", "no-store")
        for (name, value) in response.headers { nng_http_res_set_header(res, name, value) }
        let copied = response.body.withUnsafeBytes { nng_http_res_copy_data(res, $0.baseAddress, $0.count) }
        if copied != 0 {
            nng_http_res_free(res)
            nng_aio_finish(aio, copied)
            return
        }
        nng_aio_set_output(aio, 0, UnsafeMutableRawPointer(res))
        nng_aio_finish(aio, 0)
    }
}

private final class HandlerBox: Sendable {
    let handle: @Sendable (HTTPRequest) -> HTTPResponse
    init(_ handle: @escaping @Sendable (HTTPRequest) -> HTTPResponse) { self.handle = handle }
}
