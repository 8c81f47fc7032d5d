import Checkpoints
import Foundation
import Testing

/// An RNN transducer (`model.kind: rnnt`) trained by real coordinator and worker processes with
/// wanda pruning (input statistics from every matrix cross the wire) and dropout on the
/// transcriber's LSTM outputs (masks keyed by seed, epoch and example), and the main job's
/// auxiliary CTC head: stopped and resumed on another number of workers, it ends bit for bit
/// where a run without a stop ends; pruning leaves the training-only head dense; `eval` scores
/// it, `transcribe` decodes a file as `eval` does, and the export has torchaudio's part names
/// and not the head.
@Suite(.serialized, .timeLimit(.minutes(8)))
struct TransducerRunTests {
    @Test func transducerRunResumesExactlyAndDecodes() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus").path
        let synth = try Child(["data", "synth", "--out", corpus, "--utterances", "16", "--seed", "7"])
        let (synthStatus, _, synthErr) = await synth.wait(seconds: 120)
        try #require(synthStatus == 0, "synth: \(synthErr)")
        let prepare = try Child(["data", "prepare", "--manifest", "\(corpus)/train.jsonl", "--out", "\(corpus)/shards/train"])
        let (prepareStatus, _, prepareErr) = await prepare.wait(seconds: 60)
        try #require(prepareStatus == 0, "prepare: \(prepareErr)")

        let config = dir.appendingPathComponent("rnnt.yaml").path
        try """
        seed: 3
        deterministic: true
        model:
          kind: rnnt
          acoustic: {features: 80, conv_channels: 12, conv_layers: 2, lstm_hidden: 12, lstm_layers: 1, bidirectional: false}
          rnnt: {predictor_embedding: 6, predictor_hidden: 10, predictor_layers: 1, joint_dim: 12, ctc_weight: 0.3}
          dropout: 0.2
        data: {kind: speech, train: \(corpus)/shards/train}
        optimizer: {kind: adam, learning_rate: 0.003}
        pruning:
          method: wanda
          exclude: []
          schedule: {kind: one-shot, target: 0.5, start_step: 2}
        coordinator: {global_batch: 6, micro_batches: 2}
        checkpoint: {every_steps: 2, keep: 4}
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let reference = dir.appendingPathComponent("reference").path
        let a = try Child(["launch", "--workers", "2", "--steps", "6", "--run-dir", reference, "--config", config, "--json"])
        let (aStatus, aOut, aErr) = await a.wait(seconds: 180)
        try #require(aStatus == 0, "reference run: \(aErr)")
        let summary = try Summary.parse(aOut)
        #expect(summary.finalLoss?.isFinite == true && summary.steps == 6)

        let stopped = dir.appendingPathComponent("stopped").path
        let b = try Child(["launch", "--workers", "1", "--steps", "3", "--run-dir", stopped, "--config", config])
        let (bStatus, _, bErr) = await b.wait(seconds: 180)
        try #require(bStatus == 0, "first half: \(bErr)")
        let c = try Child(["launch", "--workers", "2", "--steps", "6", "--run-dir", stopped, "--resume"])
        let (cStatus, _, cErr) = await c.wait(seconds: 180)
        try #require(cStatus == 0, "resumed half: \(cErr)")
        let referenceCheckpoint = try CheckpointStore.load(#require(CheckpointStore(runDirectory: URL(fileURLWithPath: reference)).latestPath()))
        let resumed = try CheckpointStore.load(#require(CheckpointStore(runDirectory: URL(fileURLWithPath: stopped)).latestPath()))
        #expect(resumed.records == referenceCheckpoint.records)
        var head = false
        for record in referenceCheckpoint.records(role: "param") where record.name.hasSuffix("weight") {
            let zeros = Double(record.values.filter { $0 == 0 }.count) / Double(record.values.count)
            if record.name.hasPrefix("transcriber.ctc_linear.") {
                head = true
                #expect(zeros < 0.02, "the training-only CTC head was pruned: \(zeros) zeros")
            } else {
                #expect(abs(zeros - 0.5) < 0.02, "\(record.name): \(zeros) zeros")
            }
        }
        #expect(head, "no transcriber.ctc_linear.weight in the checkpoint")

        // eval scores it; transcribe decodes a file to the text eval decoded.
        let manifest = "\(corpus)/train.jsonl"
        let eval = try Child(["eval", "--checkpoint", reference, "--manifest", manifest, "--json"])
        let (evalStatus, evalOut, evalErr) = await eval.wait(seconds: 60)
        try #require(evalStatus == 0, "eval: \(evalErr)")
        let scored = try #require(try JSONSerialization.jsonObject(with: Data(evalOut.utf8)) as? [String: Any])
        let lines = try String(contentsOfFile: manifest, encoding: .utf8).split(separator: "\n").count
        #expect(scored["utterances"] as? Int == lines && lines > 0)
        let transcripts = try #require(scored["transcripts"] as? [[String: String]])
        let first = try #require(transcripts.first)
        let transcribe = try Child(["transcribe", try #require(first["audio"]), "--checkpoint", reference])
        let (transcribeStatus, transcribeOut, transcribeErr) = await transcribe.wait(seconds: 60)
        #expect(transcribeStatus == 0, "transcribe: \(transcribeErr)")
        #expect(transcribeOut.trimmingCharacters(in: .newlines) == first["text"])

        // The export: torchaudio.models.RNNT's parts, every matrix half zeros in the bitmask layout.
        let out = dir.appendingPathComponent("rnnt.safetensors").path
        let export = try Child(["checkpoint", "export", reference, "--out", out])
        let (exportStatus, _, exportErr) = await export.wait(seconds: 60)
        try #require(exportStatus == 0, "export: \(exportErr)")
        let header = try Self.safetensorsNames(out)
        for name in ["transcriber.conv.0.weight", "transcriber.lstm.weight_hh_l0", "transcriber.output_linear.weight",
                     "predictor.embedding.weight", "predictor.lstm_layers.0.x2g.weight", "predictor.lstm_layers.0.x2g.bias",
                     "predictor.lstm_layers.0.p2g.weight", "predictor.linear.weight", "joiner.linear.weight"] {
            #expect(header.contains(name), "\(name) not in \(header.sorted())")
        }
        #expect(!header.contains { $0.contains("ctc_linear") }, "the export carries the training-only head: \(header.sorted())")
    }

    /// The tensor names in a safetensors file's JSON header.
    static func safetensorsNames(_ path: String) throws -> Set<String> {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + length)) as? [String: Any])
        return Set(header.keys.filter { $0 != "__metadata__" })
    }
}
