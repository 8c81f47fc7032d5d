import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import Plots

struct PlotsTests {
    @Test func ticksAreRoundAndInside() {
        #expect(Figure.ticks(0 ... 1, count: 5) == [0, 0.2, 0.4, 0.6, 0.8, 1])
        #expect(Figure.ticks(3 ... 97, count: 5) == [20, 40, 60, 80])
        #expect(Figure.ticks(0.4 ... 1.0, count: 6) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    }

    @Test func metricsLinesWithGapsAndErrors() throws {
        let text = """
        {"step":1,"loss":2.5,"wall_seconds":0.5,"sparsity":0}
        {"step":2,"loss":null,"non_finite":["loss"],"wall_seconds":1.0}

        {"step":3,"loss":1.5,"wall_seconds":1.5,"valid_wer":0.4,"valid_wer_channel":0.6}
        """
        let lines = try RunFigures.parseMetrics(text, source: "m.jsonl")
        #expect(lines.map(\.step) == [1, 2, 3])
        #expect(lines[1].loss == nil)
        #expect(lines[2].validWerChannel == 0.6)
        #expect(throws: RunFigures.ParseError.self) { try RunFigures.parseMetrics("{\"step\":1}\nnot json", source: "m.jsonl") }
        do { _ = try RunFigures.parseMetrics("{\"loss\":1}", source: "m.jsonl") } catch {
            #expect("\(error)" == "m.jsonl:1: no \"step\"")
        }
    }

    @Test func runFigureHasFourPanelsCurvesAndGoals() throws {
        var lines: [RunFigures.Line] = []
        for s in 1 ... 50 {
            let x = Double(s)
            let wer: Double? = s % 10 == 0 ? 0.5 - x / 200 : nil
            lines.append(RunFigures.Line(step: s, wallSeconds: x * 10, loss: 3 / x, validWer: wer, validWerChannel: nil, sparsity: 0))
        }
        let figure = RunFigures.run(lines, title: "t", goalWer: 0.2, totalSteps: 60)
        #expect(figure.panels.count == 4)
        #expect(figure.panels[1].xLabel == "wall time (min)", "500 s of wall time are drawn in minutes")
        #expect(figure.panels[2].series[0].points.count == 5)
        let svg = figure.svg()
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4, "two loss curves and two WER curves (the channel one is empty)")
        #expect(svg.contains("goal 20.0%"))
        #expect(svg.contains("60 steps"))
        // Valid XML.
        #expect(XMLParser(data: Data(svg.utf8)).parse())
    }

    /// A run that scored valid_seen (training voices) draws it beside valid; one that did not
    /// has no such curve.
    @Test func trainingVoicesAreDrawnOnlyWhenScored() throws {
        let text = """
        {"step":1,"loss":2.5,"wall_seconds":0.5}
        {"step":2,"loss":2.0,"wall_seconds":1.0,"valid_wer":0.4,"valid_wer_channel":0.6,"valid_wer_seen":0.1}
        """
        let lines = try RunFigures.parseMetrics(text, source: "m.jsonl")
        #expect(lines[1].validWerSeen == 0.1 && lines[0].validWerSeen == nil)
        let with = RunFigures.run(lines, title: "t", goalWer: nil, totalSteps: nil)
        #expect(with.panels[2].series.map(\.name) == ["valid", "valid_channel", "valid_seen (training voices)"])
        #expect(with.panels[3].series[2].points.map(\.y) == [0.1])
        let without = RunFigures.run(try RunFigures.parseMetrics("{\"step\":1,\"valid_wer\":0.4}", source: "m.jsonl"), title: "t", goalWer: nil, totalSteps: nil)
        #expect(without.panels[2].series.map(\.name) == ["valid", "valid_channel"])
    }

    @Test func sweepFigureDrawsIntervals() {
        let points = [
            RunFigures.SweepPoint(method: "dense", sparsity: 0, wer: 0.1, werInterval: 0.08 ... 0.12, werChannel: 0.2, werChannelInterval: nil),
            RunFigures.SweepPoint(method: "csp", sparsity: 0.5, wer: 0.11, werInterval: 0.09 ... 0.13, werChannel: 0.21, werChannelInterval: 0.2 ... 0.22),
            RunFigures.SweepPoint(method: "csp", sparsity: 0.9, wer: 0.15, werInterval: 0.12 ... 0.18, werChannel: 0.3, werChannelInterval: 0.28 ... 0.33),
            RunFigures.SweepPoint(method: "gradual-magnitude", sparsity: 0.9, wer: 0.2, werInterval: nil, werChannel: 0.4, werChannelInterval: nil),
        ]
        let figure = RunFigures.sweep(points, order: ["dense", "csp", "gradual-magnitude"], title: "sweep")
        #expect(figure.panels.map { $0.series.map(\.name) } == [["csp", "gradual-magnitude"], ["csp", "gradual-magnitude"]])
        #expect(figure.panels[0].goals.first?.value == 0.1, "the dense model is a goal line")
        let svg = figure.svg()
        // Each interval is one vertical bar and two caps: 2 csp points × 2 panels.
        #expect(svg.components(separatedBy: "<line").count - 1 >= 12)
        #expect(svg.contains("bootstrap intervals"))
        #expect(XMLParser(data: Data(svg.utf8)).parse())
    }
}
