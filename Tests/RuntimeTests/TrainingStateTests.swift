import Checkpoints
import Configuration
import Coordination
import Foundation
import Pruning
import Tensors
import Testing
import Training
@testable import Runtime

/// The coordinator's state through a checkpoint file and back, with sizes that are not multiples
/// of 8 (mask bits), −0.0 in the weights, and a ledger that straddles an epoch.
struct TrainingStateTests {
    static let layout = ParameterLayout([("a.weight", [3, 3], true), ("a.bias", [4], false)])   // 13 values

    @Test func checkpointRoundTripIsExact() throws {
        let n = Self.layout.totalCount
        var optimizer = Optimizer(settings: OptimizerSettings(), parameterCount: n)
        var weights = (0 ..< n).map { Float($0) * 0.25 - 1 }
        weights[3] = -0.0
        let gradient = [Float](repeating: 0.5, count: n)
        weights.withUnsafeMutableBufferPointer { w in gradient.withUnsafeBufferPointer { optimizer.apply(gradient: $0, to: w, learningRate: 0.1) } }
        var broadcast = weights
        broadcast[0] = 0
        var projection = ProjectionState()
        projection.masks["mask"] = (0 ..< n).map { UInt8($0 % 3 == 0 ? 0 : 1) }
        projection.floats["dual"] = (0 ..< n).map { Float($0) }
        projection.integers["active"] = 1
        var ledger = RunLedger(examplesPerEpoch: 10)
        _ = ledger.record(step: 1, parts: [(0, [3, 1, 4, 0, 5, 9])])
        _ = ledger.record(step: 2, parts: [(0, [2, 6, 8, 7]), (1, [5, 1])])
        let state = TrainingState(step: 2, broadcast: broadcast, weights: weights, optimizer: optimizer, projection: projection,
                                  ledger: ledger, examplesSeen: 12, lastLoss: 0.75)
        var config = RunConfiguration()
        config.deterministic = true
        config.coordinator.globalBatch = 6   // step 2 ends at example 12: epoch 1, 2 examples in
        let context = TrainingState.Context(runID: "r", configYAML: config.yamlText(), fingerprint: MathsFingerprint(config: config, dataFingerprint: ""),
                                            layout: Self.layout, modelRecords: [], config: config, projectionName: "csp", examplesPerEpoch: 10)
        let bytes = state.checkpoint(context).encoded()
        let back = try Checkpoint(decoding: bytes, source: "mem")
        #expect(back.state.epoch == 1 && back.state.positionInEpoch == 2 && back.state.optimizerSteps == 1 && back.state.deterministic)
        let restored = try TrainingState.restore(from: back, layout: Self.layout, optimizer: OptimizerSettings(), examplesPerEpoch: 10)
        #expect(restored.weights.map(\.bitPattern) == weights.map(\.bitPattern))
        #expect(restored.broadcast.map(\.bitPattern) == broadcast.map(\.bitPattern))
        #expect(restored.optimizer.m == optimizer.m && restored.optimizer.v == optimizer.v && restored.optimizer.t == 1)
        #expect(restored.projection == projection)
        #expect(restored.ledger == ledger && restored.ledger.open.count == 1 && restored.ledger.completed.map(\.epoch) == [0])
        #expect(restored.step == 2 && restored.examplesSeen == 12 && restored.lastLoss == 0.75)
    }

    @Test func aMaskOfTheWrongSizeIsRefusedNamingTheRecord() throws {
        let n = Self.layout.totalCount
        let checkpoint = Checkpoint(step: 1, runID: "r", configYAML: "", mathsSettings: "seed = 1", records: [
            .init(name: "a.weight", shape: [3, 3], role: "param", values: [Float](repeating: 1, count: 9)),
            .init(name: "a.bias", shape: [4], role: "param", values: [Float](repeating: 1, count: 4)),
            .init(name: "all", shape: [n], role: "optimizer/m", values: [Float](repeating: 0, count: n)),
            .init(name: "all", shape: [n], role: "optimizer/v", values: [Float](repeating: 0, count: n)),
            .init(name: "mask", role: "pruning-mask", bytes: [0xFF]),   // 13 values need 2 bytes
            .init(name: "ledger", role: "ledger", bytes: []),
        ])
        let decoded = try Checkpoint(decoding: checkpoint.encoded(), source: "mem")
        do {
            _ = try TrainingState.restore(from: decoded, layout: Self.layout, optimizer: OptimizerSettings(), examplesPerEpoch: 10)
            Issue.record("a 1-byte mask for 13 parameters was accepted")
        } catch {
            #expect("\(error)".contains("pruning-mask/mask") && "\(error)".contains("2 bytes"), "\(error)")
        }
    }

    /// metrics.jsonl after a kill: lines past the checkpoint, and a torn last line, go.
    @Test func metricsLinesPastTheCheckpointAreDropped() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-metrics-\(UInt64.random(in: 0 ... .max)).jsonl")
        defer { try? FileManager.default.removeItem(at: url) }
        try "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n{\"step\":3,\"loss\":0.5}\n{\"step\":4,\"lo".write(to: url, atomically: true, encoding: .utf8)
        try truncateJSONLines(url, afterStep: 2)
        #expect(try String(contentsOf: url, encoding: .utf8) == "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n")
    }

    /// Ledger files after a kill: the open epoch is rewritten from the checkpoint's ledger (its
    /// lost lines go), later epochs' files are removed, completed ones are checked.
    @Test func ledgerFilesFollowTheCheckpoint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-ledger-\(UInt64.random(in: 0 ... .max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = LedgerFiles(folder: RunFolder(dir.path).ledgerFolder)
        var ledger = RunLedger(examplesPerEpoch: 4)
        let first = ledger.record(step: 1, parts: [(0, [2, 0, 3, 1])])
        let second = ledger.record(step: 2, parts: [(1, [1, 3])])
        try files.append(first.entries + second.entries)
        let saved = ledger
        // Applied after the checkpoint, then lost with the kill.
        let third = ledger.record(step: 3, parts: [(1, [0, 2])])
        let fourth = ledger.record(step: 4, parts: [(2, [3, 2])])
        try files.append(third.entries + fourth.entries)
        let problems = try files.restore(saved)
        #expect(problems.isEmpty, "\(problems)")
        #expect(try String(contentsOf: files.file(epoch: 1), encoding: .utf8) == "{\"step\":2,\"epoch\":1,\"examples\":[1,3]}\n")
        #expect(!FileManager.default.fileExists(atPath: files.file(epoch: 2).path))
        #expect(try String(contentsOf: files.file(epoch: 0), encoding: .utf8) == "{\"step\":1,\"epoch\":0,\"examples\":[2,0,3,1]}\n")
        try FileManager.default.removeItem(at: files.file(epoch: 0))
        #expect(try files.restore(saved).contains { $0.contains("epoch-0.jsonl is missing") })
    }
}
