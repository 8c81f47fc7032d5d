import Foundation
import Testing
import Transport
import Wire

/// A member that misbehaves on purpose against a real `csptrain coordinator` (issue 11): a flood
/// of work requests, a request over the size limit, a chunk for a micro-batch it does not hold.
/// A real worker finishes the run each time.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct FloodTests {
    let cap = 8  // coordinator.max_requests_in_flight's default
    let floodSize = 200

    /// A joined raw member and what its welcome said.
    struct Member {
        let client: RawClient
        let welcome: Csptrain_V1_Welcome
    }

    func joinRaw(_ run: CoordinatorTests.Run) async throws -> Member {
        let token = try String(contentsOf: run.token, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let (client, reply) = try await CoordinatorTests().handshake(run.url, token: token)
        guard case .welcome? = reply.body else { throw TestFailure("join refused: \(reply.refusal.reason)") }
        client.session = reply.header.session
        return Member(client: client, welcome: reply.welcome)
    }

    /// One chunk of tensor 0 (all zeros) for `microBatch`, well formed in every other respect.
    func chunk(_ m: Member, microBatch: UInt32, examples: Int, version: UInt64, valueBytes: Int? = nil) async throws -> Csptrain_V1_Reply {
        let t0 = m.welcome.tensors[0]
        let values = min(Int(t0.count), Int(m.welcome.chunkValues))
        return try await m.client.send { r in
            r.chunk = .with {
                $0.microBatch = microBatch; $0.tensor = 0; $0.chunkIndex = 0
                $0.chunkCount = UInt32((Int(t0.count) + Int(m.welcome.chunkValues) - 1) / Int(m.welcome.chunkValues))
                $0.exampleCount = UInt32(examples); $0.weightsVersion = version
                $0.values = Data(count: valueBytes ?? values * 4)
            }
        }
    }

    /// `count` work requests (weights_version 0: each task would carry the whole model) sent at
    /// once on as many REQ contexts of the member's socket; their replies.
    func flood(_ m: Member, count: Int) async throws -> [Csptrain_V1_Reply] {
        var request = Csptrain_V1_Request()
        request.header.protocolVersion = 1
        request.header.runID = m.client.runID
        request.header.session = m.client.session
        request.work = .with { $0.weightsVersion = 0 }
        let bytes: [UInt8] = try request.serializedBytes()
        let contexts = try (0 ..< count).map { _ in
            let c = try m.client.socket.openContext()
            try c.setResendTime(.seconds(60))
            return c
        }
        return try await withThrowingTaskGroup(of: Csptrain_V1_Reply.self) { group in
            for c in contexts {
                group.addTask { try Csptrain_V1_Reply(serializedBytes: try await c.request(Message(bytes), timeout: .seconds(30)).bytes) }
            }
            var replies: [Csptrain_V1_Reply] = []
            for try await r in group { replies.append(r) }
            return replies
        }
    }

    struct Tally: CustomStringConvertible {
        var tasks = 0, waits = 0, overloaded = 0, other: [String] = []
        var overloadReasons: Set<String> = []
        init(_ replies: [Csptrain_V1_Reply]) {
            for r in replies {
                switch r.body {
                case .task?: tasks += 1
                case .wait?: waits += 1
                case let .refusal(f)? where f.code == .overloaded: overloaded += 1; overloadReasons.insert(f.reason)
                default: other.append("\(r)")
                }
            }
        }
        var description: String { "\(tasks) tasks, \(waits) waits, \(overloaded) overloaded, other: \(other)" }
    }

    func waitForLine(_ child: Child, _ text: String, seconds: Double = 30) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !child.stderr.contains(text) {
            guard Date() < deadline else { throw TestFailure("no '\(text)' in the coordinator's log within \(seconds) s") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func metricsLines(_ run: CoordinatorTests.Run) -> Int {
        ((try? String(contentsOf: run.dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)) ?? "")
            .split(separator: "\n").count
    }

    @Test func floodOfWorkRequestsIsCappedAndARealWorkerFinishesTheRun() async throws {
        let run = try await CoordinatorTests().startCoordinator(["--steps", "40"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let started = Date()

        // While a real worker trains: every request is answered (a task, a wait, or a refusal
        // naming the cap), and training goes on. A task leaves before the member's next request
        // is served, so how many get one depends on when replies leave (about 10 of 200 here);
        // most are refused.
        let worker = try CoordinatorTests().worker(run, name: "real")
        while metricsLines(run) < 2 {
            guard Date().timeIntervalSince(started) < 60 else { throw TestFailure("the real worker did not train") }
            try await Task.sleep(for: .milliseconds(50))
        }
        let live = try await joinRaw(run)
        let liveTally = Tally(try await flood(live, count: floodSize))
        print("flood while training: \(liveTally)")
        #expect(liveTally.other.isEmpty, "\(liveTally)")
        #expect(liveTally.tasks + liveTally.waits + liveTally.overloaded == floodSize)
        #expect(liveTally.tasks >= 1 && liveTally.overloaded >= floodSize / 2, "\(liveTally)")
        await live.client.close()
        let afterLive = metricsLines(run)

        // Deterministic: the member holds every micro-batch of the step, each started with one
        // chunk, so none of its work requests can be answered at once. The first `cap` are held
        // (and answered with Wait after the poll hold); the others are refused at once.
        let hog = try await joinRaw(run)
        var held: Set<UInt32> = []
        while true {
            guard Date().timeIntervalSince(started) < 90 else { throw TestFailure("could not take the step's micro-batches") }
            let reply = try await hog.client.send { $0.work = .with { $0.weightsVersion = 0 } }
            if case .finished? = reply.body { throw TestFailure("the run ended before the member could hold its work") }
            // A Wait: nothing is left to hand out (before the member holds any: a step boundary).
            guard case let .task(task)? = reply.body else { if held.isEmpty { continue } else { break } }
            hog.client.step = reply.header.step
            let ack = try await chunk(hog, microBatch: task.microBatch, examples: task.exampleIndices.count, version: task.weightsVersion)
            if ack.ack.status == .accepted { held.insert(task.microBatch) }  // else stale: the step moved on; ask again
        }
        #expect(!held.isEmpty)
        let tally = Tally(try await flood(hog, count: floodSize))
        print("flood while holding the step's work: \(tally)")
        #expect(tally.tasks + tally.waits <= cap, "\(tally)")
        #expect(tally.tasks + tally.waits == cap && tally.overloaded == floodSize - cap, "\(tally)")
        #expect(tally.other.isEmpty)
        for reason in tally.overloadReasons {
            #expect(reason.contains("coordinator.max_requests_in_flight") && reason.contains("is \(cap)"), "\(reason)")
        }
        #expect(run.coordinator.stderr.contains("requests in flight (coordinator.max_requests_in_flight = \(cap))"))
        // Leaving hands its micro-batches to the real worker, which trains to the end.
        await hog.client.close()

        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 120)
        #expect(status == 0, "coordinator: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 40)
        #expect(metricsLines(run) > afterLive)
        let checkpoint = try #require(summary.checkpoint)
        #expect(FileManager.default.fileExists(atPath: checkpoint))
        #expect(await worker.wait(seconds: 30).status == 0)
        print("flood test: \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }

    @Test func oversizedRequestAndChunkForAnotherMicroBatchAreRefusedByName() async throws {
        let run = try await CoordinatorTests().startCoordinator(["--steps", "5", "--set", "coordinator.chunk_values=4096"])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        // Alone, the raw member starts the run; it holds micro-batch 0 and the others are pending.
        let m = try await joinRaw(run)
        let reply = try await m.client.send { $0.work = .with { $0.weightsVersion = 0 } }
        let task = reply.task
        m.client.step = reply.header.step
        #expect(task.microBatch == 0)
        let other = try await chunk(m, microBatch: 1, examples: task.exampleIndices.count, version: task.weightsVersion)
        #expect(other.refusal.code == .notAssigned, "\(other)")
        #expect(other.refusal.reason.contains("micro-batch 1 "), "\(other.refusal.reason)")

        // A chunk 128 KiB past the limit (chunk_values × 4 + 64 KiB), under nng's own cut at twice it.
        let limit = 4096 * 4 + (64 << 10)
        let big = try await chunk(m, microBatch: task.microBatch, examples: task.exampleIndices.count, version: task.weightsVersion,
                                  valueBytes: 4096 * 4 + (128 << 10))
        #expect(big.refusal.code == .tooLarge, "\(big)")
        #expect(big.refusal.reason.contains("at most \(limit)"), "\(big.refusal.reason)")
        try await waitForLine(run.coordinator, "the limit is \(limit)")
        let line = try #require(run.coordinator.stderr.split(separator: "\n").first { $0.contains("the limit is \(limit)") })
        #expect(line.contains("peer=127.0.0.1:"), "\(line)")
        // The member is still served after both refusals.
        let again = try await m.client.send { $0.work = .with { $0.weightsVersion = task.weightsVersion } }
        #expect(again.task.microBatch == task.microBatch)
        await m.client.close()

        let w = try CoordinatorTests().worker(run, name: "real")
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr)")
        #expect(try Summary.parse(stdout).status == "completed")
        #expect(await w.wait(seconds: 30).status == 0)
    }
}
