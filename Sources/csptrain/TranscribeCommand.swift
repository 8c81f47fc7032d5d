import ArgumentParser
import Checkpoints
import Configuration
import FileIO
import Foundation
import Inference
import Runtime
import Speech
import Tasks
import Tensors

#if canImport(Glibc)
import Glibc
#endif

struct TranscribeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transcribe",
        abstract: "Print the text of audio files (or of a live stream on stdin) with a speech checkpoint.",
        discussion: """
        Any WAV or FLAC file, any sample rate, mono or stereo, through the same front end as eval. \
        The model runs with sparse kernels: each weight matrix is packed as the checkpoint's zeros \
        allow (CSR, bitmask rows, N:M, low-rank factors) or dense where that measures faster.

        With `-` as the only file, reads signed 16-bit little-endian mono 16 kHz PCM from stdin and \
        prints a line `partial: TEXT` each time the text so far changes, then the final text when \
        stdin closes (with --json: one JSON object per line, the last with "final": true). Only a \
        unidirectional model can stream. An RNN-T checkpoint's whole files run dense (greedy or \
        --beam); streamed, its transcriber runs packed as above and decodes greedily.

        Example:  arecord -q -f S16_LE -r 16000 -c 1 | csptrain transcribe - --checkpoint runs/streaming
        """
    )

    @Argument(help: ArgumentHelp("Audio files, or - for PCM on stdin.", valueName: "audio"))
    var audio: [String]

    @Option(help: ArgumentHelp("Checkpoint file, or a run folder (its latest checkpoint). Default: the newest run under runs/ with a checkpoint.", valueName: "path"))
    var checkpoint: String?

    @Option(help: "Prefix beam search with this many beams (1: greedy).")
    var beam = 1

    @Option(help: "Weight layouts: automatic (fastest measured per matrix), dense, csr, bitmask.")
    var layouts = LayoutName.automatic

    @Flag(help: "Print one JSON object (files), or one per line (stdin).")
    var json = false

    enum LayoutName: String, ExpressibleByArgument, CaseIterable {
        case automatic, dense, csr, bitmask
        var choice: LayoutChoice {
            switch self {
            case .automatic: .automatic
            case .dense: .dense
            case .csr: .fixed(.csr)
            case .bitmask: .fixed(.bitmask)
            }
        }
    }

    func validate() throws {
        guard !audio.isEmpty else { throw ValidationError("give at least one audio file, or - to read PCM from stdin") }
        guard beam >= 1 else { throw ValidationError("--beam must be at least 1") }
        if audio.contains("-"), audio.count > 1 { throw ValidationError("- (PCM on stdin) cannot be mixed with files") }
    }

    func run() throws {
        BLASRuntime.useBestKernels()
        VectorMath.setThreadCount(1)
        let path = try checkpoint ?? Self.newestRun()
        let streaming = audio == ["-"]
        let loaded = try InferenceLoader.load(checkpoint: path)
        if case let .rnnt(transducer) = loaded.evaluator.network {
            guard streaming else {
                // Whole files through the training code's dense forward pass, greedy or beam search.
                var evaluator = loaded.evaluator
                evaluator.beam = beam
                let extractor = LogMelExtractor()
                return try files(layouts: [:]) { evaluator.transcribe(features: [evaluator.features($0, extractor: extractor)])[0] }
            }
            guard beam == 1 else { throw ValidationError("--beam \(beam): an RNN-T model streams with greedy search only; drop --beam, or give audio files") }
            var options = InferenceModel.Options()
            options.layouts = layouts.choice
            options.chunkFrames = 4
            var stream: TransducerStream
            do {
                stream = try TransducerStream(model: transducer, parameters: loaded.evaluator.parameters,
                                              normalization: loaded.evaluator.normalization, options: options)
            } catch { throw ValidationError("cannot stream: \(error)") }
            return try self.stream(&stream)
        }
        var recognizer = try InferenceLoader.recognizer(loaded, layouts: layouts.choice, batch: 1, chunkFrames: streaming ? 4 : 64)
        recognizer.beam = beam
        if streaming {
            var stream: TranscriptionStream
            do { stream = try TranscriptionStream(recognizer: recognizer) } catch { throw ValidationError("cannot stream: \(error)") }
            try self.stream(&stream)
        } else {
            try files(layouts: Dictionary(recognizer.model.layers.map { ($0.name, "\($0.layout)") }) { a, _ in a }) { recognizer.transcribe($0) }
        }
    }

    private func files(layouts: [String: String], transcribe: ([Float]) -> String) throws {
        var records: [[String: Any]] = []
        var audioSeconds = 0.0, computeSeconds = 0.0
        let clock = ContinuousClock()
        for file in audio {
            let samples: Audio
            do { samples = try AudioFile.read16k(file) } catch { throw ValidationError("\(error)") }
            let start = clock.now
            let text = transcribe(samples.samples)
            let d = clock.now - start
            computeSeconds += Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
            audioSeconds += samples.seconds
            records.append(["audio": file, "text": text, "seconds": samples.seconds])
            if !json { try output(audio.count == 1 ? text : "\(file)\t\(text)") }
        }
        if json {
            let object: [String: Any] = ["transcripts": records, "audio_seconds": audioSeconds,
                                         "real_time_factor": audioSeconds > 0 ? computeSeconds / audioSeconds : 0,
                                         "layouts": layouts]
            try printJSON(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        }
    }

    private func stream(_ stream: inout some SpeechStream) throws {
        var buffer = [UInt8](repeating: 0, count: 3200)   // 100 ms
        var carry: UInt8?
        var samples = 0
        func emit(_ text: String, final: Bool) throws {
            if json {
                var object: [String: Any] = ["audio_seconds": Double(samples) / 16_000]
                object[final ? "text" : "partial"] = text
                if final { object["final"] = true }
                try output(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                try output(final ? text : "partial: \(text)")
            }
        }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ValidationError("reading PCM from stdin failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            var bytes = Array(buffer[0 ..< n])
            if let c = carry { bytes.insert(c, at: 0); carry = nil }
            if bytes.count % 2 == 1 { carry = bytes.removeLast() }
            var chunk = [Float](repeating: 0, count: bytes.count / 2)
            for i in chunk.indices {
                chunk[i] = Float(Int16(bitPattern: UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8)) / 32768
            }
            samples += chunk.count
            if let partial = stream.push(chunk) { try emit(partial, final: false) }
        }
        try emit(stream.finish(), final: true)
    }

    /// The newest run folder under runs/ whose checkpoints/latest exists.
    static func newestRun() throws -> String {
        let runs = URL(fileURLWithPath: "runs")
        let folders = (try? FileManager.default.contentsOfDirectory(at: runs, includingPropertiesForKeys: nil)) ?? []
        let dated = folders.compactMap { folder -> (String, Date)? in
            let latest = folder.appendingPathComponent("checkpoints/latest")
            guard let date = (try? FileManager.default.attributesOfItem(atPath: latest.path))?[.modificationDate] as? Date else { return nil }
            return (folder.path, date)
        }
        guard let newest = dated.max(by: { $0.1 < $1.1 }) else {
            throw ValidationError("no --checkpoint given and no run under runs/ has a checkpoint: train one (scripts/run-local.sh) or pass --checkpoint RUN_DIR|FILE")
        }
        StandardError.write("transcribe: using \(newest.0) (the newest run with a checkpoint)\n")
        return newest.0
    }
}

/// A checkpoint as a Recognizer: the model, weights and feature statistics `eval` uses, packed.
enum InferenceLoader {
    struct Loaded {
        let url: URL
        let checkpoint: Checkpoint
        let evaluator: SpeechEvaluator
    }

    static func load(checkpoint path: String) throws -> Loaded {
        let url: URL
        do { url = try CheckpointStore.resolve(path) } catch { throw ValidationError("\(error)") }
        let checkpoint = try CheckpointStore.load(url)
        let config = try RunConfiguration.parse(yaml: checkpoint.configYAML, source: "\(url.path) (its configuration)")
        return Loaded(url: url, checkpoint: checkpoint, evaluator: try EvalCommand.evaluator(checkpoint, config: config, url: url))
    }

    /// A CTC checkpoint's model packed for sparse inference.
    static func recognizer(_ loaded: Loaded, layouts: LayoutChoice, batch: Int, chunkFrames: Int) throws -> Recognizer {
        let checkpoint = loaded.checkpoint, evaluator = loaded.evaluator, url = loaded.url
        var options = InferenceModel.Options()
        options.layouts = layouts
        options.batch = batch
        options.chunkFrames = chunkFrames
        // A low-rank run stores each factored tensor's rank in its pruning state.
        for (key, rank) in checkpoint.state.projectionIntegers where key.hasPrefix("rank/") && rank > 0 {
            options.ranks[String(key.dropFirst("rank/".count))] = Int(rank)
        }
        guard let acoustic = evaluator.model else { throw ValidationError("\(url.path) is an RNN-T model: sparse inference packs CTC models only") }
        let model = InferenceModel(model: acoustic, parameters: evaluator.parameters, options: options)
        return Recognizer(model: model, normalization: evaluator.normalization)
    }
}
