import Foundation
import Testing
import Transport
import Wire

/// The csptrain executable built beside this test bundle.
enum Binary {
    static var url: URL {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("csptrain")
    }
}

/// A child process with captured output and a hard time limit.
///
/// Both outputs go to files, read once the child has exited. A pipe's read to end of file
/// blocks until every process holding its write end has closed it, and children started later
/// (a coordinator's workers) could inherit it: reading a SIGTERMed coordinator's output then
/// blocked one of the test process's two cooperative threads for as long as its workers kept
/// trying to reconnect, and starved unrelated suites into their time limits.
final class Child: @unchecked Sendable {
    let process = Process()
    let stdoutFile: URL
    let stderrFile: URL

    /// `executable`: what to run instead of csptrain (`/usr/bin/env` for a Python script, say).
    /// `descriptorLimit`: started under `ulimit -Sn N -Hn N`, as a login shell's default would.
    /// `stdin`: bytes written to the child's standard input (then closed) from another thread.
    init(_ arguments: [String], executable: String? = nil, environment: [String: String] = [:], descriptorLimit: Int? = nil,
         stdin: Data? = nil) throws {
        let program = executable ?? Binary.url.path
        if let limit = descriptorLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "ulimit -Sn \(limit) -Hn \(limit) && exec \"$0\" \"$@\"", program] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let name = "csptrain-child-\(UInt64.random(in: 0 ... .max))"
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).log")
        stdoutFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).out")
        FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: stdoutFile)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        let input = stdin.map { _ in Pipe() }
        process.standardInput = input ?? FileHandle.nullDevice
        try process.run()
        if let input, let stdin {
            Thread.detachNewThread {
                try? input.fileHandleForWriting.write(contentsOf: stdin)
                try? input.fileHandleForWriting.close()
            }
        }
    }

    /// Waits for exit; kills the process and fails when it takes longer than `seconds`. Never
    /// waits without a bound: a process that SIGKILL does not end within 10 s (one in
    /// uninterruptible sleep, say) is reported and left behind, with status -1.
    func wait(seconds: Double) async -> (status: Int32, stdout: String, stderr: String) {
        if !(await exited(within: seconds)) {
            Issue.record("\(process.arguments ?? []) still running after \(seconds) s; killing it")
            kill(process.processIdentifier, SIGKILL)
            if !(await exited(within: 10)) {
                Issue.record("\(process.arguments ?? []) (pid \(process.processIdentifier)) survived SIGKILL for 10 s")
                return (-1, stdout, stderr)
            }
        }
        return (process.terminationStatus, stdout, stderr)
    }

    private func exited(within seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { await nap() }
        return !process.isRunning
    }

    var stdout: String { (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? "" }

    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: stderrFile)
        try? FileManager.default.removeItem(at: stdoutFile)
    }
}

extension Child {
    /// A Python script, run by `python` (a path, or a name looked up on the PATH).
    convenience init(python: String, _ arguments: [String]) throws {
        try self.init([python] + arguments, executable: "/usr/bin/env")
    }
}

/// 50 ms, also in a cancelled task (a test past its time limit), where `Task.sleep` returns at
/// once and a polling loop would spin on one of the test process's two threads.
func nap() async {
    do { try await Task.sleep(for: .milliseconds(50)) } catch { usleep(50_000) }
}

func temporaryRunDir() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-it-\(UInt64.random(in: 0 ... .max))")
}

/// Waits until the run in `dir` has recorded `n` steps (metrics.jsonl has `n` lines).
func waitForSteps(_ dir: URL, _ n: Int, seconds: Double = 60) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let text = (try? String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)) ?? ""
        if text.split(separator: "\n").count >= n { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("the run in \(dir.path) did not reach \(n) steps within \(seconds) s")
}

/// Waits for a file to appear (the coordinator's endpoint, say) and returns its trimmed text. The
/// bound is for liveness on a loaded 2-core machine (CI runs suites in parallel), not for speed.
func waitForFile(_ url: URL, seconds: Double = 60) async throws -> String {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if let text = try? String(contentsOf: url, encoding: .utf8), !text.isEmpty {
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("\(url.path) did not appear within \(seconds) s")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The run summary, parsed from `--json` output or summary.json.
struct Summary: Decodable {
    let status: String
    let steps: Int
    let startStep: Int
    let workersSeen: Int
    let workersFailed: Int
    let firstLoss: Double?
    let finalLoss: Double?
    let sparsity: Double
    let sparsityOverall: Double
    let checkpoint: String?
    let wallSeconds: Double
    let duplicateChunks: Int
    let staleChunks: Int
    let reassignedMicroBatches: Int
    let resentRequests: Int?
    let overlappedWorkRequests: Int?
    let streamChunks: Int?
    let streamWeights: Int?
    let validWer: Double?
    let validWerChannel: Double?
    let validWerSeen: Double?

    static func parse(_ text: String) throws -> Summary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(Summary.self, from: Data(text.utf8))
    }
}

/// A hand-driven protocol client: what a worker in another language would send.
final class RawClient: @unchecked Sendable {
    let socket: Socket
    let context: Context
    var runID = ""
    var session = Data()
    var step: UInt64 = 0

    init(url: String) throws {
        socket = try Socket(.req)
        try socket.dial(url, maxMessageSize: 64 << 20)
        context = try socket.openContext()
        try context.setResendTime(.seconds(60))
    }

    func send(bytes: [UInt8]) async throws -> Csptrain_V1_Reply {
        // A liveness bound: on a loaded 2-core machine a reply has taken over 10 s.
        let reply = try await context.request(Message(bytes), timeout: .seconds(30))
        return try Csptrain_V1_Reply(serializedBytes: reply.bytes)
    }

    func send(_ body: (inout Csptrain_V1_Request) -> Void, version: UInt32 = 1) async throws -> Csptrain_V1_Reply {
        var request = Csptrain_V1_Request()
        request.header.protocolVersion = version
        request.header.runID = runID
        request.header.session = session
        request.header.step = step
        body(&request)
        return try await send(bytes: request.serializedBytes())
    }

    /// Closes the connection. libnng 1.5.2 can hang in `nng_close` for good (see
    /// `Socket.close(waitingAtMost:)`): that is reported, not waited for.
    func close() async {
        if !(await socket.close(waitingAtMost: .seconds(10))) {
            Issue.record("nng_close of a test client did not return within 10 s: this process's nng reaper is stuck")
        }
    }
}
