import ArgumentParser
import Benchmarks
import Foundation
import Tensors
import Logging

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput against baselines run in the same process.",
        discussion: "Prints each benchmark with its baseline and their ratio. Not a test: numbers depend on the machine."
    )

    @Option(help: "Parameters of the load-test model for the ingest benchmark.")
    var parameters = 4 << 20

    @Option(help: "Steps of the ingest benchmark's run.")
    var steps = 10

    @Option(help: "Micro-batches per step in the ingest benchmark (per-step costs are spread over more chunks).")
    var microBatches = 8

    @Option(help: "In-process workers for the ingest benchmark.")
    var workers = 2

    @Option(help: "Megabytes folded by the aggregation benchmark.")
    var megabytes = 2048

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    @OptionGroup var logOptions: LogOptions

    func run() async throws {
        BLASRuntime.useBestKernels()
        var level = logOptions
        if level.logLevel == .info { level.logLevel = .warning }
        let logger = level.bootstrap(label: "csptrain.bench")
        let aggregation = Benchmarks.aggregation(megabytes: megabytes)
        let ingest = try await Benchmarks.ingest(parameters: parameters, microBatches: microBatches, steps: steps, workers: workers, logger: logger)
        let results = [ingest, aggregation]
        if json {
            let objects = results.map { r in
                ["name": r.name, "ours": r.ours, "baseline": r.baseline, "ratio": r.ratio, "unit": r.unit, "baseline_name": r.baselineName] as [String: Any]
            }
            let data = try JSONSerialization.data(withJSONObject: ["benchmarks": objects], options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for r in results {
                print(r.name)
                print(String(format: "  ours     %8.3f %@", r.ours, r.unit))
                print(String(format: "  baseline %8.3f %@  (%@)", r.baseline, r.unit, r.baselineName))
                print(String(format: "  ratio    %8.3f", r.ratio))
            }
        }
    }
}
