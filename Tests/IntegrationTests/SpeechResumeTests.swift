import Checkpoints
import Foundation
import Testing

/// The speech model with CSP pruning (dual variable, sparse Z, masks), augmentation and dropout on:
/// stopped and resumed on another number of workers, it ends bit for bit where a run without a
/// stop ends. Its checkpoint exports to safetensors that Python's `safetensors` loads, and a
/// numpy forward pass of the export gives the Swift model's logits.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct SpeechResumeTests {
    @Test func speechRunResumesExactlyAndExportsToNumpy() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus").path
        let synth = try Child(["data", "synth", "--out", corpus, "--utterances", "16", "--seed", "5"])
        let (synthStatus, _, synthErr) = await synth.wait(seconds: 120)
        try #require(synthStatus == 0, "synth: \(synthErr)")
        let prepare = try Child(["data", "prepare", "--manifest", "\(corpus)/train.jsonl", "--out", "\(corpus)/shards/train"])
        let (prepareStatus, _, prepareErr) = await prepare.wait(seconds: 60)
        try #require(prepareStatus == 0, "prepare: \(prepareErr)")

        let config = dir.appendingPathComponent("tiny.yaml").path
        try """
        seed: 2
        deterministic: true
        model:
          kind: ctc
          acoustic: {features: 80, conv_channels: 16, conv_layers: 2, lstm_hidden: 12, lstm_layers: 2, bidirectional: true}
          dropout: 0.2
        data: {kind: speech, train: \(corpus)/shards/train}
        optimizer: {kind: adam, learning_rate: 0.003}
        pruning:
          method: csp
          block: 64
          exclude: ["output.*"]
          schedule: {target: 0.6, start_step: 1, end_step: 4, interval: 1}
        coordinator: {global_batch: 6, micro_batches: 3}
        checkpoint: {every_steps: 2, keep: 4}
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let reference = dir.appendingPathComponent("reference").path
        let a = try Child(["launch", "--workers", "2", "--steps", "6", "--run-dir", reference, "--config", config])
        let (aStatus, _, aErr) = await a.wait(seconds: 180)
        try #require(aStatus == 0, "reference run: \(aErr)")

        // The same run stopped after 3 steps on 1 worker, resumed on 3 workers up to 6.
        let stopped = dir.appendingPathComponent("stopped").path
        let b = try Child(["launch", "--workers", "1", "--steps", "3", "--run-dir", stopped, "--config", config])
        let (bStatus, _, bErr) = await b.wait(seconds: 180)
        try #require(bStatus == 0, "first half: \(bErr)")
        let c = try Child(["launch", "--workers", "3", "--steps", "6", "--run-dir", stopped, "--resume", "--json"])
        let (cStatus, cOut, cErr) = await c.wait(seconds: 180)
        try #require(cStatus == 0, "resumed half: \(cErr)")
        #expect(try Summary.parse(cOut).startStep == 3)

        let referenceCheckpoint = try CheckpointStore.load(#require(CheckpointStore(runDirectory: URL(fileURLWithPath: reference)).latestPath()))
        let resumed = try CheckpointStore.load(#require(CheckpointStore(runDirectory: URL(fileURLWithPath: stopped)).latestPath()))
        for role in ["param", "master", "optimizer/m", "optimizer/v", "pruning", "pruning-mask", "ledger"] {
            #expect(!referenceCheckpoint.records(role: role).isEmpty, "no \(role) records")
        }
        #expect(resumed.records == referenceCheckpoint.records)
        let sparsity = referenceCheckpoint.records(role: "param").filter { $0.name.contains("weight_hh") }
            .map { r in Double(r.values.filter { $0 == 0 }.count) / Double(r.values.count) }
        #expect(sparsity.allSatisfy { abs($0 - 0.6) < 0.02 }, "LSTM weight sparsity \(sparsity)")

        // Export, both layouts, with the Swift model's logits on one utterance beside them.
        let relative = try #require(try String(contentsOfFile: "\(corpus)/train.jsonl", encoding: .utf8).split(separator: "\n").first
            .flatMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["audio_filepath"] as? String)
        let audio = relative.hasPrefix("/") ? relative : "\(corpus)/\(relative)"
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let script = root.appendingPathComponent("scripts/check-export.py").path
        // scripts/test.sh sets CSPTRAIN_PYTHON; `swift test` alone finds the environment it made.
        let made = root.appendingPathComponent(".build/pyenv/bin/python").path
        let python = ProcessInfo.processInfo.environment["CSPTRAIN_PYTHON"]
            ?? (FileManager.default.isExecutableFile(atPath: made) ? made : "python3")
        for layout in ["dense", "bitmask"] {
            let out = dir.appendingPathComponent("model-\(layout).safetensors").path
            let export = try Child(["checkpoint", "export", reference, "--format", "safetensors", "--out", out, "--layout", layout,
                                    "--reference", audio])
            let (exportStatus, _, exportErr) = await export.wait(seconds: 60)
            try #require(exportStatus == 0, "export \(layout): \(exportErr)")
            let info = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + ".reference.json"))) as? [String: Any])
            let frames = try #require(info["frames"] as? Int)
            let check = try Child(python: python, [script, "--model", out, "--features", out + ".reference.features.f32",
                                                 "--frames", "\(frames)", "--logits", out + ".reference.logits.f32"])
            let (status, stdout, stderr) = await check.wait(seconds: 120)
            #expect(status == 0, "check-export.py (\(layout)) with \(python): \(stdout) \(stderr) — scripts/test.sh installs numpy and safetensors into .build/pyenv and sets CSPTRAIN_PYTHON")
            let result = try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any]
            #expect(result?["ok"] as? Bool == true && result?["layout"] as? String == layout, "\(stdout)")
        }
    }
}
