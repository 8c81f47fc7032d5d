import ArgumentParser
import Checkpoints
import Configuration
import Foundation
import Tensors
import Models
import Runtime
import Speech
import Tasks

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a speech checkpoint: word and character error rates.",
        discussion: "Greedy decoding (CTC or RNN-T) unless --beam is given (CTC: prefix beam search; RNN-T: ESPnet's default beam search, after Graves 2012); no language model or lexicon. Any common sample rate, WAV or FLAC."
    )

    @Option(help: ArgumentHelp("Checkpoint file (or a run folder: its latest checkpoint).", valueName: "path"))
    var checkpoint: String
    @Option(help: ArgumentHelp("NeMo-style JSONL manifest.", valueName: "file")) var manifest: String?
    @Option(help: ArgumentHelp("LibriSpeech-layout folder.", valueName: "dir")) var librispeech: String?
    @Option(help: "Beam search with this many beams (1: greedy).") var beam = 1
    @Flag(help: "Print one JSON object with wer, cer, utterances, real_time_factor and each utterance's transcript.") var json = false

    func validate() throws {
        guard (manifest == nil) != (librispeech == nil) else { throw ValidationError("give exactly one of --manifest and --librispeech") }
        guard beam >= 1 else { throw ValidationError("--beam must be at least 1") }
    }

    func run() throws {
        BLASRuntime.useBestKernels()
        ProcessTuning.keepLargeBuffersMapped()
        let evaluator = try Self.loadEvaluator(checkpoint)
        var e = evaluator
        e.beam = beam
        let utterances = try manifest.map { try Manifest.read($0) } ?? LibriSpeech.read(librispeech!)
        let result = e.evaluate(utterances)
        if json {
            let object: [String: Any] = ["wer": result.rates.wer, "cer": result.rates.cer, "utterances": result.rates.utterances,
                                         "real_time_factor": result.realTimeFactor, "skipped": result.skipped.count,
                                         "audio_seconds": result.audioSeconds,
                                         "transcripts": result.hypotheses.map { ["audio": $0.audio, "text": $0.text] }]
            try output(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            try output(String(format: "WER %.2f%%  CER %.2f%%  utterances %d  real-time factor %.4f", 100 * result.rates.wer, 100 * result.rates.cer,
                         result.rates.utterances, result.realTimeFactor))
            for s in result.skipped.prefix(10) { try output("skipped \(s.file): \(s.reason)") }
        }
    }

    /// Builds an evaluator from everything the checkpoint carries.
    static func loadEvaluator(_ path: String) throws -> SpeechEvaluator {
        let url: URL
        do { url = try CheckpointStore.resolve(path) } catch { throw ValidationError("\(error)") }
        let checkpoint = try CheckpointStore.load(url)
        let config = try RunConfiguration.parse(yaml: checkpoint.configYAML, source: "\(url.path) (its configuration)")
        return try evaluator(checkpoint, config: config, url: url)
    }

    /// An evaluator from a loaded checkpoint and its parsed configuration.
    static func evaluator(_ checkpoint: Checkpoint, config: RunConfiguration, url: URL) throws -> SpeechEvaluator {
        guard config.model.kind == .ctc || config.model.kind == .rnnt else {
            throw ValidationError("\(url.path) is a \(config.model.kind.rawValue) model, not a speech (ctc or rnnt) model")
        }
        let network = try SpeechNetwork(model: config.model)
        let parameters = try checkpoint.flatValues(role: "param", layout: network.layout)
        guard let mean = checkpoint.record(named: "feature_mean", role: "normalization")?.values,
              let std = checkpoint.record(named: "feature_std", role: "normalization")?.values else {
            throw ValidationError("\(url.path) has no feature normalisation statistics")
        }
        return SpeechEvaluator(network: network, parameters: parameters, normalization: FeatureNormalization(mean: mean, std: std))
    }
}
