import Foundation
import Testing
import Transport

/// Real runs on a disk that fills up (a small tmpfs): `checkpoint.on_write_failure: stop` ends
/// the run naming the file and the disk, and `--resume` finishes it once space is back;
/// `continue` trains on and writes the held lines when space returns, and never reports success
/// when it does not; a run whose checkpoints alone cannot be written does not report success
/// either. And a start that fails (the port is taken) leaves the run folder as it found it.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct FullDiskRunTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The local MLP, widened so that a checkpoint is about 250 KiB, with one every step.
    static let settings = [
        "--config", root.appendingPathComponent("Configs/local.yaml").path,
        "--set", "model.hidden_dim=512", "--set", "coordinator.global_batch=64", "--set", "coordinator.micro_batches=2",
        "--set", "checkpoint.every_steps=1",
    ]
    /// Room for the run's small files and two checkpoints: the third does not fit.
    static let roomForTwoCheckpoints = 620 << 10

    static func launch(_ runDir: String, steps: Int, _ extra: [String] = []) throws -> Child {
        try Child(["launch", "--workers", "1", "--steps", "\(steps)", "--run-dir", runDir, "--json"] + settings + extra)
    }

    /// The `step` of every line of a JSON-lines file, in file order.
    static func steps(_ path: String) -> [Int] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int
        }
    }

    static func message(_ json: String) -> String {
        ((try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any])?["message"] as? String ?? ""
    }

    static func until(seconds: Double, _ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    // MARK: on_write_failure: stop

    @Test(.enabled(if: Tmpfs.available, Tmpfs.skipReason))
    func aFullDiskStopsTheRunAndResumeFinishesItOnceSpaceIsBack() async throws {
        let disk = try Tmpfs(bytes: 4 << 20)
        defer { disk.unmount() }
        try disk.fill("ballast", leaving: Self.roomForTwoCheckpoints)
        let run = disk.path + "/run"

        let (status, stdout, stderr) = try await Self.launch(run, steps: 40).wait(seconds: 60)
        #expect(status == 1, "\(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "failed" && summary.steps < 40)
        // The newest checkpoint on disk is intact, and `latest` names it.
        let latest = try #require(summary.checkpoint, "no checkpoint on disk: \(stdout)")
        let inspect = try Child(["checkpoint", "inspect", run, "--json"])
        let (inspectStatus, inspectOut, inspectErr) = await inspect.wait(seconds: 30)
        #expect(inspectStatus == 0, "\(inspectErr)")
        let inspected = try #require(try JSONSerialization.jsonObject(with: Data(inspectOut.utf8)) as? [String: Any])
        let newest = try #require(inspected["step"] as? Int)
        #expect(latest == "\(run)/checkpoints/step-\(newest).ckpt")
        // Why, which file, which disk, what to do.
        let message = Self.message(stdout)
        #expect(message.contains("stopping: 3 checkpoint writes in a row failed (checkpoint.on_write_failure: stop)"), "\(message)")
        #expect(message.contains("; the last: cannot write \(run)/checkpoints/step-") && message.contains(".ckpt.tmp: No space left on device (errno 28)"),
                "\(message)")
        #expect(message.contains("the disk: \(disk.path) (tmpfs"), "\(message)")
        #expect(message.contains("the newest checkpoint on disk is step \(newest)") && message.contains("--resume"), "\(message)")
        #expect(stderr.contains("run failed"), "\(stderr)")
        // summary.json says so too, when the disk took it.
        if let onDisk = try? String(contentsOfFile: run + "/summary.json", encoding: .utf8) {
            #expect(try Summary.parse(onDisk).status == "failed")
        }

        try FileManager.default.removeItem(atPath: disk.path + "/ballast")
        let (resumeStatus, resumeOut, resumeErr) = try await Self.launch(run, steps: 40, ["--resume"]).wait(seconds: 60)
        #expect(resumeStatus == 0, "\(resumeErr)")
        let resumed = try Summary.parse(resumeOut)
        #expect(resumed.status == "completed" && resumed.steps == 40 && resumed.startStep == newest)
        #expect(Self.steps(run + "/metrics.jsonl") == Array(1 ... 40))
    }

    // MARK: on_write_failure: continue

    /// Checkpoints fail from the third on; once one has failed the disk is filled to the brim
    /// (and kept so) until a metrics line was refused too (`spaceReturns`: then space is freed)
    /// or the run ends.
    func trainOnAFullDisk(steps: Int, spaceReturns: Bool) async throws -> (disk: Tmpfs, run: String, status: Int32, stdout: String, stderr: String) {
        let disk = try Tmpfs(bytes: 4 << 20)
        try disk.fill("ballast", leaving: Self.roomForTwoCheckpoints)
        let run = disk.path + "/run"
        let child = try Self.launch(run, steps: steps, ["--set", "checkpoint.on_write_failure=continue"])
        let refusedCheckpoint = "\(run)/checkpoints/step-"
        let refusedLine = "cannot append to \(run)/metrics.jsonl"
        _ = await Self.until(seconds: 30) { child.stderr.contains(refusedCheckpoint) || !child.process.isRunning }
        let deadline = Date().addingTimeInterval(30)
        while child.process.isRunning, Date() < deadline, !(spaceReturns && child.stderr.contains(refusedLine)) {
            try disk.fill("ballast")
            try await Task.sleep(for: .milliseconds(5))
        }
        let log = child.stderr
        #expect(log.contains(refusedCheckpoint) && log.contains("No space left on device"), "no checkpoint was refused: \(log)")
        if spaceReturns {
            #expect(log.contains(refusedLine) && log.contains("held in memory"), "no metrics line was refused: \(log)")
            try FileManager.default.removeItem(atPath: disk.path + "/ballast")
        }
        let (status, stdout, stderr) = await child.wait(seconds: 60)
        return (disk, run, status, stdout, stderr)
    }

    @Test(.enabled(if: Tmpfs.available, Tmpfs.skipReason))
    func trainingGoesOnAndHeldLinesAreWrittenWhenSpaceReturns() async throws {
        let (disk, run, status, stdout, stderr) = try await trainOnAFullDisk(steps: 120, spaceReturns: true)
        defer { disk.unmount() }
        #expect(status == 0, "\(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 120)
        #expect(summary.checkpoint == "\(run)/checkpoints/step-120.ckpt")
        // Every line the disk refused arrived later, in order, exactly once.
        #expect(Self.steps(run + "/metrics.jsonl") == Array(1 ... 120))
        #expect(Self.steps(run + "/ledger/epoch-0.jsonl") == Array(1 ... 120))
    }

    @Test(.enabled(if: Tmpfs.available, Tmpfs.skipReason))
    func aRunWhoseSpaceNeverReturnsDoesNotReportSuccess() async throws {
        let (disk, _, status, stdout, stderr) = try await trainOnAFullDisk(steps: 20, spaceReturns: false)
        defer { disk.unmount() }
        #expect(status == 1, "\(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "failed" && summary.steps == 20)
        let message = Self.message(stdout)
        #expect(message.contains("the final checkpoint (step 20) could not be written"), "\(message)")
        #expect(message.contains("No space left on device") && message.contains("the disk: \(disk.path) (tmpfs"), "\(message)")
    }

    // MARK: The false success

    /// Only `checkpoints/` is full (its own tmpfs, meant to hold one checkpoint; one CI run also
    /// fitted step 10's beside step 5's, for a reason not pinned down): the run trains to the end
    /// and writes its metrics, but must not say it completed, and names its newest checkpoint.
    @Test(.enabled(if: Tmpfs.available, Tmpfs.skipReason))
    func aRunWhoseFinalCheckpointIsNotWrittenDoesNotComplete() async throws {
        let run = temporaryRunDir().path
        defer { try? FileManager.default.removeItem(atPath: run) }
        let disk = try Tmpfs(bytes: 384 << 10, at: run + "/checkpoints")
        defer { disk.unmount() }
        let child = try Self.launch(run, steps: 12, ["--set", "checkpoint.every_steps=5"])
        let (status, stdout, stderr) = await child.wait(seconds: 60)
        #expect(status == 1, "\(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "failed" && summary.steps == 12)
        let newest = [5, 10].first { summary.checkpoint == "\(run)/checkpoints/step-\($0).ckpt" }
        #expect(newest != nil, "newest checkpoint: \(summary.checkpoint ?? "none")")
        let message = Self.message(stdout)
        #expect(message.contains("the final checkpoint (step 12) could not be written: cannot write \(run)/checkpoints/step-12.ckpt.tmp: No space left on device"),
                "\(message)")
        #expect(message.contains("the newest checkpoint is step \(newest ?? 5)"), "\(message)")
        #expect(try Summary.parse(String(contentsOfFile: run + "/summary.json", encoding: .utf8)).status == "failed")
        #expect(Self.steps(run + "/metrics.jsonl") == Array(1 ... 12))
    }

    // MARK: A failed start

    /// The port is taken: the start fails naming the address, and removes what it created (the
    /// run folder and its missing parent) or, in a folder that had a token, leaves just that token.
    @Test(arguments: ["coordinator", "launch"])
    func aFailedStartLeavesNothingBehind(command: String) async throws {
        let occupant = try Socket(.rep)
        defer { occupant.close() }
        let address = try occupant.listen("tcp://127.0.0.1:0", maxMessageSize: 1 << 10).url
        let parent = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: parent) }
        let fresh = parent.appendingPathComponent("fresh").path
        let withToken = temporaryRunDir().path
        defer { try? FileManager.default.removeItem(atPath: withToken) }
        try FileManager.default.createDirectory(atPath: withToken, withIntermediateDirectories: true)
        let token = Data("0123456789abcdef0123456789abcdef\n".utf8)
        try token.write(to: URL(fileURLWithPath: withToken + "/token"))
        chmod(withToken + "/token", 0o600)

        for dir in [fresh, withToken] {
            let arguments = command == "launch" ? ["launch", "--workers", "1"] : ["coordinator"]
            let child = try Child(arguments + ["--listen", address, "--run-dir", dir, "--config", Self.root.appendingPathComponent("Configs/local.yaml").path])
            let (status, _, stderr) = await child.wait(seconds: 30)
            #expect(status == 1, "\(stderr)")
            #expect(stderr.contains("cannot listen on \(address): the address is in use"), "\(stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: parent.path), "left behind: \((try? FileManager.default.subpathsOfDirectory(atPath: parent.path)) ?? [])")
        #expect(try FileManager.default.contentsOfDirectory(atPath: withToken) == ["token"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: withToken + "/token")) == token)
    }
}

/// A tmpfs mounted for one test, at a fresh folder or a given one: a disk that fills up.
///
/// Mounting needs root (CI runs as root). Elsewhere the tests that need it are skipped, with
/// the reason; with CI=true they run, and fail when the mount does. Unmount in a `defer`.
final class Tmpfs {
    let path: String
    private var mounted = true

    static let available = geteuid() == 0 || ProcessInfo.processInfo.environment["CI"] == "true"
    static let skipReason: Comment = "mounting a tmpfs needs root: run as root (as CI does) to test a full disk"

    init(bytes: Int, at path: String = temporaryRunDir().path) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try Self.run("/bin/mount", "-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", path)
    }

    func unmount() {
        guard mounted else { return }
        mounted = false
        try? Self.run("/bin/umount", "-l", path)
        try? FileManager.default.removeItem(atPath: path)
    }

    deinit { unmount() }

    var freeBytes: Int {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return 0 }
        return Int(s.f_bavail) * Int(s.f_frsize)
    }

    /// Appends zeros to `name` until `leaving` bytes are free, or until the disk takes no more.
    func fill(_ name: String, leaving: Int = 0) throws {
        let fd = open(path + "/" + name, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw TestFailure("cannot open \(path)/\(name): errno \(errno)") }
        defer { close(fd) }
        let page = [UInt8](repeating: 0, count: 4096)
        var remaining = leaving > 0 ? freeBytes - leaving : .max
        while remaining > 0 {
            let n = page.withUnsafeBytes { write(fd, $0.baseAddress, min(remaining, $0.count)) }
            if n < 0, errno == ENOSPC { return }
            guard n > 0 else { throw TestFailure("cannot write \(path)/\(name): errno \(errno)") }
            remaining -= n
        }
    }

    static func run(_ arguments: String...) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: (try? errors.fileHandleForReading.readToEnd()) ?? Data(), as: UTF8.self)
            throw TestFailure("\(arguments.joined(separator: " ")) failed (status \(process.terminationStatus)): \(text)")
        }
    }
}
