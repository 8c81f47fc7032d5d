import Foundation
import Testing

/// Real coordinator and worker processes over tls+tcp:// on loopback.
@Suite(.timeLimit(.minutes(2)))
struct TLSRunTests {
    @Test func workersWithTheRunsCATrainAndOneWithoutACertificateIsRefusedAtTheHandshake() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tls = dir.appendingPathComponent("tls"), caOnly = dir.appendingPathComponent("ca-only")
        let certs = try Child(["certs", "init", "--out", tls.path, "--hosts", "127.0.0.1"])
        #expect(await certs.wait(seconds: 30).status == 0)
        try FileManager.default.createDirectory(at: caOnly, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: tls.appendingPathComponent("ca.pem"), to: caOnly.appendingPathComponent("ca.pem"))

        let runDir = dir.appendingPathComponent("run")
        let coordinator = try Child(["coordinator", "--listen", "tls+tcp://127.0.0.1:0", "--tls", tls.path, "--require-client-cert",
                                     "--run-dir", runDir.path, "--config", DeployCommandLineTests.root.appendingPathComponent("Configs/local.yaml").path,
                                     "--steps", "150", "--set", "coordinator.min_workers=2", "--json"])
        let url = try await waitForFile(runDir.appendingPathComponent("endpoint"))
        #expect(url.hasPrefix("tls+tcp://127.0.0.1:"))
        let token = runDir.appendingPathComponent("token").path
        // The stranger dials first and keeps trying while the others train.
        let stranger = try Child(["worker", "--connect", url, "--tls", caOnly.path, "--token-file", token, "--name", "stranger", "--patience", "6"])
        let workers = try (1 ... 2).map { i in
            try Child(["worker", "--connect", url, "--tls", tls.path, "--token-file", token, "--name", "w\(i)"])
        }
        let (status, stdout, stderr) = await coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr.suffix(2000))")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 150 && summary.workersSeen == 2)
        // The chunks came on the workers' chunk streams, over TLS with the same certificates.
        #expect((summary.streamChunks ?? 0) >= 150, "\(stdout)")
        for w in workers { #expect(await w.wait(seconds: 30).status == 0) }
        let refused = await stranger.wait(seconds: 30)
        #expect(refused.status != 0 && refused.stderr.contains("no answer from the coordinator"), "stranger: \(refused.stderr.suffix(1500))")
        #expect(!stderr.contains("worker=stranger"), "the stranger reached the coordinator past TLS")
    }

    @Test func plainTCPBeyondLoopbackIsWarnedAboutAndTLSWithoutAFolderIsRefused() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let noFolder = try Child(["coordinator", "--listen", "tls+tcp://127.0.0.1:0", "--run-dir", dir.appendingPathComponent("a").path])
        let refused = await noFolder.wait(seconds: 30)
        #expect(refused.status != 0 && refused.stderr.contains("--tls DIR"), "\(refused.stderr)")
        let plain = try Child(["worker", "--connect", "tcp://192.0.2.1:7450", "--patience", "0"],
                              environment: ["CSPTRAIN_TOKEN": String(repeating: "ab", count: 32)])
        let deadline = Date().addingTimeInterval(20)
        while !plain.stderr.contains("unencrypted"), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(plain.stderr.contains("unencrypted and unauthenticated"), "\(plain.stderr)")
        plain.signal(SIGKILL)
    }
}
