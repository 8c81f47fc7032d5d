import Foundation
import Testing

/// A run folder this user may not write: the coordinator says so with the real errno and who
/// owns the folder (it used to say "lock file …: No such file or directory").
struct RunFolderErrorTests {
    static let asNobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    /// Root, setpriv, and a binary that uid 65534 may run (not so under a private home).
    static var available: Bool {
        guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: asNobody[0]) else { return false }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: asNobody[0])
        probe.arguments = Array(asNobody.dropFirst()) + ["/usr/bin/test", "-x", Binary.url.path]
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }

    @Test(.enabled(if: available, "needs root, setpriv and a build folder that uid 65534 can read"))
    func aForeignOwnedRunFolderIsReportedWithItsOwner() async throws {
        let dir = temporaryRunDir()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let coordinator = try Child(Array(Self.asNobody.dropFirst()) + [Binary.url.path, "coordinator", "--listen", "tcp://127.0.0.1:0",
                                                                       "--run-dir", dir.path,
                                                                       "--config", root.appendingPathComponent("Configs/local.yaml").path],
                                    executable: Self.asNobody[0])
        let (status, _, text) = await coordinator.wait(seconds: 60)
        #expect(status == 1)
        #expect(text.contains("cannot open the lock file \(dir.path)/coordinator.lock: Permission denied (errno 13)"), "\(text)")
        #expect(text.contains("owned by root (uid 0), mode 0755; this process runs as uid 65534"), "\(text)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
