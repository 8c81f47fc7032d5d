import Foundation
import Testing

/// `csptrain ... | head -1`: stdout closed under the writer. The process must end with an
/// error message and a non-zero status, not be killed by SIGPIPE or trap.
struct ClosedStdoutTests {
    @Test(arguments: [[], ["--json"]])
    func configDumpIntoAClosedPipeExitsWithAnError(_ extra: [String]) async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = Binary.url
        process.arguments = ["config", "dump", "--config", root.appendingPathComponent("Configs/local.yaml").path] + extra
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        try stdout.fileHandleForReading.close()   // nobody will ever read
        try process.run()
        var deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline { await nap() }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline { await nap() }
            try #require(!process.isRunning, "csptrain config dump survived SIGKILL for 10 s")
        }
        let message = String(decoding: try stderr.fileHandleForReading.readToEnd() ?? Data(), as: UTF8.self)
        #expect(process.terminationReason == .exit, "killed by signal \(process.terminationStatus)")
        #expect(process.terminationStatus == 1)
        #expect(message.contains("cannot write standard output: Broken pipe (errno 32)"), "\(message)")
    }
}
