import Foundation
import Speech
import Testing

/// `csptrain transcribe` against `eval` on the same files and checkpoint, and streamed PCM on
/// stdin against the whole file, with tiny models trained here (a few steps at a small learning
/// rate: the weights stay near their random start, so every utterance decodes to some text).
@Suite(.serialized, .timeLimit(.minutes(5)))
struct TranscribeTests {
    static func train(_ dir: URL, corpus: String, bidirectional: Bool, name: String, extra: String = "") async throws -> String {
        let config = dir.appendingPathComponent("\(name).yaml").path
        try """
        seed: 1
        steps: 2
        model:
          kind: ctc
          acoustic: {features: 80, conv_channels: 16, conv_layers: 2, lstm_hidden: 16, lstm_layers: 2, bidirectional: \(bidirectional)}
        data: {kind: speech, train: \(corpus)/shards/train}
        optimizer: {kind: adam, learning_rate: 0.0001}
        coordinator: {global_batch: 4, micro_batches: 2, eval_every_steps: 0}
        \(extra)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let run = dir.appendingPathComponent(name).path
        let launch = try Child(["launch", "--workers", "1", "--run-dir", run, "--config", config, "--json"])
        let (status, _, err) = await launch.wait(seconds: 120)
        #expect(status == 0, "launch: \(err)")
        return run
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
    }

    @Test func transcribePrintsWhatEvalDecodesAndStreamingMatchesWholeFiles() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus").path
        let synth = try Child(["data", "synth", "--out", corpus, "--utterances", "8", "--seed", "5"])
        #expect(await synth.wait(seconds: 120).status == 0)
        let prepare = try Child(["data", "prepare", "--manifest", "\(corpus)/train.jsonl", "--out", "\(corpus)/shards/train"])
        #expect(await prepare.wait(seconds: 60).status == 0)
        let run = try await Self.train(dir, corpus: corpus, bidirectional: false, name: "unidirectional")

        // The same files through eval and transcribe.
        let utterances = Array(try Manifest.read("\(corpus)/train.jsonl").prefix(4))
        let manifest = dir.appendingPathComponent("four.jsonl").path
        try utterances.map { "{\"audio_filepath\": \"\($0.audioPath)\", \"text\": \"\($0.text)\"}" }.joined(separator: "\n")
            .write(toFile: manifest, atomically: true, encoding: .utf8)
        let eval = try Child(["eval", "--checkpoint", run, "--manifest", manifest, "--json"])
        let (evalStatus, evalOut, evalErr) = await eval.wait(seconds: 60)
        #expect(evalStatus == 0, "eval: \(evalErr)")
        let evalTexts = try #require(try Self.json(evalOut)["transcripts"] as? [[String: String]]).map { $0["text"] ?? "?" }
        let files = utterances.map(\.audioPath)
        let transcribe = try Child(["transcribe"] + files + ["--checkpoint", run, "--json"])
        let (status, out, err) = await transcribe.wait(seconds: 60)
        #expect(status == 0, "transcribe: \(err)")
        let records = try #require(try Self.json(out)["transcripts"] as? [[String: Any]])
        #expect(records.compactMap { $0["audio"] as? String } == files)
        let texts = records.compactMap { $0["text"] as? String }
        #expect(texts == evalTexts)
        #expect(texts.contains { !$0.isEmpty }, "every transcript is empty: the comparison says nothing")
        // Dense products give the same text.
        let dense = try Child(["transcribe"] + files + ["--checkpoint", run, "--json", "--layouts", "dense"])
        let denseOut = await dense.wait(seconds: 60).stdout
        #expect(try #require(try Self.json(denseOut)["transcripts"] as? [[String: Any]]).compactMap { $0["text"] as? String } == texts)

        // PCM on stdin against the same samples as a 16 kHz file.
        for (i, file) in files.prefix(2).enumerated() {
            let samples = try AudioFile.read16k(file).samples.map { Float(Int16(max(-32768, min(32767, ($0 * 32768).rounded())))) / 32768 }
            let wav = dir.appendingPathComponent("pcm-\(i).wav").path
            try AudioFile.write(Audio(samples: samples, sampleRate: 16_000), to: wav)
            var pcm = Data()
            for s in samples { withUnsafeBytes(of: Int16(s * 32768).littleEndian) { pcm.append(contentsOf: $0) } }
            let whole = try Child(["transcribe", wav, "--checkpoint", run])
            let wholeText = await whole.wait(seconds: 60).stdout.trimmingCharacters(in: .newlines)
            let stream = try Child(["transcribe", "-", "--checkpoint", run, "--json"], stdin: pcm)
            let (streamStatus, streamOut, streamErr) = await stream.wait(seconds: 60)
            #expect(streamStatus == 0, "stream: \(streamErr)")
            let lines = try streamOut.split(separator: "\n").map { try Self.json(String($0)) }
            let final = try #require(lines.last)
            #expect(final["final"] as? Bool == true)
            #expect(final["text"] as? String == wholeText, "streamed \(final) against whole-file '\(wholeText)'")
            // Partial texts grow towards the final one.
            let partials = lines.dropLast().compactMap { $0["partial"] as? String }
            if !wholeText.isEmpty { #expect(!partials.isEmpty && partials.allSatisfy { wholeText.hasPrefix($0) }) }
        }

        // A bidirectional model transcribes files but refuses to stream, saying why.
        let bidirectional = try await Self.train(dir, corpus: corpus, bidirectional: true, name: "bidirectional")
        let refused = try Child(["transcribe", "-", "--checkpoint", bidirectional], stdin: Data(count: 3200))
        let (refusedStatus, _, refusedErr) = await refused.wait(seconds: 60)
        #expect(refusedStatus != 0)
        #expect(refusedErr.contains("bidirectional") && refusedErr.contains("unidirectional"), "stderr: \(refusedErr)")
        let fileRun = try Child(["transcribe", files[0], "--checkpoint", bidirectional])
        #expect(await fileRun.wait(seconds: 60).status == 0)

        // ONNX: the dense models and a low-rank one, run by onnxruntime against the Swift logits.
        let lowRank = try await Self.train(dir, corpus: corpus, bidirectional: false, name: "lowrank", extra: """
            pruning: {method: low-rank, exclude: ["conv.0.*", "output.*"], schedule: {kind: one-shot, target: 0.6, start_step: 0}}
            """)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let made = root.appendingPathComponent(".build/pyenv/bin/python").path
        let python = ProcessInfo.processInfo.environment["CSPTRAIN_PYTHON"] ?? (FileManager.default.isExecutableFile(atPath: made) ? made : "python3")
        for checkpoint in [run, bidirectional, lowRank] {
            let out = dir.appendingPathComponent(URL(fileURLWithPath: checkpoint).lastPathComponent + ".onnx").path
            let export = try Child(["checkpoint", "export", checkpoint, "--format", "onnx", "--out", out, "--reference", files[0]])
            let (exportStatus, _, exportErr) = await export.wait(seconds: 60)
            try #require(exportStatus == 0, "export onnx: \(exportErr)")
            if checkpoint == lowRank { #expect(exportErr.contains("as low-rank factors"), "\(exportErr)") }
            let check = try Child(python: python, [root.appendingPathComponent("scripts/check-onnx.py").path, "--model", out,
                                                 "--reference", out + ".reference.json"])
            let (status, stdout, stderr) = await check.wait(seconds: 120)
            #expect(status == 0, "check-onnx.py \(checkpoint) with \(python): \(stdout) \(stderr) — scripts/test.sh installs onnxruntime into .build/pyenv")
        }
        // The low-rank checkpoint transcribes as eval decodes it.
        let lowEval = try Child(["eval", "--checkpoint", lowRank, "--manifest", manifest, "--json"])
        let lowEvalTexts = try #require(try Self.json(await lowEval.wait(seconds: 60).stdout)["transcripts"] as? [[String: String]]).map { $0["text"] ?? "?" }
        let lowTranscribe = try Child(["transcribe"] + files + ["--checkpoint", lowRank, "--json"])
        let lowRecords = try #require(try Self.json(await lowTranscribe.wait(seconds: 60).stdout)["transcripts"] as? [[String: Any]])
        #expect(lowRecords.compactMap { $0["text"] as? String } == lowEvalTexts)
    }
}
