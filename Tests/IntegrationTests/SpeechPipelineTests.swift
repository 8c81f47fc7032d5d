import Foundation
import Speech
import Testing

/// The speech pipeline through the command line: synthesise a tiny corpus, prepare shards,
/// train a tiny model with two worker processes, score it on a manifest (22.05 kHz WAV) and on a
/// LibriSpeech-layout folder (16 kHz FLAC).
@Suite(.serialized, .timeLimit(.minutes(5)))
struct SpeechPipelineTests {
    @Test func synthPrepareTrainAndEvaluate() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus").path
        let synth = try Child(["data", "synth", "--out", corpus, "--utterances", "24", "--seed", "3", "--json"])
        let (synthStatus, synthOut, synthErr) = await synth.wait(seconds: 120)
        #expect(synthStatus == 0, "synth: \(synthErr)")
        let report = try JSONSerialization.jsonObject(with: Data(synthOut.utf8)) as? [String: Any]
        #expect(report?["train"] as? Int == 22 && report?["valid"] as? Int == 2 && report?["valid_seen"] as? Int == 1)

        for split in ["train", "valid", "valid_channel", "valid_seen"] {
            let prepare = try Child(["data", "prepare", "--manifest", "\(corpus)/\(split).jsonl", "--out", "\(corpus)/shards/\(split)", "--json"])
            let (status, out, err) = await prepare.wait(seconds: 60)
            #expect(status == 0, "prepare \(split): \(err)")
            let r = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
            #expect(r?["skipped"] as? Int == 0)
        }

        let config = dir.appendingPathComponent("tiny.yaml").path
        try """
        seed: 1
        steps: 4
        model:
          kind: ctc
          acoustic: {features: 80, conv_channels: 16, conv_layers: 2, lstm_hidden: 16, lstm_layers: 1, bidirectional: true}
        data: {kind: speech, train: \(corpus)/shards/train, valid: \(corpus)/shards/valid, valid_channel: \(corpus)/shards/valid_channel, valid_seen: \(corpus)/shards/valid_seen}
        optimizer: {kind: adam, learning_rate: 0.002}
        coordinator: {global_batch: 8, micro_batches: 4, eval_every_steps: 2, eval_examples: 2, eval_batch: 1}
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let runDir = dir.appendingPathComponent("run").path
        let launch = try Child(["launch", "--workers", "2", "--run-dir", runDir, "--config", config, "--json"])
        let (launchStatus, launchOut, launchErr) = await launch.wait(seconds: 120)
        #expect(launchStatus == 0, "launch: \(launchErr)")
        let summary = try Summary.parse(launchOut)
        #expect(summary.status == "completed" && summary.workersSeen == 2 && summary.steps == 4)
        // Validation ran on the workers at steps 2 and 4, on the three sets: held-out voices (clean,
        // channel-degraded) and training voices.
        #expect(summary.validWer != nil && summary.validWerChannel != nil && summary.validWerSeen != nil)
        let lines = try String(contentsOfFile: runDir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)
        let scored = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .filter { $0["valid_wer"] != nil && $0["valid_wer_channel"] != nil && $0["valid_wer_seen"] != nil }.compactMap { $0["step"] as? Int }
        #expect(scored == [2, 4])

        // Scored on the 22.05 kHz WAV manifest...
        let eval = try Child(["eval", "--checkpoint", runDir, "--manifest", "\(corpus)/valid.jsonl", "--json"])
        let (evalStatus, evalOut, evalErr) = await eval.wait(seconds: 60)
        #expect(evalStatus == 0, "eval: \(evalErr)")
        let scores = try #require(try JSONSerialization.jsonObject(with: Data(evalOut.utf8)) as? [String: Any])
        #expect(scores["utterances"] as? Int == 2)
        #expect((scores["wer"] as? Double).map { $0 >= 0 } == true && (scores["cer"] as? Double).map { $0 >= 0 && $0 <= 1.5 } == true)

        // ...and on the same utterances as 16 kHz FLAC in the LibriSpeech layout, with beam search.
        let chapter = dir.appendingPathComponent("libri/7/11").path
        try FileManager.default.createDirectory(atPath: chapter, withIntermediateDirectories: true)
        var transcript = ""
        for (i, u) in try Manifest.read("\(corpus)/valid.jsonl").enumerated() {
            let id = String(format: "7-11-%04d", i)
            try AudioFile.write(try AudioFile.read16k(u.audioPath), to: "\(chapter)/\(id).flac", format: .flac16)
            transcript += "\(id) \(u.text.uppercased())\n"
        }
        try transcript.write(toFile: "\(chapter)/7-11.trans.txt", atomically: true, encoding: .utf8)
        let libri = try Child(["eval", "--checkpoint", runDir, "--librispeech", dir.appendingPathComponent("libri").path, "--beam", "4", "--json"])
        let (libriStatus, libriOut, libriErr) = await libri.wait(seconds: 60)
        #expect(libriStatus == 0, "eval librispeech: \(libriErr)")
        let libriScores = try #require(try JSONSerialization.jsonObject(with: Data(libriOut.utf8)) as? [String: Any])
        #expect(libriScores["utterances"] as? Int == 2)

        // A worker whose training shards are another preparation leaves with a message naming the
        // mismatch; one reading a copy of the coordinator's shards trains. The run completes.
        let copy = dir.appendingPathComponent("copy-train").path, other = dir.appendingPathComponent("other-train").path
        try FileManager.default.copyItem(atPath: "\(corpus)/shards/train", toPath: copy)
        let otherPrepare = try Child(["data", "prepare", "--manifest", "\(corpus)/valid.jsonl", "--out", other])
        #expect(await otherPrepare.wait(seconds: 60).status == 0)
        let second = dir.appendingPathComponent("second").path
        let coordinator = try Child(["coordinator", "--listen", "tcp://127.0.0.1:0", "--run-dir", second, "--config", config,
                                     "--set", "coordinator.eval_every_steps=0", "--json"])
        let url = try await waitForFile(URL(fileURLWithPath: second + "/endpoint"))
        let wrong = try Child(["worker", "--connect", url, "--token-file", second + "/token", "--data", "train=" + other, "--patience", "30"])
        let (wrongStatus, _, wrongErr) = await wrong.wait(seconds: 60)
        #expect(wrongStatus != 0)
        #expect(wrongErr.contains("data differ from the coordinator's"), "stderr: \(wrongErr)")
        let right = try Child(["worker", "--connect", url, "--token-file", second + "/token", "--data", "train=" + copy, "--patience", "30"])
        let (coordinatorStatus, coordinatorOut, coordinatorErr) = await coordinator.wait(seconds: 90)
        #expect(coordinatorStatus == 0, "coordinator: \(coordinatorErr)")
        #expect(try Summary.parse(coordinatorOut).status == "completed")
        #expect(await right.wait(seconds: 30).status == 0)
    }

    @Test func evalNamesAFileItCannotRead() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let manifest = dir.appendingPathComponent("m.jsonl").path
        try "{\"audio_filepath\": \"missing.wav\", \"text\": \"x\"}\n".write(toFile: manifest, atomically: true, encoding: .utf8)
        let prepare = try Child(["data", "prepare", "--manifest", manifest, "--out", dir.appendingPathComponent("s").path])
        let (status, out, _) = await prepare.wait(seconds: 30)
        #expect(status == 0)
        #expect(out.contains("skipped 1") && out.contains("missing.wav"), "output: \(out)")
    }
}
