import ArgumentParser
import Configuration
import Experiments
import Foundation
import Plots

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw a run's curves or a pruning sweep's results as SVG.",
        discussion: """
        A run folder (it has metrics.jsonl): training loss and validation WER against step and \
        against wall time, with the WER goal (observe.goal_wer) and the run's total steps as goal \
        lines. Written to RUN_DIR/curves.svg unless --out is given.

        A sweep folder (`experiment pruning`'s OUT, it has results.json): WER against achieved \
        sparsity per method on the clean and channel test sets, with each point's bootstrap \
        interval and the dense model as a dashed line. Written to SWEEP_DIR/wer-vs-sparsity.svg \
        unless --out is given.
        """
    )

    @Argument(help: ArgumentHelp("A run folder (metrics.jsonl) or a sweep folder (results.json).", valueName: "dir"))
    var folder: String

    @Option(help: ArgumentHelp("Where to write the SVG.", valueName: "file.svg"))
    var out: String?

    @Option(help: "Title of the figure (default: the folder's name).")
    var title: String?

    @Option(help: ArgumentHelp("A run's validation WER goal line, e.g. 0.08 (default: the run's observe.goal_wer).", valueName: "ratio"))
    var goalWer: Double?

    func validate() throws {
        if let goalWer, !(goalWer > 0 && goalWer < 1) { throw ValidationError("--goal-wer \(goalWer): expected a ratio between 0 and 1, e.g. 0.08") }
    }

    func run() throws {
        let dir = URL(fileURLWithPath: folder)
        let fm = FileManager.default
        let results = dir.appendingPathComponent("results.json"), metrics = dir.appendingPathComponent("metrics.jsonl")
        let svg: String, target: URL
        if fm.fileExists(atPath: results.path) {
            svg = try Self.sweep(results, title: title ?? "WER against sparsity: \(dir.lastPathComponent)").svg()
            target = URL(fileURLWithPath: out ?? dir.appendingPathComponent("wer-vs-sparsity.svg").path)
        } else if fm.fileExists(atPath: metrics.path) {
            svg = try Self.run(dir, title: title ?? "Run \(dir.lastPathComponent)", goalWer: goalWer).svg()
            target = URL(fileURLWithPath: out ?? dir.appendingPathComponent("curves.svg").path)
        } else {
            throw ValidationError("\(folder) has neither metrics.jsonl (a run folder) nor results.json (an `experiment pruning` folder)")
        }
        do { try Data(svg.utf8).write(to: target, options: .atomic) } catch {
            throw ValidationError("cannot write \(target.path): \(error.localizedDescription)")
        }
        try output(target.path)
    }

    static func run(_ dir: URL, title: String, goalWer: Double? = nil) throws -> Figure {
        let metrics = dir.appendingPathComponent("metrics.jsonl")
        let text: String
        do { text = try String(contentsOf: metrics, encoding: .utf8) } catch {
            throw ValidationError("cannot read \(metrics.path): \(error.localizedDescription)")
        }
        let lines: [RunFigures.Line]
        do { lines = try RunFigures.parseMetrics(text, source: metrics.path) } catch { throw ValidationError("\(error)") }
        guard !lines.isEmpty else { throw ValidationError("\(metrics.path) has no step yet") }
        // The run's own configuration gives the goal lines, when it is there.
        let config = try? RunConfiguration.load(file: dir.appendingPathComponent("config.yaml").path)
        let goal = goalWer ?? config.flatMap { $0.observe.goalWer > 0 ? $0.observe.goalWer : nil }
        return RunFigures.run(lines, title: title, goalWer: goal, totalSteps: config?.steps)
    }

    static func sweep(_ results: URL, title: String) throws -> Figure {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let records: [PruningResult]
        do { records = try decoder.decode([PruningResult].self, from: Data(contentsOf: results)) } catch {
            throw ValidationError("\(results.path): not an `experiment pruning` results file: \(error)")
        }
        // Each method's primary runs (not the unchosen tuning setting, not the extra seeds).
        let primary = records.filter(\.isPrimary)
        var order = PruningReport.methodOrder
        for m in primary.map(\.method) where !order.contains(m) { order.append(m) }
        return RunFigures.sweep(primary.map(Self.point), order: order, title: title)
    }

    /// The dense model's x is 0; pruned runs sit at their achieved sparsity.
    static func point(_ r: PruningResult) -> RunFigures.SweepPoint {
        RunFigures.SweepPoint(method: r.method, sparsity: r.method == "dense" ? 0 : r.sparsity, wer: r.wer,
                              werInterval: r.werInterval.map { $0.low ... $0.high }, werChannel: r.werChannel,
                              werChannelInterval: r.werChannelInterval.map { $0.low ... $0.high })
    }
}
