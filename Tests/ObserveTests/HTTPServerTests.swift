import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing
import Transport
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// nng's HTTP server through Transport's wrapper, over real loopback sockets.
struct HTTPServerTests {
    func get(_ url: String, authorization: String? = nil) async throws -> (Int, String, String?) {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 10
        if let authorization { request.setValue(authorization, forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (http?.statusCode ?? -1, String(decoding: data, as: UTF8.self), http?.value(forHTTPHeaderField: "Content-Type"))
    }

    @Test func servesEveryPathThroughOneHandler() async throws {
        let a = try HTTPServer(address: "127.0.0.1:0") { r in
            HTTPResponse(status: r.path == "/missing" ? 404 : 200,
                         text: "\(r.method) \(r.path) since=\(r.query["since"] ?? "-") auth=\(r.authorization ?? "-")")
        }
        let b = try HTTPServer(address: "127.0.0.1:0") { _ in HTTPResponse(contentType: "application/json", text: "{}") }
        defer { a.stop(); b.stop() }
        #expect(a.port > 0 && b.port > 0 && a.port != b.port, "port 0 picks a free port for each")
        let (status, body, type) = try await get(a.url + "/api/metrics?since=12%2B1", authorization: "Bearer x")
        #expect(status == 200)
        #expect(body == "GET /api/metrics since=12+1 auth=Bearer x")
        #expect(type?.hasPrefix("text/plain") == true)
        #expect(try await get(a.url + "/missing").0 == 404)
        #expect(try await get(b.url + "/").1 == "{}")
    }

    @Test func stopRefusesNewConnectionsAndFreesThePort() async throws {
        let server = try HTTPServer(address: "127.0.0.1:0") { _ in HTTPResponse(text: "ok") }
        let port = server.port
        #expect(try await get(server.url + "/").1 == "ok")
        server.stop()
        await #expect(throws: (any Error).self) { _ = try await get("http://127.0.0.1:\(port)/") }
        // The port can be bound again at once.
        let again = try HTTPServer(address: "127.0.0.1:\(port)") { _ in HTTPResponse(text: "again") }
        defer { again.stop() }
        #expect(try await get(again.url + "/").1 == "again")
    }

    @Test func portInUseIsAnErrorNamingTheAddress() throws {
        // A plain TCP listener holds the port (nng would share its own server per address).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        do {
            _ = try HTTPServer(address: "127.0.0.1:\(port)") { _ in HTTPResponse(text: "") }
            Issue.record("serving on a port in use succeeded")
        } catch {
            #expect(error.isAddressInUse, "\(error)")
            #expect("\(error)".contains("127.0.0.1:\(port)"))
        }
    }

    @Test func badAddressNamesIt() {
        #expect(throws: NNGError.self) { _ = try HTTPServer(address: "not a host:port") { _ in HTTPResponse(text: "") } }
    }
}
