import Checkpoints
import Foundation
import Testing

/// Kill, resume and change the number of workers: in deterministic mode the weights, optimizer
/// and pruning state end bit for bit where an uninterrupted run ends, and the ledger shows every
/// example of every completed epoch applied exactly once.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct ResumeTests {
    /// A small deterministic run whose steps straddle epoch boundaries (1024 examples, 96 per
    /// step), with uneven micro-batches and a pruning method that carries state (Taylor's running
    /// saliency and its mask).
    static let settings = [
        "--set", "deterministic=true", "--set", "data.examples=1024", "--set", "model.hidden_dim=96",
        "--set", "coordinator.global_batch=96", "--set", "coordinator.micro_batches=5",
        "--set", "checkpoint.every_steps=7", "--set", "checkpoint.keep=3",
        "--set", "pruning.method=taylor", "--set", "pruning.schedule.target=0.7",
        "--set", "pruning.schedule.end_step=60", "--set", "pruning.schedule.interval=10",
    ]
    static let steps = 150

    /// The records that make up the training state (not the run id or timestamps).
    static func state(_ runDir: String) throws -> [Checkpoint.Record] {
        let store = CheckpointStore(runDirectory: URL(fileURLWithPath: runDir))
        let latest = try #require(store.latestPath(), "no checkpoint in \(runDir)")
        return try CheckpointStore.load(latest).records
    }

    static func launch(_ runDir: String, workers: Int, steps: Int = steps, extra: [String] = []) async throws -> (Int32, String, String) {
        let child = try Child(["launch", "--workers", "\(workers)", "--steps", "\(steps)", "--run-dir", runDir, "--json"] + settings + extra)
        return await child.wait(seconds: 120)
    }

    static func metricsLines(_ runDir: String) -> Int {
        ((try? String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    /// Every completed epoch's ledger file holds each example exactly once; returns the files'
    /// contents by name.
    static func checkLedger(_ runDir: String, examples: Int = 1024, globalBatch: Int = 96, steps: Int = steps) throws -> [String: String] {
        let folder = runDir + "/ledger"
        let completedEpochs = steps * globalBatch / examples
        var files: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder) {
            files[name] = try String(contentsOfFile: folder + "/" + name, encoding: .utf8)
        }
        for epoch in 0 ..< completedEpochs {
            let text = try #require(files["epoch-\(epoch).jsonl"], "no ledger for epoch \(epoch)")
            var seen: [Int] = []
            var lastStep = 0
            for line in text.split(separator: "\n") {
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                let step = try #require(object["step"] as? Int)
                #expect(step > lastStep, "epoch \(epoch): step \(step) after \(lastStep)")
                lastStep = step
                #expect(object["epoch"] as? Int == epoch)
                seen += try #require(object["examples"] as? [Int])
            }
            #expect(seen.count == examples && Set(seen).count == examples && seen.allSatisfy { (0 ..< examples).contains($0) },
                    "epoch \(epoch): \(seen.count) entries, \(Set(seen).count) distinct examples of \(examples)")
        }
        return files
    }

    @Test func killedResumedAndRescaledRunsEndBitIdentical() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let one = dir.appendingPathComponent("one-worker").path
        let four = dir.appendingPathComponent("four-workers").path
        let killed = dir.appendingPathComponent("killed").path

        var (status, _, err) = try await Self.launch(one, workers: 1)
        #expect(status == 0, "1 worker: \(err)")
        (status, _, err) = try await Self.launch(four, workers: 4)
        #expect(status == 0, "4 workers: \(err)")

        // 3 workers, SIGKILL at a random step (the coordinator and workers die without a word),
        // then resume with 1.
        let target = Int.random(in: 10 ... 110)
        let child = try Child(["launch", "--workers", "3", "--steps", "\(Self.steps)", "--run-dir", killed] + Self.settings)
        let deadline = Date().addingTimeInterval(60)
        while Self.metricsLines(killed) < target, child.process.isRunning, Date() < deadline {
            try await Task.sleep(for: .milliseconds(2))
        }
        child.signal(SIGKILL)
        _ = await child.wait(seconds: 10)
        let linesAtKill = Self.metricsLines(killed)
        #expect(linesAtKill < Self.steps, "the run finished before it could be killed (target step \(target))")
        let resumedFrom = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: URL(fileURLWithPath: killed)).latestPath())).step
        let resume = try Child(["launch", "--workers", "1", "--steps", "\(Self.steps)", "--run-dir", killed, "--resume", "--json"] + Self.settings)
        let (resumeStatus, resumeOut, resumeErr) = await resume.wait(seconds: 120)
        #expect(resumeStatus == 0, "resume: \(resumeErr)")
        let summary = try Summary.parse(resumeOut)
        #expect(summary.steps == Self.steps && summary.startStep == resumedFrom,
                "killed at metrics line \(linesAtKill) (target \(target)), resumed from step \(resumedFrom)")

        let reference = try Self.state(one)
        #expect(reference.contains { $0.role == "pruning" } && reference.contains { $0.role == "optimizer/v" })
        #expect(try Self.state(four) == reference, "1 worker and 4 workers differ")
        #expect(try Self.state(killed) == reference, "the run killed at step \(linesAtKill) and resumed on 1 worker differs")

        // The ledger: each completed epoch applied every example exactly once, and the killed
        // run's ledger is the uninterrupted one's (the steps lost with the kill appear once).
        let ledgerOne = try Self.checkLedger(one)
        #expect(try Self.checkLedger(four) == ledgerOne)
        #expect(try Self.checkLedger(killed) == ledgerOne)
        // metrics.jsonl lost the steps after the checkpoint and got them again: one line per step.
        let steps = try String(contentsOfFile: killed + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int
        }
        #expect(steps == Array(1 ... Self.steps))
    }

    @Test func aDamagedLatestCheckpointFallsBackToThePreviousOne() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let reference = dir.appendingPathComponent("reference").path
        let damaged = dir.appendingPathComponent("damaged").path
        var (status, _, err) = try await Self.launch(reference, workers: 2, steps: 40)
        #expect(status == 0, "\(err)")
        (status, _, err) = try await Self.launch(damaged, workers: 2, steps: 28)
        #expect(status == 0, "\(err)")
        // Flip one byte inside the last checkpoint's model weights.
        let latest = try #require(CheckpointStore(runDirectory: URL(fileURLWithPath: damaged)).latestPath())
        #expect(latest.lastPathComponent == "step-28.ckpt")
        var bytes = [UInt8](try Data(contentsOf: latest))
        bytes[bytes.count / 3] ^= 0x20
        try Data(bytes).write(to: latest)
        let inspect = try Child(["checkpoint", "inspect", latest.path])
        let (inspectStatus, _, inspectErr) = await inspect.wait(seconds: 30)
        #expect(inspectStatus != 0 && inspectErr.contains("step-28.ckpt") && inspectErr.contains("checksum"), "\(inspectErr)")

        let resume = try Child(["launch", "--workers", "2", "--steps", "40", "--run-dir", damaged, "--resume", "--json"] + Self.settings)
        let (resumeStatus, out, resumeErr) = await resume.wait(seconds: 120)
        #expect(resumeStatus == 0, "\(resumeErr)")
        #expect(resumeErr.contains("step-28.ckpt") && resumeErr.contains("record") && resumeErr.contains("trying an older one"), "\(resumeErr)")
        #expect(try Summary.parse(out).startStep == 21)
        #expect(try Self.state(damaged) == Self.state(reference))
    }

    @Test func resumeRulesAndTheirMessages() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run").path
        // --resume with nothing to resume is an error; --resume auto starts fresh.
        var (status, _, err) = try await Self.launch(run, workers: 1, steps: 10, extra: ["--resume"])
        #expect(status != 0 && err.contains("no checkpoint") && err.contains("--resume auto"), "\(err)")
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 10, extra: ["--resume", "auto"])
        #expect(status == 0, "\(err)")
        // Starting over a folder with checkpoints is refused.
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 10)
        #expect(status != 0 && err.contains("already holds checkpoints") && err.contains("--resume"), "\(err)")
        // A setting that changes the maths is named, and refused unless explicitly allowed.
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 14, extra: ["--resume", "--set", "optimizer.learning_rate=0.5"])
        #expect(status != 0 && err.contains("optimizer.learning_rate: 0.5 now, 0.01 in the checkpoint") && err.contains("--allow-changed-settings"), "\(err)")
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 14, extra: ["--resume", "--set", "optimizer.learning_rate=0.5", "--allow-changed-settings"])
        #expect(status == 0, "\(err)")
        // The worker count, step total, deadlines and checkpoint interval are not part of it;
        // without --config the folder's config.yaml is used.
        let plain = try Child(["launch", "--workers", "3", "--steps", "20", "--run-dir", run, "--resume", "--json",
                               "--set", "coordinator.step_deadline_seconds=30", "--set", "checkpoint.every_steps=3"])
        let (plainStatus, out, plainErr) = await plain.wait(seconds: 60)
        #expect(plainStatus == 0, "\(plainErr)")
        #expect(try Summary.parse(out).startStep == 14)
        // A resume past the run's total is refused: --steps is the total.
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 5, extra: ["--resume"])
        #expect(status != 0 && err.contains("past this run's total"), "\(err)")
    }

    /// `--resume PATH` rolls back to an older checkpoint: the later ones are set aside (a later
    /// fallback must not pick them), and the run ends as an uninterrupted one does. `--config`
    /// while resuming is compared like any other source of settings.
    @Test func resumeFromAnOlderCheckpointFile() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run").path
        let reference = dir.appendingPathComponent("reference").path
        var (status, _, err) = try await Self.launch(reference, workers: 2, steps: 30)
        #expect(status == 0, "\(err)")
        (status, _, err) = try await Self.launch(run, workers: 2, steps: 28)
        #expect(status == 0, "\(err)")
        (status, _, err) = try await Self.launch(run, workers: 1, steps: 30, extra: ["--resume", run + "/checkpoints/step-14.ckpt"])
        #expect(status == 0, "\(err)")
        #expect(err.contains("moved checkpoints past step 14 aside"), "\(err)")
        let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints/abandoned").sorted()
        #expect(names == ["step-21.ckpt", "step-28.ckpt"])
        #expect(try Self.state(run) == Self.state(reference))
        // A configuration file whose maths differ is refused like --set.
        let file = dir.appendingPathComponent("other.yaml").path
        try "seed: 9\n".write(toFile: file, atomically: true, encoding: .utf8)
        let other = try Child(["launch", "--workers", "1", "--steps", "40", "--run-dir", run, "--resume", "--config", file] + Self.settings)
        let (otherStatus, _, otherErr) = await other.wait(seconds: 60)
        #expect(otherStatus != 0 && otherErr.contains("seed: 9 now, 1 in the checkpoint"), "\(otherErr)")
    }

    /// SIGKILL at random moments while checkpoints of a 1-million-parameter model are written
    /// every step: `latest` always names a complete, intact file.
    @Test func sigkillDuringCheckpointWritesNeverBreaksLatest() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let run = dir.appendingPathComponent("run").path
        let args = ["launch", "--workers", "1", "--steps", "100000", "--run-dir", run, "--resume", "auto",
                    "--set", "model.kind=loadtest", "--set", "model.parameters=1000000", "--set", "data.examples=64",
                    "--set", "coordinator.global_batch=8", "--set", "coordinator.micro_batches=2",
                    "--set", "optimizer.kind=sgd", "--set", "checkpoint.every_steps=1", "--set", "checkpoint.keep=2"]
        for round in 0 ..< 4 {
            let child = try Child(args)
            let latest = URL(fileURLWithPath: run + "/checkpoints/latest")
            let deadline = Date().addingTimeInterval(60)
            let before = (try? String(contentsOf: latest, encoding: .utf8)) ?? ""
            while ((try? String(contentsOf: latest, encoding: .utf8)) ?? "") == before, child.process.isRunning, Date() < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            try #require(((try? String(contentsOf: latest, encoding: .utf8)) ?? "") != before,
                         "round \(round + 1): no new checkpoint within 60 s: \(child.stderr)")
            try await Task.sleep(for: .milliseconds(Int.random(in: 0 ... 400)))
            try #require(child.process.isRunning, "round \(round + 1): the run ended before it was killed: \(child.stderr)")
            child.signal(SIGKILL)
            _ = await child.wait(seconds: 10)
            let inspect = try Child(["checkpoint", "inspect", run, "--json"])
            let (status, out, err) = await inspect.wait(seconds: 60)
            #expect(status == 0, "after kill \(round + 1): \(err)")
            #expect(out.contains("\"status\":\"ok\""), "\(out)")
        }
        // The next start cleans up what a kill mid-write left.
        let inspect = try Child(["checkpoint", "inspect", run, "--json"])
        let (_, out, _) = await inspect.wait(seconds: 60)
        let step = try #require((try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])?["step"] as? Int)
        let last = try Child(args.map { $0 == "100000" ? "\(step + 1)" : $0 })
        let (lastStatus, _, lastErr) = await last.wait(seconds: 60)
        #expect(lastStatus == 0, "\(lastErr)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "\(leftovers)")
    }
}
