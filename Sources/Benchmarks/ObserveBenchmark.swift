import Configuration
import Coordination
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Observe
import Runtime

/// `bench --only observe`: what watching a run costs the coordinator.
///
/// 1. Updating every series for one step of a synthetic 8-worker run, through the same entry
///    the shell uses (the machine's directives): per worker a work request and its task, the
///    micro-batch's gradient chunks (each folded and acknowledged, the last completing it), the
///    replies' bytes, then the step's line.
/// 2. One scrape of /metrics rendered (the text the registry emits, with every worker's series).
/// 3. In the same run, the coordinator's share of a speech step: a real coordinator and 2
///    in-process workers on a load-test model of the speech model's size (gradients cost
///    nothing, so the step is the coordinator's and the wire's), with observe.http on and
///    /metrics scraped once a second.
///
/// Goal: (update + scrape × step / 1 s) ≤ 1% of the step.
public enum ObserveBenchmark {
    public struct Settings: Sendable {
        public var workers = 8
        /// Gradient chunks per micro-batch (a speech-sized model in 256 Ki-value chunks: 12
        /// for one tensor, more with many small ones).
        public var chunksPerMicroBatch = 32
        public var syntheticSteps = 2000
        public var scrapes = 500
        /// The speech model's parameter count (Configs/speech-local.yaml).
        public var parameters = 2_903_069
        public var runSteps = 60
        public init() {}
    }

    public struct Report: Sendable {
        public var updateSecondsPerStep: Double
        public var scrapeSeconds: Double
        public var scrapeBytes: Int
        public var stepSeconds: Double
        public var scrapesDuringRun: Int
        /// (update + scrape × step / 1 s) / step.
        public var share: Double { (updateSecondsPerStep + scrapeSeconds * stepSeconds) / stepSeconds }

        public var lines: [String] {
            [
                "observe: the coordinator's cost of the HTTP endpoint (8 workers' labels)",
                String(format: "  updating every series, per step      %9.1f µs", 1e6 * updateSecondsPerStep),
                String(format: "  one scrape of /metrics (%6d bytes) %9.1f µs", scrapeBytes, 1e6 * scrapeSeconds),
                String(format: "  speech-sized step, coordinator share %9.1f ms (median; %d scrapes during the run)", 1e3 * stepSeconds, scrapesDuringRun),
                String(format: "  share of the step at 1 scrape/s      %9.3f %%  (goal ≤ 1%%: %@)", 100 * share, share <= 0.01 ? "met" : "not met"),
            ]
        }

        public var json: [String: Any] {
            ["update_seconds_per_step": updateSecondsPerStep, "scrape_seconds": scrapeSeconds, "scrape_bytes": scrapeBytes,
             "step_seconds": stepSeconds, "share": share, "scrapes_during_run": scrapesDuringRun]
        }
    }

    public static func run(_ settings: Settings, logger: Logger) async throws -> Report {
        let (update, scrape, bytes) = synthetic(settings)
        let (step, scrapes) = try await speechShare(settings, logger: logger)
        return Report(updateSecondsPerStep: update, scrapeSeconds: scrape, scrapeBytes: bytes, stepSeconds: step, scrapesDuringRun: scrapes)
    }

    /// Seconds per step of updating every series, and per scrape.
    static func synthetic(_ settings: Settings) -> (update: Double, scrape: Double, bytes: Int) {
        let layers = (0 ..< 11).map { "layer.\($0).weight" }
        let observer = RunObserver(.init(runID: "bench", totalSteps: settings.syntheticSteps, startStep: 0, method: "csp", layers: layers,
                                         goalSparsity: 0.9), now: 0)
        let names = (0 ..< settings.workers).map { "worker-\($0)" }
        var now = 1.0
        var id: RequestID = 1
        let training = RunStateMachine.Phase.training(step: 0)
        let everyone = { (_: String) in true }
        for (i, name) in names.enumerated() {
            let member = Membership.Member(id: UInt32(i + 1), name: name, session: SessionID(Data([UInt8(i)])), pipe: UInt32(i + 1), lastSeen: now)
            observer.observe([.memberJoined(member, peer: "tcp://10.0.0.\(i + 2):40000")], phase: training, step: 0, workers: names.count,
                             isMember: everyone, completes: { _ in false }, now: now)
        }
        let chunkBytes = 262_144 * 4 + 64
        let task = TaskAssignment(kind: .train(epoch: 0), index: 0, examples: [], weightsVersion: 1, weights: .delta(version: 1), deadlineSeconds: 60)
        let start = ContinuousClock.now
        for step in 0 ..< settings.syntheticSteps {
            for (w, name) in names.enumerated() {
                observer.request(id, worker: name, chunk: false, bytes: 64, now: now)
                var t = task
                t.index = w
                observer.observe([.reply(id, .task(t))], phase: training, step: step, workers: names.count, isMember: everyone,
                                 completes: { _ in false }, now: now)
                observer.replySent(bytes: 1 << 20)
                id += 1
                for c in 0 ..< settings.chunksPerMicroBatch {
                    now += 0.0001
                    observer.request(id, worker: name, chunk: true, bytes: chunkBytes, now: now)
                    let last = c == settings.chunksPerMicroBatch - 1
                    observer.observe([.fold(id, offset: 0, examples: 4, microBatch: w, lossSum: c == 0 ? 1 : nil), .reply(id, .ack(.accepted))],
                                     phase: training, step: step, workers: names.count, isMember: everyone, completes: { _ in last }, now: now)
                    observer.replySent(bytes: 64)
                    id += 1
                }
            }
            observer.recorded(.init(step: step + 1, loss: 1, learningRate: 0.001, examples: 32, stepSeconds: 0.07, examplesPerSecond: 450,
                                    sparsity: 0.5, sparsityOverall: 0.45, projectionSeconds: 0.001, wallSeconds: now))
        }
        let update = (ContinuousClock.now - start).seconds / Double(settings.syntheticSteps)
        var bytes = 0
        let scrapeStart = ContinuousClock.now
        for _ in 0 ..< settings.scrapes { bytes = observer.prometheusText(now: now).count }
        let scrape = (ContinuousClock.now - scrapeStart).seconds / Double(settings.scrapes)
        return (update, scrape, bytes)
    }

    /// The median step seconds of a speech-sized load-test run with the endpoint on and scraped
    /// once a second, and how many scrapes answered.
    static func speechShare(_ settings: Settings, logger: Logger) async throws -> (Double, Int) {
        var config = RunConfiguration()
        config.model.kind = .loadtest
        config.model.parameters = settings.parameters
        config.steps = settings.runSteps
        config.coordinator.microBatches = 2
        config.coordinator.globalBatch = 32
        config.coordinator.minWorkers = 2
        config.data.examples = 1024
        config.optimizer.kind = .adamw
        config.optimizer.clipNorm = 1
        config.checkpoint.everySteps = 0
        config.observe.http = "127.0.0.1:0"
        let folder = RunFolder(FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-bench-observe-\(getpid())").path)
        defer { try? FileManager.default.removeItem(at: folder.url) }
        let started = try await CoordinatorStartup.start(.init(folder: folder, config: config, listen: "tcp://127.0.0.1:0"), logger: logger)
        defer { started.hold() }
        started.commit()
        let coordinator = started.service
        let url = started.url
        let token = try RunToken.load(file: started.tokenFile)
        guard let page = coordinator.pageURL, let metrics = URL(string: page + "metrics") else {
            throw WorkerError("the observe benchmark's coordinator serves no HTTP endpoint")
        }
        let scraper = Task { () -> Int in
            var answered = 0
            while !Task.isCancelled {
                if let (_, response) = try? await URLSession.shared.data(from: metrics),
                   (response as? HTTPURLResponse)?.statusCode == 200 { answered += 1 }
                try? await Task.sleep(for: .seconds(1))
            }
            return answered
        }
        let summary = try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0 ..< 2 {
                group.addTask {
                    let worker = try WorkerService(options: .init(connect: url, token: token, name: "bench-\(i)"), logger: logger)
                    _ = try await worker.run()
                    await worker.close()
                }
            }
            let summary = await coordinator.run()
            try await group.waitForAll()
            return summary
        }
        scraper.cancel()
        let scrapes = await scraper.value
        guard summary.status == .completed else { throw WorkerError("the observe benchmark's run did not complete: \(summary.message ?? "")") }
        let text = try String(contentsOf: folder.metricsFile, encoding: .utf8)
        let seconds = text.split(separator: "\n").compactMap { line -> Double? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["step_seconds"] as? Double
        }.dropFirst(5).sorted()
        guard !seconds.isEmpty else { throw WorkerError("the observe benchmark's run recorded no step") }
        return (seconds[seconds.count / 2], scrapes)
    }
}
