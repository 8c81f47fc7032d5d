import ArgumentParser
import Benchmarks
import Foundation
import TLSMaterial
import Logging
import Pruning
import Runtime
import Speech
import Tensors

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput against baselines run in the same process.",
        discussion: """
            Prints each benchmark with its baseline and their ratio. Not a test: numbers depend on the machine.

            ingest       gradient bytes folded per second in steady-state steps of a real launch
                         (coordinator and 2 worker processes) against raw nng PUSH/PULL, with
                         the CPU bound and the same design in bare C (scripts/bench/nng_star.c)
            aggregation  folding gradient chunks against memcpy, in float32 and in deterministic
                         mode's exact fixed point
            speech       the speech model's training step on one core against the sgemm peak and,
                         when scripts/bench-pytorch.sh --install has been run, against PyTorch on
                         the same batches
            project      the pruning projection's cost (support update and plain step) as the
                         parameter count grows, next to one Adam step over the same weights
                         (not run unless asked for with --only project)
            checkpoint   writing and reading a checkpoint (10 M parameters at 0, 50 and 90%
                         sparsity; the weights, then the weights with Adam's state) against
                         writing and reading the dense float32 values raw in the same folder
                         (not run unless asked for with --only checkpoint)
            step         a training step of a 10 M-parameter loadtest model on 2 workers (csptrain
                         launch), dense and with a 90%-sparse broadcast, against MPI_Allreduce +
                         SGD over TCP loopback and against a raw nng star in C (the C peers are
                         built by scripts/bench/build.sh; MPI is skipped where mpicc is absent;
                         not run unless asked for with --only step)
            memory       the coordinator's resident set with 1 worker, with 8, and with 1 while
                         another member keeps 200 work requests in flight, on a 1 M-parameter
                         loadtest model, against the bound RSS ≤ RSS(1) + 2 × model bytes
                         (not run unless asked for with --only memory)
            observe      the coordinator's per-step cost of updating every Prometheus series with
                         8 workers' labels and of one /metrics scrape, against a speech-sized
                         step's coordinator share measured in the same run with the endpoint on
                         and scraped once a second; goal ≤ 1% of the step at 1 scrape/s
                         (not run unless asked for with --only observe)
            inference    PCM to text on one thread with the streaming model's shape: dense
                         against sparse kernels on the same weights at 0-90% unstructured
                         sparsity, 2:4, 1:10 and low-rank; whole utterances at batch 1 and 8 and
                         100 ms streaming chunks; bytes of weights read, time shares, latency,
                         exported file sizes (not run unless asked for with --only inference)
            statistics   sensing through the layers' inputs on the reference speech model: a
                         worker's micro-batch with its inputs' second moments against without,
                         the bytes it sends against the gradient alone, and the coordinator's
                         support update at 80% (csp with activations, wanda, one-shot
                         reconstruction) against a worker's micro-batch (not run unless asked
                         for with --only statistics)
            sketch       sensing through a sketch of the layers' inputs (operator
                         activation-sketch) on the same model, m/d from 1/16 to 1: the output
                         error at 80% against the full G's and magnitude pruning's, the values
                         sent against the packed G, the worker's micro-batch against the full
                         G's (not run unless asked for with --only sketch)
            """
    )

    enum Name: String, ExpressibleByArgument, CaseIterable {
        case ingest, aggregation, speech, project, checkpoint, step, memory, inference, observe, statistics, sketch
    }

    @Option(name: .customLong("only"), help: "Run only these benchmarks (repeatable): \(Name.allCases.map(\.rawValue).joined(separator: ", ")).")
    var only: [Name] = []

    @Option(help: "Parameters of the load-test model for the ingest benchmark.")
    var parameters = 4 << 20

    @Option(help: "Steps of the ingest benchmark's run (the first quarter, at most 5, are not timed).")
    var steps = 30

    @Option(help: "Micro-batches per step in the ingest benchmark (per-step costs are spread over more chunks).")
    var microBatches = 8

    @Option(help: "Worker processes for the ingest benchmark.")
    var workers = 2

    @Option(help: "Megabytes folded by the aggregation benchmark.")
    var megabytes = 2048

    @Option(help: "speech: utterances per micro-batch.")
    var microBatch = 8

    @Option(help: "speech: timed micro-batches.")
    var speechBatches = 12

    @Option(help: "speech: draw utterance lengths from this prepared shard set (default: the built-in corpus's spread).")
    var lengthsFrom: String?

    @Option(help: "speech: model.dropout for the timed steps (0: none, today's step).")
    var speechDropout = 0.0

    @Option(help: "speech: the PyTorch reference command (skipped with a message when torch is not installed; 'none' to skip).")
    var pytorch = "scripts/bench-pytorch.sh"

    @Option(help: "project: parameter counts, in millions (repeatable).")
    var millions: [Int] = [1, 2, 5, 10]

    @Option(help: "project: the pruning method (csp, admm-magnitude, gradual-magnitude).")
    var method = "csp"

    @Option(help: "project: the target sparsity.")
    var target = 0.8

    @Option(help: "checkpoint: parameters of the model.")
    var checkpointParameters = 10_000_000

    @Option(help: ArgumentHelp("checkpoint: the folder to write in (its disk is what is measured).", valueName: "dir"))
    var checkpointFolder = "runs/bench-checkpoint"

    @Option(help: "step: parameters of the loadtest model (the peers move as many float32 values).")
    var stepParameters = 10_000_000

    @Option(help: "step: steps of each csptrain run (the first 8 are not timed).")
    var stepSteps = 40

    @Option(help: "step: workers, and MPI ranks.")
    var stepWorkers = 2

    @Option(help: "memory: parameters of the loadtest model.")
    var memoryParameters = 1_000_000

    @Option(help: "memory: launches per load (the bounds compare medians).")
    var memoryRepeats = 5

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    @Flag(help: "ingest, step: csptrain over tls+tcp:// with mutual TLS (a fresh `certs init` folder), to set TLS's cost against the plain runs.")
    var tls = false

    @OptionGroup var logOptions: LogOptions

    func run() async throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        var level = logOptions
        if level.logLevel == .info { level.logLevel = .warning }
        let logger = level.bootstrap(label: "csptrain.bench")
        let selected = only.isEmpty ? [.ingest, .aggregation, .speech] : only
        var projectionRows: [ProjectionBenchmark.Row] = []
        if selected.contains(.project) {
            var settings = PruningSettings()
            guard let m = PruningSettings.Method(rawValue: method), m != .none else {
                throw ValidationError("--method \(method): expected one of \(PruningSettings.Method.allCases.filter { $0 != .none }.map(\.rawValue).joined(separator: ", "))")
            }
            settings.method = m
            settings.schedule.target = target
            projectionRows = try ProjectionBenchmark.run(sizes: millions.map { $0 << 20 }, settings: settings)
        }
        var results: [Benchmarks.Result] = []
        var notes: [String] = []
        let tlsDir = try tls ? Self.certificateFolder() : nil
        defer { if let tlsDir { try? FileManager.default.removeItem(atPath: tlsDir) } }
        if tlsDir != nil { notes.append("csptrain over tls+tcp:// with mutual TLS (TLS 1.2, ECDSA P-256, mbedTLS 2.28 in nng); the baselines stay plain") }
        if selected.contains(.ingest) {
            results.append(try await Benchmarks.ingest(parameters: parameters, microBatches: microBatches, steps: steps, workers: workers,
                                                       tlsDir: tlsDir))
        }
        if selected.contains(.aggregation) {
            results.append(Benchmarks.aggregation(megabytes: megabytes))
            results.append(Benchmarks.aggregation(megabytes: megabytes, mode: .fixedPoint))
        }
        var checkpointRows: [CheckpointBenchmark.Row] = []
        if selected.contains(.checkpoint) {
            let folder = URL(fileURLWithPath: checkpointFolder)
            for withOptimizer in [false, true] {
                checkpointRows += try CheckpointBenchmark.run(parameters: checkpointParameters, sparsities: [0, 0.5, 0.9],
                                                              withOptimizer: withOptimizer, folder: folder)
            }
        }
        var step: StepBenchmark.Report?
        if selected.contains(.step) {
            var settings = StepBenchmark.Settings()
            settings.parameters = stepParameters
            settings.steps = stepSteps
            settings.warmupSteps = min(8, stepSteps / 4)
            settings.workers = stepWorkers
            settings.tlsDir = tlsDir
            step = try StepBenchmark.run(settings)
        }
        var memory: MemoryBenchmark.Report?
        if selected.contains(.memory) {
            var settings = MemoryBenchmark.Settings()
            settings.parameters = memoryParameters
            settings.repeats = memoryRepeats
            memory = try MemoryBenchmark.run(settings)
        }
        if selected.contains(.statistics) {
            results += try StatisticsBenchmark.run()
        }
        if selected.contains(.sketch) {
            results += try SketchBenchmark.run()
        }
        var observe: ObserveBenchmark.Report?
        if selected.contains(.observe) {
            observe = try await ObserveBenchmark.run(.init(), logger: logger)
        }
        if selected.contains(.speech) {
            var lengths: [Int]?
            if let folder = lengthsFrom {
                // Record bytes are 2 per sample plus the transcript: 320 per 10 ms frame.
                lengths = try ShardSet(folder: folder).recordSizes.map { max(1, $0 / 320) }
            }
            let shapes = SpeechBenchmark.batches(count: speechBatches, microBatch: microBatch, lengths: lengths, seed: 1)
            guard speechDropout >= 0 && speechDropout < 1 else { throw ValidationError("--speech-dropout \(speechDropout): must be in [0, 1)") }
            let report = try SpeechBenchmark.run(batches: shapes, warmup: 2, dropout: Float(speechDropout), pytorch: pytorch == "none" ? nil : [pytorch])
            results += report.results
            notes += report.notes
        }
        var inference: InferenceBenchmark.Report?
        if selected.contains(.inference) {
            inference = try InferenceBenchmark.run()
        }
        if json {
            let objects = results.map { r in
                var object: [String: Any] = ["name": r.name, "ours": r.ours, "baseline": r.baseline, "ratio": r.ratio, "unit": r.unit,
                                             "baseline_name": r.baselineName]
                if let floor = r.floor { object["floor"] = floor }
                if let peer = r.peer { object["peer"] = peer }
                return object
            }
            let projection = projectionRows.map { r in
                ["parameters": r.parameters, "method": r.method, "support_update_seconds": r.supportUpdateSeconds,
                 "step_seconds": r.stepSeconds, "optimizer_seconds": r.optimizerSeconds] as [String: Any]
            }
            let checkpoint = checkpointRows.map { r in
                ["what": r.what, "sparsity": r.sparsity, "parameters": r.parameters, "file_bytes": r.fileBytes,
                 "write_seconds": r.writeSeconds, "read_seconds": r.readSeconds, "raw_bytes": r.rawBytes,
                 "raw_write_seconds": r.rawWriteSeconds, "raw_read_seconds": r.rawReadSeconds] as [String: Any]
            }
            var object: [String: Any] = ["benchmarks": objects, "projection": projection, "checkpoint": checkpoint,
                                         "notes": notes + (step?.notes ?? [])]
            if let step { object["step"] = step.json }
            if let memory { object["memory"] = memory.json }
            if let observe { object["observe"] = observe.json }
            if let inference { object["inference"] = inference.json }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            try output(String(decoding: data, as: UTF8.self))
        } else {
            for r in results {
                try output(r.name)
                try output(String(format: "  ours     %8.3f %@", r.ours, r.unit))
                try output(String(format: "  baseline %8.3f %@  (%@)", r.baseline, r.unit, r.baselineName))
                try output(String(format: "  ratio    %8.3f", r.ratio))
                if let floor = r.floor { try output("  floor    \(floor)") }
                if let peer = r.peer { try output("  peer     \(peer)") }
            }
            if !projectionRows.isEmpty {
                try output("projection (\(method), target sparsity \(target)): seconds on the coordinator")
                try output("  parameters  support update  plain step  one Adam step")
                for r in projectionRows {
                    try output(String(format: "  %10d  %14.3f  %10.4f  %13.4f", r.parameters, r.supportUpdateSeconds, r.stepSeconds, r.optimizerSeconds))
                }
            }
            if !checkpointRows.isEmpty {
                try output("checkpoint write/read (\(checkpointFolder)), median of 3; raw = the dense float32 values, write+fsync / read")
                try output("  contents              sparsity  file MB  raw MB  size/raw  write s  raw write s  read s  raw read s")
                for r in checkpointRows {
                    try output("  " + r.what.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "  %7.0f%%  %7.1f  %6.1f  %8.3f  %7.3f  %11.3f  %6.3f  %10.3f", 100 * r.sparsity,
                                 Double(r.fileBytes) / 1e6, Double(r.rawBytes) / 1e6, Double(r.fileBytes) / Double(r.rawBytes),
                                 r.writeSeconds, r.rawWriteSeconds, r.readSeconds, r.rawReadSeconds))
                }
            }
            for line in step?.lines ?? [] { try output(line) }
            for line in memory?.lines ?? [] { try output(line) }
            for line in observe?.lines ?? [] { try output(line) }
            for line in inference?.lines ?? [] { try output(line) }
            for note in notes { try output(note) }
        }
    }
}

extension Bench {
    /// A throw-away certificate folder for `--tls` (localhost and 127.0.0.1).
    static func certificateFolder() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-bench-tls-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateAuthority.initFolder(CertificateFolder(dir), hosts: ["localhost", "127.0.0.1"], days: 1)
        return dir
    }
}
