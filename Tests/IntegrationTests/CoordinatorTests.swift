import Configuration
import Foundation
import Models
import Tasks
import Tensors
import Testing
import Transport
import Wire

/// A coordinator process, worker processes and hand-driven protocol clients, over
/// tcp://127.0.0.1 on an ephemeral port.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct CoordinatorTests {
    struct Run {
        let dir: URL
        let coordinator: Child
        let url: String
        var token: URL { dir.appendingPathComponent("token") }
    }

    func startCoordinator(_ extra: [String]) async throws -> Run {
        let dir = temporaryRunDir()
        let coordinator = try Child(["coordinator", "--listen", "tcp://127.0.0.1:0", "--run-dir", dir.path, "--json"] + extra)
        let url = try await waitForFile(dir.appendingPathComponent("endpoint"))
        #expect(url.hasPrefix("tcp://127.0.0.1:"))
        return Run(dir: dir, coordinator: coordinator, url: url)
    }

    func worker(_ run: Run, name: String) throws -> Child {
        try Child(["worker", "--connect", run.url, "--token-file", run.token.path, "--name", name, "--patience", "30"])
    }

    @Test func coordinatorAndTwoWorkerProcessesTrain() async throws {
        let run = try await startCoordinator(["--steps", "40", "--set", "coordinator.min_workers=2"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let workers = try [worker(run, name: "a"), worker(run, name: "b")]
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 120)
        #expect(status == 0, "coordinator: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 40)
        #expect(summary.workersSeen == 2)
        #expect(try #require(summary.finalLoss) < 0.5 * (try #require(summary.firstLoss)))
        for w in workers {
            let (ws, _, werr) = await w.wait(seconds: 30)
            #expect(ws == 0, "worker: \(werr)")
        }
        // A second coordinator on the same run folder is refused.
        let second = try Child(["coordinator", "--listen", "tcp://127.0.0.1:0", "--run-dir", run.dir.path])
        let (secondStatus, _, secondErr) = await second.wait(seconds: 30)
        #expect(secondStatus != 0 && secondErr.contains("already holds checkpoints"))
    }

    @Test func secondCoordinatorOnALiveRunIsRefusedByTheLock() async throws {
        let run = try await startCoordinator(["--steps", "5"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let second = try Child(["coordinator", "--listen", "tcp://127.0.0.1:0", "--run-dir", run.dir.path])
        let (status, _, stderr) = await second.wait(seconds: 30)
        #expect(status != 0)
        #expect(stderr.contains("in use by another coordinator"), "stderr: \(stderr)")
        let w = try worker(run, name: "w")
        #expect(await run.coordinator.wait(seconds: 60).status == 0)
        _ = await w.wait(seconds: 30)
    }

    @Test func badInputIsRefusedWithAReasonAndOthersAreStillServed() async throws {
        let run = try await startCoordinator(["--steps", "5", "--set", "transport.max_message_bytes=1048576",
                                              "--set", "coordinator.chunk_values=1024"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let client = try RawClient(url: run.url)

        // Not a protobuf at all.
        let garbage = try await client.send(bytes: [0xFF, 0xFF, 0xFF, 0x01, 0x02])
        #expect(garbage.refusal.code == .malformed)
        // Another protocol version.
        let version = try await client.send({ $0.hello = .with { $0.workerName = "x" } }, version: 99)
        #expect(version.refusal.code == .versionMismatch)
        #expect(version.header.protocolVersion == 1)
        // A proof made with the wrong token.
        let challenge = try await client.send { $0.hello = .with { $0.workerName = "x"; $0.clientNonce = Data(repeating: 1, count: 32) } }
        client.runID = challenge.header.runID
        let wrong = try await client.send { r in
            r.proof = .with {
                $0.workerName = "x"
                $0.clientNonce = Data(repeating: 1, count: 32)
                $0.serverNonce = challenge.challenge.serverNonce
                $0.mac = Data(repeating: 0, count: 32)
            }
        }
        #expect(wrong.refusal.code == .badProof)
        #expect(wrong.refusal.reason.contains("token"))
        // A proof for another run.
        let otherRun = try await client.send { r in
            r.header.runID = "some-other-run"
            r.proof = .with { $0.workerName = "x"; $0.serverNonce = challenge.challenge.serverNonce }
        }
        #expect(otherRun.refusal.code == .wrongRun)
        // Work without a session.
        let noSession = try await client.send { $0.work = .init() }
        #expect(noSession.refusal.code == .unknownSession)
        // An oversize frame: nng drops it and the connection; the coordinator carries on.
        let big = try RawClient(url: run.url)
        try? await big.context.send(Message([UInt8](repeating: 0, count: 2 << 20)), timeout: .seconds(2))
        await big.close()

        // Join for real, then send chunks that break the protocol.
        let token = try String(contentsOf: run.token, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let member = try await join(run.url, token: token)
        let task = try await member.send { $0.work = .with { $0.weightsVersion = 0 } }
        #expect(task.task.exampleIndices.count > 0)
        member.step = task.header.step
        // Asking again (a re-sent request whose reply was lost) returns the micro-batch to the
        // pool first: the same one comes back instead of a second being stranded.
        let again = try await member.send { $0.work = .with { $0.weightsVersion = task.task.weightsVersion } }
        #expect(again.task.microBatch == task.task.microBatch)
        #expect(!again.task.hasWeights)
        let hugeStep = try await member.send { r in
            r.header.step = .max
            r.chunk = .with { $0.microBatch = task.task.microBatch }
        }
        #expect(hugeStep.refusal.code == .malformed)
        let notFinite = try await member.send { r in
            r.chunk = .with {
                $0.microBatch = task.task.microBatch; $0.tensor = 0; $0.chunkIndex = 0; $0.chunkCount = 2
                $0.exampleCount = UInt32(task.task.exampleIndices.count); $0.weightsVersion = task.task.weightsVersion
                $0.values = Data(FloatEncoding.denseBytes([Float](repeating: .nan, count: 1024)))
            }
        }
        #expect(notFinite.refusal.code == .malformed && notFinite.refusal.reason.contains("not finite"))
        // A truncated request (a valid one, cut short).
        var whole = Csptrain_V1_Request()
        whole.header.protocolVersion = 1
        whole.header.runID = member.runID
        whole.header.session = member.session
        whole.work = .with { $0.weightsVersion = 12345 }
        let bytes: [UInt8] = try whole.serializedBytes()
        let truncated = try await member.send(bytes: Array(bytes.dropLast(2)))
        #expect(truncated.refusal.code == .malformed)
        let futureStep = try await member.send { r in
            r.header.step = 99
            r.chunk = .with { $0.microBatch = task.task.microBatch; $0.chunkCount = 3; $0.weightsVersion = task.task.weightsVersion }
        }
        #expect(futureStep.refusal.code == .malformed && futureStep.refusal.reason.contains("step 99"))
        let badCount = try await member.send { r in
            r.chunk = .with {
                $0.microBatch = task.task.microBatch; $0.tensor = 0; $0.chunkIndex = 0; $0.chunkCount = 77
                $0.exampleCount = UInt32(task.task.exampleIndices.count); $0.weightsVersion = task.task.weightsVersion
                $0.values = Data(count: 4096)
            }
        }
        #expect(badCount.refusal.code == .malformed && badCount.refusal.reason.contains("chunks"))
        let unknownMicroBatch = try await member.send { r in
            r.chunk = .with { $0.microBatch = 1000; $0.weightsVersion = task.task.weightsVersion; $0.values = Data(count: 4) }
        }
        #expect(unknownMicroBatch.refusal.reason.contains("micro-batch 1000"))
        await member.close()
        await client.close()

        // A real worker still completes the run.
        let w = try worker(run, name: "good")
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr)")
        #expect(try Summary.parse(stdout).status == "completed")
        #expect(stderr.contains("proof does not verify"))
        #expect(await w.wait(seconds: 30).status == 0)
    }

    /// A worker that dies half-way through sending its micro-batch: the micro-batch goes to
    /// another worker, the chunks that had arrived are not counted again, and the result equals
    /// a run without the failure.
    @Test func workerDyingMidSendIsReassignedAndCountedOnce() async throws {
        let settings = ["--steps", "6", "--seed", "5", "--set", "coordinator.chunk_values=256", "--set", "optimizer.kind=sgd",
                        "--set", "optimizer.learning_rate=0.1", "--set", "checkpoint.every_steps=0"]
        let run = try await startCoordinator(settings)
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let token = try String(contentsOf: run.token, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let (member, config) = try await joinWithConfig(run.url, token: token)
        let reply = try await member.send { $0.work = .with { $0.weightsVersion = 0 } }
        let task = reply.task
        member.step = reply.header.step
        // Compute the true gradient of the micro-batch, as a worker would.
        let model = try ModelFactory.make(model: config.model, data: config.data, seed: config.seed)
        var weights = [Float](repeating: 0, count: model.layout.totalCount)
        weights.withUnsafeMutableBufferPointer { w in
            for t in task.weights.tensors {
                let spec = model.layout.tensors[Int(t.tensor)]
                _ = t.values.withUnsafeBytes { FloatEncoding.decodeDense($0, into: UnsafeMutableBufferPointer(rebasing: w[spec.range])) }
            }
        }
        var gradient = [Float](repeating: 0, count: weights.count)
        let loss = try weights.withUnsafeBufferPointer { p in
            try gradient.withUnsafeMutableBufferPointer { try model.lossAndGradient(parameters: p, examples: task.exampleIndices.map { Int($0) }, epoch: 0, gradient: $0) }
        }
        // Send the chunks of the first tensor only (w1: 64×32 = 2048 values = 8 chunks), then vanish.
        let w1 = model.layout.tensors[0]
        let chunks = w1.count / 256
        for c in 0 ..< chunks {
            let ack = try await member.send { r in
                r.chunk = .with {
                    $0.microBatch = task.microBatch; $0.tensor = 0; $0.chunkIndex = UInt32(c); $0.chunkCount = UInt32(chunks)
                    $0.exampleCount = UInt32(task.exampleIndices.count); $0.lossSum = loss; $0.weightsVersion = task.weightsVersion
                    $0.values = Data(FloatEncoding.denseBytes(Array(gradient[w1.offset + c * 256 ..< w1.offset + (c + 1) * 256])))
                }
            }
            #expect(ack.ack.status == .accepted)
        }
        await member.close()

        let w = try worker(run, name: "survivor")
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed")
        #expect(summary.duplicateChunks == chunks)
        #expect(summary.reassignedMicroBatches >= 1)
        #expect(summary.workersFailed == 1)
        _ = await w.wait(seconds: 30)

        // The same run without the failure ends at the same weights (up to summation order).
        let reference = try await startCoordinator(settings)
        defer { try? FileManager.default.removeItem(at: reference.dir) }
        let rw = try worker(reference, name: "reference")
        #expect(await reference.coordinator.wait(seconds: 90).status == 0)
        _ = await rw.wait(seconds: 30)
        let a = try finalWeights(run.dir), b = try finalWeights(reference.dir)
        let maxDiff = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
        #expect(maxDiff < 1e-5, "largest weight difference \(maxDiff)")
    }

    @Test func workerThatMissesTheDeadlineIsDroppedAndItsWorkReassigned() async throws {
        let run = try await startCoordinator(["--steps", "3", "--set", "coordinator.step_deadline_seconds=1"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let token = try String(contentsOf: run.token, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let silent = try await join(run.url, token: token)
        let task = try await silent.send { $0.work = .with { $0.weightsVersion = 0 } }
        #expect(task.task.deadlineMs == 1000)
        try await Task.sleep(for: .milliseconds(1500))
        // Dropped: its session is no longer known.
        let late = try await silent.send { $0.work = .init() }
        #expect(late.refusal.code == .unknownSession)
        await silent.close()
        let w = try worker(run, name: "w")
        let (status, stdout, _) = await run.coordinator.wait(seconds: 60)
        #expect(status == 0)
        let summary = try Summary.parse(stdout)
        #expect(summary.workersFailed >= 1 && summary.reassignedMicroBatches >= 1)
        _ = await w.wait(seconds: 30)
    }

    @Test func workerStartedBeforeTheCoordinatorConnectsWhenItAppears() async throws {
        let port = try freePort()
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tokenFile = dir.appendingPathComponent("shared-token")
        try "early-bird-token\n".write(to: tokenFile, atomically: true, encoding: .utf8)
        let w = try Child(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--token-file", tokenFile.path, "--patience", "30"])
        try await Task.sleep(for: .seconds(1))
        let runDir = dir.appendingPathComponent("run")
        let coordinator = try Child(["coordinator", "--listen", "tcp://127.0.0.1:\(port)", "--run-dir", runDir.path,
                                     "--token-file", tokenFile.path, "--steps", "5", "--json"])
        let (status, stdout, stderr) = await coordinator.wait(seconds: 60)
        #expect(status == 0, "coordinator: \(stderr)")
        #expect(try Summary.parse(stdout).workersSeen == 1)
        #expect(await w.wait(seconds: 30).status == 0)
    }

    @Test func workerRejoinsWhenTheCoordinatorRestarts() async throws {
        let port = try freePort()
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tokenFile = dir.appendingPathComponent("shared-token")
        try "restart-token\n".write(to: tokenFile, atomically: true, encoding: .utf8)
        let url = "tcp://127.0.0.1:\(port)"
        let first = try Child(["coordinator", "--listen", url, "--run-dir", dir.appendingPathComponent("a").path,
                               "--token-file", tokenFile.path, "--steps", "1000000"])
        let w = try Child(["worker", "--connect", url, "--token-file", tokenFile.path, "--patience", "60"])
        _ = try await waitForFile(dir.appendingPathComponent("a/metrics.jsonl"), seconds: 60)
        first.signal(SIGKILL)
        _ = await first.wait(seconds: 10)
        let second = try Child(["coordinator", "--listen", url, "--run-dir", dir.appendingPathComponent("b").path,
                                "--token-file", tokenFile.path, "--steps", "5", "--json"])
        let (status, stdout, stderr) = await second.wait(seconds: 90)
        #expect(status == 0, "second coordinator: \(stderr)\nworker so far: \(w.stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.workersSeen == 1)
        let (workerStatus, _, workerLog) = await w.wait(seconds: 30)
        #expect(workerStatus == 0, "worker: \(workerLog)")
        #expect(workerLog.contains("joining again"))
    }

    func freePort() throws -> Int {
        let probe = try Socket(.rep)
        defer { probe.close() }
        return try #require(try probe.listen("tcp://127.0.0.1:0", maxMessageSize: 1024).boundPort)
    }

    /// Deterministic runs: the run's compute signature is fixed before anyone joins (the
    /// coordinator's own here, logged at start), so a stranger joining first with another one is
    /// refused with what to change, and csptrain's own worker then trains to the end.
    @Test func deterministicRunsRefuseAFirstJoiningWorkerThatComputesDifferently() async throws {
        let run = try await startCoordinator(["--steps", "30", "--set", "deterministic=true"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let deadline = Date().addingTimeInterval(30)
        while !run.coordinator.stderr.contains("deterministic run: every worker must compute with"), Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(run.coordinator.stderr.contains("deterministic run: every worker must compute with openblas"))
        let token = try String(contentsOf: run.token, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let (client, reply) = try await handshake(run.url, token: token, signature: "openblas Prescott, kernels generic")
        await client.close()
        #expect(reply.refusal.code == .incompatible, "\(reply)")
        let reason = reply.refusal.reason
        #expect(reason.contains("openblas Prescott, kernels generic") && reason.contains("the run needs openblas"), "\(reason)")
        #expect(reason.contains("OPENBLAS_CORETYPE=") && reason.contains("compute_signature"), "\(reason)")
        let w = try worker(run, name: "ours")
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr)")
        #expect(try Summary.parse(stdout).status == "completed")
        #expect(await w.wait(seconds: 30).status == 0)
        // The checkpoint shows the signature the run was computed with.
        let inspect = try Child(["checkpoint", "inspect", run.dir.path])
        let (inspectStatus, inspectOut, _) = await inspect.wait(seconds: 30)
        #expect(inspectStatus == 0 && inspectOut.contains("compute signature openblas"), "\(inspectOut)")
    }

    // MARK: Helpers

    func join(_ url: String, token: String) async throws -> RawClient {
        try await joinWithConfig(url, token: token).0
    }

    /// The join handshake by hand, as Proto/README.md describes it.
    func joinWithConfig(_ url: String, token: String) async throws -> (RawClient, RunConfiguration) {
        let (client, welcome) = try await handshake(url, token: token)
        guard case .welcome? = welcome.body else { throw TestFailure("join refused: \(welcome.refusal.reason)") }
        client.session = welcome.header.session
        return (client, try RunConfiguration.parse(yaml: welcome.welcome.configYaml, source: "welcome"))
    }

    /// Hello, then Proof; returns the client and the coordinator's answer to the proof.
    func handshake(_ url: String, token: String, signature: String = "") async throws -> (RawClient, Csptrain_V1_Reply) {
        let client = try RawClient(url: url)
        let nonce = Data((0 ..< 32).map { _ in UInt8.random(in: 0 ... 255) })
        let challenge = try await client.send { $0.hello = .with { $0.workerName = "raw"; $0.clientNonce = nonce } }
        client.runID = challenge.header.runID
        let reply = try await client.send { r in
            r.proof = .with {
                $0.workerName = "raw"
                $0.clientNonce = nonce
                $0.serverNonce = challenge.challenge.serverNonce
                $0.mac = hmac(token: token, parts: [Data("csptrain.v1/join".utf8), Data([0]), Data(client.runID.utf8), Data([0]),
                                                    challenge.challenge.serverNonce, nonce, Data("raw".utf8)])
                $0.computeSignature = signature
            }
        }
        return (client, reply)
    }

    func finalWeights(_ dir: URL) throws -> [Float] {
        let checkpoint = try CheckpointStore.load(try #require(CheckpointStore(runDirectory: dir).latestPath()))
        return checkpoint.records.filter { $0.role == "param" }.flatMap(\.values)
    }
}

import Checkpoints
import Crypto

func hmac(token: String, parts: [Data]) -> Data {
    var message = Data()
    for p in parts { message.append(p) }
    return Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(token.utf8))))
}
