import Foundation
import Tensors
import Training
import Transport

/// Throughput benchmarks, each next to a baseline measured in the same run on the same
/// machine, so that the ratio means something on a shared, noisy host.
public enum Benchmarks {
    public struct Result: Codable, Sendable {
        public var name: String
        public var ours: Double
        public var baseline: Double
        public var unit: String
        public var baselineName: String
        public var ratio: Double { baseline > 0 ? ours / baseline : 0 }
        /// What bounds the ratio, measured in the same run (printed beside it), if anything.
        public var floor: String? = nil
        /// A peer that runs the same design with nothing else (printed beside the ratio), or why
        /// it did not run.
        public var peer: String? = nil
    }

    /// CPU seconds (user + system) of this process.
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return cpuSeconds(usage)
    }

    /// CPU seconds (user + system) of this process's children that have been waited for, with
    /// theirs.
    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        return cpuSeconds(usage)
    }

    private static func cpuSeconds(_ usage: rusage) -> Double {
        Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
    }

    /// Gradient ingest: `csptrain launch` of a load-test model (its gradient costs nothing), a
    /// coordinator and `workers` worker processes over tcp loopback, as a user runs them; bytes
    /// of gradient folded per second over the steady-state steps (the first `warmSteps` and
    /// the start-up and final checkpoint before and after them are not timed). Each step's
    /// time includes its per-step work: the optimizer, the weights encoded once and sent to
    /// every worker, the workers' decoding. Baseline: nng PUSH/PULL streaming the same number
    /// of 1 MiB messages over tcp loopback from as many senders, in this process.
    /// `tlsDir`: csptrain over tls+tcp:// with mutual TLS, from that certificate folder.
    public static func ingest(parameters: Int, microBatches: Int, steps: Int, workers: Int, tlsDir: String? = nil) async throws -> Result {
        guard steps >= 8 else { throw BenchmarkError("ingest: --steps \(steps) leaves too few steady-state steps to time; use at least 8") }
        let warmSteps = min(5, steps / 4)
        let yaml = """
            seed: 1
            steps: \(steps)
            model: {kind: loadtest, parameters: \(parameters)}
            data: {examples: \(max(microBatches * 4, 1024))}
            optimizer: {kind: sgd}
            coordinator: {global_batch: \(microBatches * 4), micro_batches: \(microBatches), min_workers: \(workers)}
            checkpoint: {every_steps: 0}
            """
        // The launch's CPU, its workers' included (each process reaps its children): the whole
        // run, start-up and the untimed steps too, so its CPU per byte is an upper estimate.
        let childCPU = childrenCPUSeconds()
        let run = try ChildProcess.withScratch("ingest") { scratch in
            try LaunchedRun.run(yaml: yaml, workers: workers, scratch: scratch, label: "ingest",
                                extraArguments: tlsDir.map { ["--tls", $0, "--require-client-cert"] } ?? [])
        }
        guard let first = run.metrics.first(where: { $0.step == warmSteps }), let last = run.metrics.last, last.step > first.step else {
            throw BenchmarkError("ingest: the run's metrics.jsonl has no steps \(warmSteps) to \(steps)")
        }
        let seconds = last.wallSeconds - first.wallSeconds
        let bytes = Double((last.step - first.step) * microBatches * parameters * 4)
        let messages = (last.step - first.step) * microBatches * ((parameters * 4 + (1 << 20) - 1) >> 20)
        let oursCPU = (childrenCPUSeconds() - childCPU) / (Double(last.step * microBatches * parameters * 4) / 1e9)
        let selfCPU = ownCPUSeconds()
        let baseline = try await pushPull(messages: messages, senders: workers)
        let rawCPU = (ownCPUSeconds() - selfCPU) / (Double(messages << 20) / 1e9)
        // Throughput cannot pass cores / (CPU per byte): against the measured baseline, that bounds
        // the ratio; were raw nng CPU-bound too, the ratio would be raw's CPU per byte over ours.
        let cores = ProcessInfo.processInfo.activeProcessorCount
        var floor: String?
        if oursCPU > 0, rawCPU > 0 {
            floor = String(format: "CPU per GB of gradient: ours %.2f core-s (coordinator, workers, the weights sent back; whole run), raw %.2f core-s; "
                           + "on %d cores ours can move at most %.2f GB/s, a ratio of at most %.2f against this baseline "
                           + "(%.2f were raw nng CPU-bound too, at %.2f GB/s)",
                           oursCPU, rawCPU, cores, Double(cores) / oursCPU, Double(cores) / oursCPU / baseline, rawCPU / oursCPU, Double(cores) / rawCPU)
        }
        let ours = bytes / seconds / 1e9
        let peer: String
        switch starIngest(parameters: parameters, microBatches: microBatches, workers: workers) {
        case let .success(star):
            peer = String(format: "raw nng star in C, the same shape (chunks PUSHed in and folded, SGD, the weights to each worker; "
                          + "scripts/bench/nng_star.c): %.3f GB/s, %.2f of the baseline; ours / star %.2f", star, star / baseline, ours / star)
        case let .failure(reason):
            peer = "raw nng star skipped: \(reason)"
        }
        return Result(name: "gradient ingest (csptrain launch, \(workers) worker processes, \(parameters) params, \(microBatches) micro-batches, steps \(first.step + 1)-\(last.step))",
                      ours: ours, baseline: baseline, unit: "GB/s",
                      baselineName: "raw nng PUSH/PULL of 1 MiB messages, same bytes", floor: floor, peer: peer)
    }

    /// GB/s of gradient through the raw nng star (`StepBenchmark`'s C peer) in the ingest
    /// benchmark's shape: `microBatches` gradients of `parameters` floats per step, spread over
    /// `workers` processes, folded, one SGD update, the weights back to every worker. What this
    /// design costs with no protocol, accounting or runtime of csptrain's.
    static func starIngest(parameters: Int, microBatches: Int, workers: Int) -> Swift.Result<Double, BenchmarkError> {
        do {
            return try ChildProcess.withScratch("ingest-star") { scratch in
                var notes: [String] = []
                let settings = StepBenchmark.Settings()
                guard let binary = StepBenchmark.preparePeers(settings, scratch: scratch, notes: &notes).star else {
                    // The MPI peer's notes are not this peer's business.
                    let why = notes.filter { !$0.contains("MPI") && !$0.hasPrefix("raw star skipped") }
                    return .failure(BenchmarkError("no \(settings.peers)/nng_star, and \(settings.buildScript) could not build it (run csptrain bench from the repository's root)"
                                                   + (why.isEmpty ? "" : ": " + why.joined(separator: "; "))))
                }
                let command = [binary, "--n", "\(parameters)", "--workers", "\(workers)", "--micro-batches", "\(microBatches)",
                               "--steps", "60", "--warmup", "5"]
                return try StepBenchmark.peerLine(command, scratch: scratch, label: "star").flatMap { object in
                    guard let mean = object["mean_seconds"] as? Double, mean > 0 else {
                        return .failure(BenchmarkError("\(binary) printed no mean_seconds (built from an older nng_star.c?)"))
                    }
                    return .success(Double(microBatches * parameters * 4) / mean / 1e9)
                }
            }
        } catch {
            return .failure(BenchmarkError("\(error)"))
        }
    }

    /// GB/s of 1 MiB messages streamed over tcp loopback from `senders` PUSH sockets to one PULL.
    static func pushPull(messages: Int, senders: Int) async throws -> Double {
        let pull = try Socket(.pull)
        let url = try pull.listen("tcp://127.0.0.1:0", maxMessageSize: 4 << 20).url
        let payload = [UInt8](repeating: 7, count: 1 << 20)
        let pushes = try (0 ..< senders).map { _ in
            let s = try Socket(.push)
            try s.dial(url, maxMessageSize: 4 << 20)
            return s
        }
        // Let the connections come up before timing.
        let warm = try Message(payload)
        try await pushes[0].send(warm)
        _ = try await pull.receive()
        let start = ContinuousClock.now
        let seconds = try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, push) in pushes.enumerated() {
                let share = messages / senders + (i < messages % senders ? 1 : 0)
                group.addTask {
                    for _ in 0 ..< share { try await push.send(Message(payload)) }
                }
            }
            var checksum = 0
            for _ in 0 ..< messages {
                let m = try await pull.receive()
                checksum &+= m.count
            }
            try await group.waitForAll()
            precondition(checksum == messages << 20)
            return (ContinuousClock.now - start).seconds
        }
        for p in pushes { p.close() }
        pull.close()
        return Double(messages << 20) / seconds / 1e9
    }

    /// Folding 1 MiB chunks into the accumulator (decode + axpy, or in deterministic mode the
    /// exact int64 fixed-point sum), against copying the same bytes.
    public static func aggregation(megabytes: Int, mode: GradientAccumulator.Mode = .float) -> Result {
        let chunkValues = 1 << 18
        let chunks = max(1, megabytes)
        var accumulator = GradientAccumulator(parameterCount: chunkValues * 16, mode: mode)
        let source = (0 ..< chunkValues).map { Float($0 % 1000) * 1e-4 - 0.05 }
        let bytes = FloatEncoding.denseBytes(source)
        let foldStart = ContinuousClock.now
        bytes.withUnsafeBytes { raw in
            for i in 0 ..< chunks {
                _ = accumulator.fold(littleEndianBytes: raw, at: (i % 16) * chunkValues, weight: 3)
            }
        }
        let foldSeconds = (ContinuousClock.now - foldStart).seconds
        var target = [UInt8](repeating: 0, count: chunkValues * 4 * 16)
        let copyStart = ContinuousClock.now
        bytes.withUnsafeBytes { raw in
            target.withUnsafeMutableBytes { t in
                for i in 0 ..< chunks {
                    (t.baseAddress! + (i % 16) * chunkValues * 4).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
                }
            }
        }
        let copySeconds = (ContinuousClock.now - copyStart).seconds
        accumulator.addMicroBatch(0, examples: 1, lossSum: 0)
        precondition(target[5] == bytes[5] && accumulator.mean()[1] != 0)
        let total = Double(chunks * chunkValues * 4)
        let name = mode == .float ? "aggregation (fold 1 MiB chunks into the step sum)"
                                  : "aggregation, deterministic (exact int64 fixed-point sum of 1 MiB chunks)"
        return Result(name: name, ours: total / foldSeconds / 1e9,
                      baseline: total / copySeconds / 1e9, unit: "GB/s", baselineName: "memcpy of the same bytes into a buffer of the same size")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
