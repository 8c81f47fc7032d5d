import Foundation
import Testing

/// The coordinator is killed before its first checkpoint and started again exactly as Deploy/'s
/// Slurm script and systemd unit start it: the same worker processes rejoin, without being
/// restarted, and the run completes.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct LauncherRestartTests {
    static let root = DeployCommandLineTests.root

    /// Configs/local.yaml's MLP; its only checkpoint is the final one, and 1,000 steps leave the
    /// test time to see the first ones before the run ends (on a loaded CI machine 100, then 200
    /// steps passed before the test looked).
    static let config = """
        seed: 1
        steps: 1000
        model: {kind: mlp, input_dim: 32, hidden_dim: 64, classes: 8}
        data: {kind: synthetic, examples: 16384, noise: 1.5}
        coordinator: {global_batch: 256, micro_batches: 8, step_deadline_seconds: 3}
        checkpoint: {every_steps: 5000, keep: 3}
        """

    /// Below Linux's ephemeral range (32768–60999), where the kernel picks ports for outgoing
    /// connections (these tests' own among them).
    static func freePort() -> Int { Int.random(in: 20000 ..< 32768) }

    /// Processes whose command line contains every one of `words`.
    static func pids(matching words: [String]) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name -> Int32? in
            guard let pid = Int32(name), pid != getpid(),
                  let raw = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
            let line = String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return words.allSatisfy { line.contains($0) } ? pid : nil
        }
    }

    /// Waits until the run has trained a few steps and written no checkpoint yet.
    static func waitForEarlySteps(_ runDir: URL, seconds: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let lines = (try? String(contentsOf: runDir.appendingPathComponent("metrics.jsonl"), encoding: .utf8))?
                .split(separator: "\n").count ?? 0
            if lines >= 3 {
                let checkpoints = (try? FileManager.default.contentsOfDirectory(atPath: runDir.appendingPathComponent("checkpoints").path)) ?? []
                #expect(!checkpoints.contains { $0.hasSuffix(".ckpt") }, "a checkpoint was written before the kill: \(checkpoints)")
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("no steps in \(runDir.path) within \(seconds) s")
    }

    static func summary(_ runDir: URL) throws -> Summary {
        try Summary.parse(String(contentsOf: runDir.appendingPathComponent("summary.json"), encoding: .utf8))
    }

    @Test func slurmScriptRestartsAFailedCoordinatorAndTheWorkersRejoin() async throws {
        let dir = temporaryRunDir()
        let shims = dir.appendingPathComponent("bin"), runDir = dir.appendingPathComponent("run")
        try FileManager.default.createDirectory(at: shims, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // srun runs its task here (its options dropped); scontrol names this machine.
        try "#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\nexec \"$@\"\n"
            .write(to: shims.appendingPathComponent("srun"), atomically: true, encoding: .utf8)
        try "#!/usr/bin/env bash\necho 127.0.0.1\n".write(to: shims.appendingPathComponent("scontrol"), atomically: true, encoding: .utf8)
        for tool in ["srun", "scontrol"] {
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: shims.appendingPathComponent(tool).path)
        }
        let configFile = dir.appendingPathComponent("run.yaml")
        try Self.config.write(to: configFile, atomically: true, encoding: .utf8)
        let port = Self.freePort()

        let script = Process()
        script.executableURL = URL(fileURLWithPath: "/bin/bash")
        script.arguments = [Self.root.appendingPathComponent("Deploy/slurm/csptrain.sbatch").path, runDir.path, configFile.path]
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = shims.path + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["SLURM_JOB_NODELIST"] = "node1"
        environment["CSPTRAIN"] = Binary.url.path
        environment["CSPTRAIN_PORT"] = String(port)
        script.environment = environment
        let log = dir.appendingPathComponent("job.out")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        script.standardOutput = handle
        script.standardError = handle
        try script.run()
        defer {
            // On failure: this test's own processes, found by its port and run folder.
            for pid in Self.pids(matching: ["tcp://127.0.0.1:\(port)"]) + Self.pids(matching: [runDir.path]) { kill(pid, SIGKILL) }
            if script.isRunning { script.terminate() }
        }

        try await Self.waitForEarlySteps(runDir)
        let workers = Self.pids(matching: ["worker", "--connect", "tcp://127.0.0.1:\(port)"])
        let coordinators = Self.pids(matching: ["coordinator", runDir.path])
        #expect(coordinators.count == 1 && workers.count == 1, "coordinators \(coordinators), workers \(workers)")
        for pid in coordinators { kill(pid, SIGKILL) }

        let deadline = Date().addingTimeInterval(120)
        while script.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(!script.isRunning && script.terminationStatus == 0, "the job did not complete: \(output.suffix(3000))")
        #expect(output.contains("restarting it in place (1 of 3)"), "\(output.suffix(3000))")
        let summary = try Self.summary(runDir)
        #expect(summary.status == "completed" && summary.steps == 1000)
        // The same worker process, never restarted, joined the restarted coordinator.
        let afterRestart = output.components(separatedBy: "restarting it in place").last ?? ""
        for pid in workers {
            #expect(afterRestart.contains("worker joined") && afterRestart.contains("-\(pid)"), "worker \(pid) did not rejoin: \(afterRestart.suffix(3000))")
        }
    }

    @Test func systemdUnitLineRestartedOnFailureKeepsItsWorkersOverMutualTLS() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let port = Self.freePort()
        let runDir = dir.appendingPathComponent("run"), tls = dir.appendingPathComponent("tls")
        try Self.config.write(to: dir.appendingPathComponent("run.yaml"), atomically: true, encoding: .utf8)
        try String(repeating: "ab", count: 32).write(to: dir.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        let certs = try Child(["certs", "init", "--out", tls.path])
        #expect(await certs.wait(seconds: 30).status == 0)

        // The units' own command lines, with this test's folders and port.
        func unitLine(_ unit: String) throws -> [String] {
            let text = try String(contentsOf: Self.root.appendingPathComponent("Deploy/systemd/\(unit)"), encoding: .utf8)
            let line = try #require(text.components(separatedBy: "\n").first { $0.hasPrefix("ExecStart=") })
            return line.dropFirst("ExecStart=".count)
                .replacingOccurrences(of: "${COORDINATOR}", with: "tls+tcp://127.0.0.1:7450")
                .replacingOccurrences(of: "7450", with: String(port))
                .replacingOccurrences(of: "/var/lib/csptrain/run", with: runDir.path)
                .replacingOccurrences(of: "/etc/csptrain", with: dir.path)
                .split(separator: " ").dropFirst().map(String.init)
        }
        let coordinatorLine = try unitLine("csptrain-coordinator.service")
        let workerLine = try unitLine("csptrain-worker@.service")
        #expect(coordinatorLine.contains("--require-client-cert") && coordinatorLine.contains("--resume"))

        let first = try Child(coordinatorLine)
        let workers = try (1 ... 2).map { i in
            try Child(workerLine.map { $0 == "%H-%i" ? "unit-worker-\(i)" : $0 })
        }
        try await Self.waitForEarlySteps(runDir)
        first.signal(SIGKILL)
        let killed = await first.wait(seconds: 10)
        #expect(killed.status != 0)
        // Restart=on-failure, RestartSec=5 (shortened here): the same line again.
        try await Task.sleep(for: .seconds(1))
        let second = try Child(coordinatorLine)
        let result = await second.wait(seconds: 120)
        #expect(result.status == 0, "restarted coordinator: \(result.stderr.suffix(3000))")
        // Each worker's whole log once it has ended (or been killed), to tell where one that
        // did not rejoin was waiting.
        for (i, worker) in workers.enumerated() {
            let end = await worker.wait(seconds: 30)
            #expect(end.status == 0, "worker \(i + 1) exited with \(end.status): \(end.stderr.suffix(3000))")
            #expect(result.stderr.contains("worker=unit-worker-\(i + 1)"),
                    "unit-worker-\(i + 1) did not rejoin: \(result.stderr.suffix(3000))\nthe worker's log:\n\(end.stderr.suffix(4000))")
        }
        let summary = try Self.summary(runDir)
        #expect(summary.status == "completed" && summary.steps == 1000)
    }
}
