import Crypto
import Foundation
import Logging
import Transport

/// The coordinator's HTTP endpoint, on nng's own HTTP server:
///
///     GET /metrics                Prometheus text format (never behind the token: scrapers)
///     GET /api/status             the run, workers, curves, sparsity (JSON, see RunStatus)
///     GET /api/metrics?since=N    the same with only the points of steps after N
///     GET /                       the live page (one self-contained HTML file)
///
/// With a token (`observe.token_file`), every route but `/metrics` needs
/// `Authorization: Bearer <token>`; the page takes it from its URL's `#token=` fragment, which
/// browsers never send to the server.
public final class ObserveService: Sendable {
    let observer: RunObserver
    let server: HTTPServer
    /// The page's address (`http://127.0.0.1:9400/`).
    public let url: String

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    /// `clock`: monotonic seconds, the same clock the shell feeds the observer with.
    public init(settings: ObserveSettings, observer: RunObserver, logger: Logger, clock: @escaping @Sendable () -> Double) throws {
        self.observer = observer
        var token: [UInt8]?
        if !settings.tokenFile.isEmpty {
            do {
                let text = try String(contentsOfFile: settings.tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !text.isEmpty else { throw StartError(description: "the file is empty") }
                token = Array(text.utf8)
            } catch {
                throw StartError(description: "observe.token_file \(settings.tokenFile): cannot read the HTTP token: \(error)")
            }
        }
        let expected = token.map { Array(SHA256.hash(data: Array("Bearer ".utf8) + $0)) }
        do {
            server = try HTTPServer(address: settings.http) { request in
                Self.route(request, observer: observer, expected: expected, now: clock())
            }
        } catch {
            throw StartError(description: "observe.http \(settings.http): \(error)")
        }
        url = server.url + "/"
        if !ObserveSettings.isLoopback(settings.http) {
            logger.warning("the HTTP endpoint listens on a non-loopback address without TLS: anyone on the network path can read the run's status\(token == nil ? " (and no observe.token_file guards it)" : " and the bearer token")",
                           metadata: ["http": "\(settings.http)"])
        }
        logger.info("serving the live page and /metrics", metadata: ["url": "\(url)", "token": "\(token == nil ? "none" : "required")"])
    }

    /// Stops accepting connections (requests under way finish).
    public func stop() { server.stop() }

    static func route(_ request: HTTPRequest, observer: RunObserver, expected: [UInt8]?, now: Double) -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else {
            return HTTPResponse(status: 405, text: "only GET\n", headers: [("Allow", "GET, HEAD")])
        }
        if request.path == "/metrics" {
            return HTTPResponse(contentType: "text/plain; version=0.0.4; charset=utf-8", body: observer.prometheusText(now: now))
        }
        let known = ["/", "/index.html", "/api/status", "/api/metrics"]
        guard known.contains(request.path) else { return HTTPResponse(status: 404, text: "no such page: \(request.path)\n") }
        if let expected {
            // Compared as digests: the time taken does not depend on how much of the token matched.
            let given = Array(SHA256.hash(data: Array((request.authorization ?? "").utf8)))
            guard given == expected || request.path == "/" || request.path == "/index.html" else {
                return HTTPResponse(status: 401, text: "this endpoint needs Authorization: Bearer <the token in observe.token_file>\n",
                                    headers: [("WWW-Authenticate", "Bearer")])
            }
        }
        switch request.path {
        case "/api/status":
            return HTTPResponse(contentType: "application/json", body: observer.status(now: now).json())
        case "/api/metrics":
            let since = request.query["since"].flatMap(Int.init)
            if request.query["since"] != nil, since == nil {
                return HTTPResponse(status: 400, text: "since must be a step number, e.g. /api/metrics?since=120\n")
            }
            return HTTPResponse(contentType: "application/json", body: observer.status(now: now, since: since ?? -1).json())
        default:
            return HTTPResponse(contentType: "text/html; charset=utf-8", body: LivePage.html)
        }
    }
}
