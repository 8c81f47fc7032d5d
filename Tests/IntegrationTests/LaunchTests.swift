import Checkpoints
import Foundation
import Testing

/// Real processes over real sockets on 127.0.0.1.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct LaunchTests {
    @Test func launchWithTwoWorkersTrainsAndWritesTheRunFolder() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "30", "--run-dir", dir.path, "--json"])
        let (status, stdout, stderr) = await child.wait(seconds: 120)
        #expect(status == 0, "launch failed: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed")
        #expect(summary.steps == 30 && summary.startStep == 0)
        #expect(summary.workersSeen == 2)
        #expect(summary.workersFailed == 0)
        #expect((summary.streamChunks ?? 0) > 0, "no chunk came on the chunk stream: \(stdout)")
        let first = try #require(summary.firstLoss), final = try #require(summary.finalLoss)
        #expect(final < 0.5 * first, "loss \(first) → \(final)")
        // The run folder.
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        #expect(files.isSuperset(of: ["config.yaml", "metrics.jsonl", "summary.json", "token", "checkpoints", "logs"]))
        let metrics = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(metrics.count == 30)
        let onDisk = try Summary.parse(String(contentsOf: dir.appendingPathComponent("summary.json"), encoding: .utf8))
        #expect(onDisk.finalLoss == summary.finalLoss)
        let tokenMode = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("token").path)[.posixPermissions] as? Int
        #expect(tokenMode == 0o600)
        // The checkpoint named by `latest` is the final one, complete and self-contained.
        let store = CheckpointStore(runDirectory: dir)
        let latest = try #require(store.latestPath())
        #expect(latest.path == summary.checkpoint)
        let checkpoint = try CheckpointStore.load(latest)
        #expect(checkpoint.step == 30)
        #expect(checkpoint.configYAML.contains("hidden_dim"))
        #expect(checkpoint.records.contains { $0.name == "w1" && $0.role == "param" })
    }

    /// A worker asks for its next micro-batch as soon as the coordinator holds a chunk of its
    /// last one, and computes it while the rest of those chunks travel (with one gradient buffer,
    /// once they are in): with 16 chunks per micro-batch, work requests arrive while a
    /// micro-batch is still arriving.
    /// Also with chunks sent as requests (`transport.chunk_stream: false`): both paths overlap.
    @Test(arguments: [(2, true), (1, true), (2, false)])
    func workersAskForTheNextMicroBatchWhileTheLastIsStillArriving(buffers: Int, stream: Bool) async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "20", "--run-dir", dir.path, "--json",
                               "--set", "model.kind=loadtest", "--set", "model.parameters=262144", "--set", "optimizer.kind=sgd",
                               "--set", "coordinator.chunk_values=16384", "--set", "coordinator.global_batch=16",
                               "--set", "coordinator.micro_batches=4", "--set", "data.examples=256",
                               "--set", "transport.gradient_buffers=\(buffers)", "--set", "transport.chunk_stream=\(stream)"])
        let (status, stdout, stderr) = await child.wait(seconds: 120)
        #expect(status == 0, "launch failed: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 20)
        #expect(summary.duplicateChunks == 0 && summary.reassignedMicroBatches == 0, "\(stdout)")
        let overlapped = try #require(summary.overlappedWorkRequests)
        #expect(overlapped > 0, "no work request came beside a send: \(stdout)")
        // 80 micro-batches of 16 chunks each (262,144 values in chunks of 16,384), at least.
        let onStream = summary.streamChunks ?? 0
        #expect(stream ? onStream >= 80 * 16 : onStream == 0, "\(onStream) chunks came on the chunk stream: \(stdout)")
        // Each step's 1 MiB model goes to each worker on its stream (some steps a worker does not ask).
        let weightsOnStream = summary.streamWeights ?? 0
        #expect(stream ? weightsOnStream >= 20 : weightsOnStream == 0, "\(weightsOnStream) models went on chunk streams: \(stdout)")
        print("LaunchTests: \(overlapped) work requests came beside a send (80 micro-batches in all, \(buffers) gradient buffer(s), \(onStream) chunks on the stream)")
    }

    /// bfloat16 gradient chunks (half the upload) train the MLP as float32 ones do, and a
    /// deterministic run with them gives the same bits on 1 and 3 workers.
    @Test func bfloat16GradientsTrainAndStayDeterministic() async throws {
        var finals: [Double] = []
        for workers in [1, 3] {
            let dir = temporaryRunDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let child = try Child(["launch", "--workers", "\(workers)", "--steps", "30", "--run-dir", dir.path, "--json",
                                   "--set", "coordinator.gradient_values=bf16", "--set", "deterministic=true"])
            let (status, stdout, stderr) = await child.wait(seconds: 120)
            #expect(status == 0, "launch failed: \(stderr)")
            let summary = try Summary.parse(stdout)
            let first = try #require(summary.firstLoss), final = try #require(summary.finalLoss)
            #expect(summary.status == "completed" && final < 0.5 * first, "loss \(first) → \(final)")
            finals.append(final)
        }
        #expect(finals[0].bitPattern == finals[1].bitPattern, "\(finals)")
    }

    /// The coordinator stops for 3 s mid-run (SIGSTOP: as under a long projection step) while
    /// workers' REQ sockets re-send (after 1.2 s: the worker raises re-send and timeout to at
    /// least poll_hold + 1 s). With 2.5 s request timeouts the re-sends are answered from memory,
    /// the workers ask again with their sessions and nobody is dropped; with 1 s asked (1.2 s
    /// used: two pass in the stall) the workers give their connections up for fresh ones and join
    /// again. Either way the weights are those of a run without the pause.
    @Test func reqReSendsDuringAStalledCoordinatorChangeNothing() async throws {
        var weights: [[UInt32]] = []
        for (stall, timeout) in [(false, "2.5"), (true, "2.5"), (true, "1")] {
            let dir = temporaryRunDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let child = try Child(["launch", "--workers", "3", "--steps", "400", "--run-dir", dir.path, "--json",
                                   "--set", "deterministic=true", "--set", "checkpoint.every_steps=0",
                                   "--set", "coordinator.poll_hold_seconds=0.2", "--set", "transport.resend_seconds=0.5",
                                   "--set", "transport.request_timeout_seconds=\(timeout)"])
            if stall {
                let metrics = dir.appendingPathComponent("metrics.jsonl")
                let deadline = Date().addingTimeInterval(60)
                while Date() < deadline, ((try? String(contentsOf: metrics, encoding: .utf8))?.count { $0 == "\n" } ?? 0) < 20 {
                    try await Task.sleep(for: .milliseconds(20))
                }
                child.signal(SIGSTOP)
                try await Task.sleep(for: .seconds(3))
                child.signal(SIGCONT)
            }
            let (status, stdout, stderr) = await child.wait(seconds: 150)
            #expect(status == 0, "launch failed: \(stderr)")
            let summary = try Summary.parse(stdout)
            #expect(summary.status == "completed", "stalled \(stall), timeout \(timeout) s: \(stdout)")
            if stall {
                let log = try String(contentsOf: dir.appendingPathComponent("logs/worker-0.log"), encoding: .utf8)
                #expect(log.contains("asking again with the same session"), "worker 0 did not time out across the stall")
                if timeout == "1" {
                    #expect(log.contains("dialed a fresh connection"), "worker 0 kept its connection through two timeouts")
                    print("LaunchTests: across a 3 s stall with 1 s request timeouts: \(summary.workersFailed) sessions given up, reassigned \(summary.reassignedMicroBatches)")
                } else {
                    // A task whose request timed out goes to whoever asks next (reassigned), not
                    // to a worker that was dropped.
                    #expect(summary.workersFailed == 0 && !log.contains("dialed a fresh connection"), "stalled, timeout \(timeout) s: \(stdout)")
                    #expect((summary.resentRequests ?? 0) > 0, "no re-sends across a 3 s stall: \(stdout)")
                    print("LaunchTests: \(summary.resentRequests ?? 0) re-sent requests answered from memory across a 3 s stall, reassigned \(summary.reassignedMicroBatches)")
                }
            }
            weights.append(try finalParameterBits(dir))
        }
        #expect(!weights[0].isEmpty && weights[0] == weights[1] && weights[0] == weights[2])
    }

    /// The inputs' second moments (or their sketches) are summed exactly in deterministic mode:
    /// csp with `operator: activations` or `activation-sketch` gives the same weights, bit for
    /// bit, on 1 and 3 workers (a micro-batch's sketch does not depend on the worker).
    @Test(arguments: ["activations", "activation-sketch"])
    func activationsOperatorStaysDeterministicAcrossWorkerCounts(measuredBy: String) async throws {
        var weights: [[UInt32]] = []
        for workers in [1, 3] {
            let dir = temporaryRunDir()
            defer { try? FileManager.default.removeItem(at: dir) }
            let child = try Child(["launch", "--workers", "\(workers)", "--steps", "16", "--run-dir", dir.path, "--json",
                                   "--set", "deterministic=true", "--set", "pruning.method=csp", "--set", "pruning.operator=\(measuredBy)",
                                   "--set", "pruning.schedule.target=0.7", "--set", "pruning.schedule.end_step=12",
                                   "--set", "pruning.schedule.interval=4"])
            let (status, stdout, stderr) = await child.wait(seconds: 120)
            #expect(status == 0, "launch failed: \(stderr)")
            let summary = try Summary.parse(stdout)
            #expect(summary.status == "completed" && abs(summary.sparsity - 0.7) <= 0.005, "sparsity \(summary.sparsity)")
            weights.append(try finalParameterBits(dir))
        }
        #expect(!weights[0].isEmpty && weights[0] == weights[1])
    }

    /// `csp:activations`: csp with `pruning.operator: activations` (workers send the inputs'
    /// second moments with their gradients).
    @Test(arguments: ["csp", "csp:activations", "csp:activation-sketch", "admm-magnitude", "gradual-magnitude", "one-shot-magnitude", "taylor", "structured",
                      "low-rank", "wanda", "one-shot-reconstruction"])
    func prunedLaunchReachesItsTarget(variant: String) async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let parts = variant.split(separator: ":").map(String.init)
        let method = parts[0]
        let oneShot = method.hasPrefix("one-shot")
        var arguments = ["launch", "--workers", "2", "--steps", "30", "--run-dir", dir.path, "--json",
                         "--set", "pruning.method=\(method)", "--set", "pruning.schedule.target=0.8",
                         "--set", "pruning.schedule.end_step=20", "--set", "pruning.schedule.interval=5",
                         "--set", "pruning.block=64", "--set", "pruning.schedule.start_step=\(oneShot ? 10 : 0)"]
        if parts.count > 1 { arguments += ["--set", "pruning.operator=\(parts[1])"] }
        let readsInputs = parts.count > 1 || method == "wanda" || method == "one-shot-reconstruction"
        let child = try Child(arguments)
        let (status, stdout, stderr) = await child.wait(seconds: 120)
        #expect(status == 0, "launch failed: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed")
        let target = method == "structured" ? 0.5 : 0.8  // 2:4
        if method != "low-rank" {
            #expect(abs(summary.sparsity - target) <= 0.005, "\(method): sparsity \(summary.sparsity)")
        }
        #expect(summary.finalLoss.map(\.isFinite) == true)
        // Every support change is on record, per pruned layer.
        let lines = try String(contentsOf: dir.appendingPathComponent("pruning.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == (oneShot ? 1 : 5))
        let last = try #require(try JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as? [String: Any])
        #expect(abs((last["sparsity"] as? Double ?? -1) - target) < 1e-9)
        let layers = try #require(last["layers"] as? [[String: Any]])
        #expect(layers.map { $0["name"] as? String } == ["w1", "w2"])
        if variant == "csp" { #expect(layers.allSatisfy { $0["overlap_with_top_k"] != nil && $0["recovery_error"] != nil }) }
        if readsInputs && method != "wanda" {
            // The output error the new weights leave, relative to removing the layer: in [0, 1).
            #expect(layers.allSatisfy { (($0["output_error"] as? Double) ?? -1) >= 0 && (($0["output_error"] as? Double) ?? 1) < 1 }, "\(layers)")
        }
        if method == "low-rank" {
            // Exact by construction: the stored parameters of the factors, r·(m + n) per matrix.
            let stored = layers.compactMap { $0["parameters"] as? Int }.reduce(0, +)
            let ranks = layers.compactMap { $0["rank"] as? Int }
            #expect(ranks.count == 2 && ranks.allSatisfy { $0 >= 1 })
            let total = try layerSizes(dir)
            #expect(abs(summary.sparsity - (1 - Double(stored) / Double(total))) < 1e-9, "low-rank: sparsity \(summary.sparsity)")
            #expect(summary.sparsity >= target - 0.1, "low-rank: sparsity \(summary.sparsity)")
        }
    }

    /// Values in the MLP's prunable tensors (w1, w2), from the run's final checkpoint.
    func layerSizes(_ dir: URL) throws -> Int {
        let checkpoint = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: dir).latestPath()))
        return checkpoint.records.filter { $0.role == "param" && ($0.name == "w1" || $0.name == "w2") }.reduce(0) { $0 + $1.values.count }
    }

    @Test func halfPrecisionSparseBroadcastsTrainAndAreWhatTheCheckpointHolds() async throws {
        // Gradual pruning with f16 values: between mask updates the workers get values only
        // (decoded into their copy of the previous version); a worker that decoded a broadcast
        // wrongly would leave the run with a protocol violation.
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "24", "--run-dir", dir.path, "--json",
                               "--set", "pruning.method=gradual-magnitude", "--set", "pruning.schedule.target=0.7",
                               "--set", "pruning.schedule.end_step=12", "--set", "pruning.schedule.interval=4",
                               "--set", "coordinator.broadcast_values=f16"])
        let (status, stdout, stderr) = await child.wait(seconds: 120)
        #expect(status == 0, "launch failed: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.workersFailed == 0)
        #expect(abs(summary.sparsity - 0.7) <= 0.005)
        let checkpoint = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: dir).latestPath()))
        let model = checkpoint.records.filter { $0.role == "param" }.flatMap(\.values)
        #expect(!model.isEmpty && model.allSatisfy { Float(Float16($0)) == $0 }, "the model is not in binary16")
        // The master weights stay float32.
        let master = checkpoint.records.filter { $0.role == "master" }.flatMap(\.values)
        #expect(master.contains { Float(Float16($0)) != $0 })
    }

    @Test func initFromStartsWhereAnotherRunEnded() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = dir.appendingPathComponent("first").path, second = dir.appendingPathComponent("second").path
        let a = try Child(["launch", "--workers", "1", "--steps", "30", "--run-dir", first, "--json"])
        let (aStatus, aOut, aErr) = await a.wait(seconds: 120)
        #expect(aStatus == 0, "first: \(aErr)")
        let trained = try Summary.parse(aOut)
        let b = try Child(["launch", "--workers", "1", "--steps", "2", "--run-dir", second, "--json", "--set", "init_from=\(first)"])
        let (bStatus, bOut, bErr) = await b.wait(seconds: 120)
        #expect(bStatus == 0, "second: \(bErr)")
        // A fresh model starts near ln 8 ≈ 2.1; this one starts where the first run ended.
        let firstLoss = try #require(try Summary.parse(bOut).firstLoss), trainedLoss = try #require(trained.finalLoss)
        #expect(firstLoss < 3 * trainedLoss + 0.2, "started at loss \(firstLoss); the first run ended at \(trainedLoss)")
        let bad = try Child(["launch", "--workers", "1", "--steps", "2", "--run-dir", dir.appendingPathComponent("third").path,
                             "--set", "init_from=\(first)", "--set", "model.hidden_dim=16"])
        let (badStatus, _, badErr) = await bad.wait(seconds: 60)
        #expect(badStatus != 0 && badErr.contains("init_from") && badErr.contains("w1"), "stderr: \(badErr)")
    }

    @Test func launchOverIPC() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socketPath = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-\(UInt32.random(in: 0 ... .max)).sock").path
        let child = try Child(["launch", "--workers", "2", "--steps", "5", "--run-dir", dir.path, "--listen", "ipc://\(socketPath)", "--json"])
        let (status, stdout, stderr) = await child.wait(seconds: 60)
        #expect(status == 0, "launch: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.workersSeen == 2)
        // No chunk stream beside an ipc:// socket: the chunks came as requests.
        #expect(summary.streamChunks == 0, "\(stdout)")
        #expect(try await waitForFile(dir.appendingPathComponent("endpoint")) == "ipc://\(socketPath)")
    }

    @Test func configDumpPrintsOneJSONObjectAndBadKeysAreNamed() async throws {
        let dump = try Child(["config", "dump", "--json", "--set", "optimizer.kind=sgd", "--steps", "7"])
        let (status, stdout, _) = await dump.wait(seconds: 30)
        #expect(status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any]
        #expect(object?["steps"] as? Int == 7)
        #expect((object?["optimizer"] as? [String: Any])?["kind"] as? String == "sgd")

        let bad = try Child(["config", "dump", "--json", "--set", "optimizer.lr=0.1"])
        let (badStatus, badOut, stderr) = await bad.wait(seconds: 30)
        #expect(badStatus != 0)
        #expect(stderr.contains("optimizer.lr") && stderr.contains("learning_rate"), "message was: \(stderr)")
        let failure = try JSONSerialization.jsonObject(with: Data(badOut.utf8)) as? [String: Any]
        #expect(failure?["status"] as? String == "failed")
    }

    @Test func ctrlCStopsCleanlyWithACheckpoint() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "1000000", "--run-dir", dir.path, "--json"])
        // Wait until training is under way.
        let metrics = dir.appendingPathComponent("metrics.jsonl")
        _ = try await waitForFile(metrics, seconds: 60)
        child.signal(SIGINT)
        let (status, stdout, stderr) = await child.wait(seconds: 60)
        #expect(status == 130, "stderr: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "interrupted")
        #expect(summary.steps > 0)
        let checkpoint = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: dir).latestPath()))
        #expect(checkpoint.step == summary.steps)
        // The workers went with it.
        let logs = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("logs").path)
        #expect(logs.count == 2)
    }

    @Test func workersDieWithAKilledLauncher() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "1000000", "--run-dir", dir.path])
        _ = try await waitForFile(dir.appendingPathComponent("metrics.jsonl"), seconds: 60)
        let endpoint = try await waitForFile(dir.appendingPathComponent("endpoint"))
        #expect(processes(mentioning: endpoint).count == 2)
        child.signal(SIGKILL)
        _ = await child.wait(seconds: 10)
        let deadline = Date().addingTimeInterval(10)
        while !processes(mentioning: endpoint).isEmpty, Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        #expect(processes(mentioning: endpoint).isEmpty, "workers outlived their launcher")
    }

    /// Pids whose command line contains `text`.
    func processes(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> Int32? in
            guard let pid = Int32(entry),
                  let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
            let cmdline = String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return cmdline.contains(text) && cmdline.contains("worker") ? pid : nil
        }
    }

    @Test func aRunFolderWithCheckpointsIsNotOverwritten() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let first = try Child(["launch", "--workers", "1", "--steps", "3", "--run-dir", dir.path])
        #expect(await first.wait(seconds: 60).status == 0)
        let second = try Child(["launch", "--workers", "1", "--steps", "3", "--run-dir", dir.path])
        let (status, _, stderr) = await second.wait(seconds: 60)
        #expect(status != 0)
        #expect(stderr.contains("already holds checkpoints"), "stderr: \(stderr)")
    }
}

/// The bits of every parameter in the run folder's newest checkpoint, in record order.
func finalParameterBits(_ dir: URL) throws -> [UInt32] {
    let checkpoint = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: dir).latestPath()))
    return checkpoint.records.filter { $0.role == "param" }.flatMap { $0.values.map(\.bitPattern) }
}
