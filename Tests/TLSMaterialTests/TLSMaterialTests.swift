import Foundation
import Testing
@testable import TLSMaterial
import Transport

/// `certs init` output, read back, and real TLS handshakes over nng's tls+tcp:// on loopback.
@Suite(.timeLimit(.minutes(1)))
struct TLSMaterialTests {
    func freshFolder(hosts: [String] = ["localhost", "127.0.0.1"], days: Int = 30) throws -> CertificateFolder {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-tls-\(UUID().uuidString)")
        let folder = CertificateFolder(dir.path)
        try CertificateAuthority.initFolder(folder, hosts: hosts, days: days)
        return folder
    }

    func mode(_ url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as! NSNumber).intValue
    }

    @Test func initWritesTheDocumentedFilesWithPrivateKeys() throws {
        let folder = try freshFolder()
        for key in [CertificateFolder.caKey, CertificateFolder.coordinatorKey, CertificateFolder.workerKey] {
            #expect(try mode(folder.file(key)) == 0o600, "\(key)")
            #expect(try folder.read(key).hasPrefix("-----BEGIN PRIVATE KEY-----"))
        }
        for cert in [CertificateFolder.caCertificate, CertificateFolder.coordinatorCertificate, CertificateFolder.workerCertificate] {
            #expect(try folder.read(cert).hasPrefix("-----BEGIN CERTIFICATE-----"))
        }
        // The CA's key lives apart from what workers are given.
        #expect(CertificateFolder.caKey.hasPrefix("ca/"))
        // A second init into the same folder would replace the run's CA: refused.
        #expect(throws: CertificateError.self) { try CertificateAuthority.initFolder(folder, hosts: ["localhost"], days: 1) }
    }

    @Test func expiryWarningsNameTheFileAndTheDays() throws {
        let folder = try freshFolder(days: 5)
        let soon = try folder.expiryWarnings(withinDays: 14)
        #expect(soon.count == 3)
        #expect(soon.allSatisfy { $0.contains("expires in 4.") || $0.contains("expires in 5.") })
        #expect(try folder.expiryWarnings(withinDays: 2).isEmpty)
        let later = Date().addingTimeInterval(6 * 86_400)
        #expect(try folder.expiryWarnings(now: later, withinDays: 14).allSatisfy { $0.contains("expired") })
    }

    /// A request and its reply over tls+tcp://, or a timeout when the handshake fails.
    func exchange(server: TLSConfig, client: TLSConfig, host: String = "127.0.0.1") async throws -> [UInt8]? {
        let rep = try Socket(.rep)
        let url = try rep.listen("tls+tcp://\(host):0", maxMessageSize: 1 << 16, tls: server).url
        let req = try Socket(.req)
        try req.dial(url, maxMessageSize: 1 << 16, tls: client)
        let context = try rep.openContext()
        let serving = Task {
            let m = try await context.receive(timeout: .seconds(5))
            try await context.send(Message(m.bytes.reversed()))
        }
        let client = try req.openContext()
        var reply: [UInt8]?
        var failure: NNGError?
        do { reply = try await client.request(Message([1, 2, 3]), timeout: .seconds(3)).bytes } catch { failure = error }
        serving.cancel()
        if let failure, !failure.isTimeout { throw failure }
        return reply
    }

    @Test func workerWithTheRunsCATalksToTheCoordinator() async throws {
        let folder = try freshFolder()
        let reply = try await exchange(server: folder.serverConfig(requireClientCert: true),
                                       client: folder.clientConfig(serverName: "127.0.0.1"))
        #expect(reply == [3, 2, 1])
    }

    @Test func mutualTLSRefusesAWorkerWithoutACertificate() async throws {
        let folder = try freshFolder()
        let caOnly = try freshFolderWithCAOnly(from: folder)
        let server = try folder.serverConfig(requireClientCert: true)
        #expect(try await exchange(server: server, client: caOnly.clientConfig(serverName: "127.0.0.1")) == nil)
        // The same worker is welcome when client certificates are not required.
        #expect(try await exchange(server: folder.serverConfig(requireClientCert: false),
                                   client: caOnly.clientConfig(serverName: "127.0.0.1")) == [3, 2, 1])
    }

    @Test func workerRefusesACoordinatorOfAnotherCAOrName() async throws {
        let folder = try freshFolder()
        let other = try freshFolder()
        #expect(try await exchange(server: folder.serverConfig(requireClientCert: false),
                                   client: other.clientConfig(serverName: "127.0.0.1")) == nil)
        #expect(try await exchange(server: folder.serverConfig(requireClientCert: false),
                                   client: folder.clientConfig(serverName: "coordinator.example")) == nil)
    }

    @Test func plainURLWithTLSAndTLSURLWithoutAreRefusedClearly() throws {
        let folder = try freshFolder()
        let rep = try Socket(.rep)
        #expect(throws: NNGError.self) { try rep.listen("tls+tcp://127.0.0.1:0", maxMessageSize: 1024) }
        #expect(throws: NNGError.self) {
            try rep.listen("tcp://127.0.0.1:0", maxMessageSize: 1024, tls: try folder.serverConfig(requireClientCert: false))
        }
    }

    /// A folder with only the run's ca.pem: a worker that can check the coordinator but has no
    /// certificate of its own.
    func freshFolderWithCAOnly(from folder: CertificateFolder) throws -> CertificateFolder {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-tls-ca-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: folder.file(CertificateFolder.caCertificate), to: dir.appendingPathComponent(CertificateFolder.caCertificate))
        return CertificateFolder(dir.path)
    }
}
