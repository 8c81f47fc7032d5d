import ArgumentParser
import FileIO
import Foundation
import Logging
import Speech

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Make and prepare speech data.",
        subcommands: [Synth.self, Prepare.self]
    )

    struct Synth: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a spoken voice-command corpus with espeak-ng and flite.",
            discussion: """
            Writes OUT/train.jsonl, OUT/valid.jsonl and OUT/valid_channel.jsonl (NeMo-style manifests) with \
            WAV files, and with --test-utterances also OUT/test.jsonl and OUT/test_channel.jsonl, plus \
            OUT/styles.json (every utterance's engine, voice and style). Held-out sentences never occur in \
            training, and test shares none with validation; the _channel sets are the held-out sets through a \
            simulated room, telephone band, gain and noise. The training set is the same with or without a \
            test split.

            Recipe 2 (the default) speaks with espeak-ng and flite in the shares --engines gives, speeds and \
            pitches drawn from continuous ranges, half the utterances then through sox tempo and pitch \
            perturbation. Validation and test each hold out whole voices: flite's rms (validation) and slt \
            (test) while training hears kal16 and awb, and an espeak-ng accent and a tenth of its variants each. \
            Recipe 2 also writes OUT/valid_seen.jsonl: validation's sentences (never in training) spoken by \
            training voices in training styles. Scored beside valid (data.valid_seen), it separates what unseen \
            speakers cost from what unseen sentences cost. Needs espeak-ng, flite and sox (scripts/install-deps.sh).

            Recipe 1 is the espeak-ng corpus of the main job and the pruning sweeps up to issue 16, \
            reproduced as it was: every English voice and variant at five speeds and five pitches, with \
            held-out (voice, variant, speed, pitch) combinations.
            """
        )
        @Option(help: ArgumentHelp("Output folder.", valueName: "dir")) var out: String
        @Option(help: "Utterances to make (10% become validation).") var utterances = 6000
        @Option(help: "Test utterances to make in addition (0: no test split).") var testUtterances = 0
        @Option(help: "Recipe 2: valid_seen utterances (validation sentences, training voices) to make in addition (default: half the validation count; 0: none).")
        var validSeenUtterances: Int?
        @Option(help: "Seed for sentences, voices, styles and channel simulation.") var seed: UInt64 = 1
        @Option(help: ArgumentHelp("Corpus recipe: 2 (espeak-ng and flite, held-out voices) or 1 (espeak-ng style grid, as before issue 16).", valueName: "n"))
        var recipe = 2
        @Option(help: ArgumentHelp("Recipe 2: the engines' shares of the utterances (default espeak-ng=0.6,flite=0.4).", valueName: "engine=share,..."))
        var engines: String?
        @Option(help: ArgumentHelp("Command domain (templates and slots).", valueName: "file")) var domain: String?
        @Option(help: "Synthesizer processes at once.") var jobs = 2
        @Flag(help: "Print the report as one JSON object.") var json = false

        func validate() throws {
            guard testUtterances >= 0, utterances >= 1 else { throw ValidationError("--utterances must be at least 1 and --test-utterances at least 0") }
            guard CorpusRecipe(rawValue: recipe) != nil else { throw ValidationError("--recipe \(recipe): expected 1 or 2") }
            guard recipe != 1 || engines == nil else { throw ValidationError("--engines: recipe 1 speaks with espeak-ng only (use --recipe 2)") }
            guard recipe != 1 || (validSeenUtterances ?? 0) == 0 else { throw ValidationError("--valid-seen-utterances: recipe 1 is kept as it was, without a valid_seen split (use --recipe 2)") }
            guard (validSeenUtterances ?? 0) >= 0 else { throw ValidationError("--valid-seen-utterances must be at least 0") }
            do { _ = try engines.map { try EngineMix(parsing: $0) } } catch { throw ValidationError("\(error)") }
        }

        func run() throws {
            guard let domainFile = domain ?? Self.defaultDomain() else {
                throw ValidationError("cannot find Configs/voice-commands.txt: pass --domain FILE")
            }
            var options = CorpusSynth.Options(out: out, utterances: utterances, seed: seed, domainFile: domainFile)
            options.jobs = jobs
            options.testUtterances = testUtterances
            options.seenValidationUtterances = validSeenUtterances
            options.recipe = CorpusRecipe(rawValue: recipe)!
            if let engines { options.engines = try EngineMix(parsing: engines) }
            let progress = CountProgress(label: "synthesising", enabled: !json)
            let report = try CorpusSynth(options: options).synthesize { i, n in progress.tick(i, n) }
            progress.done()
            if json {
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.sortedKeys]
                try output(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                try output("""
                recipe \(report.recipe): \(report.train) training, \(report.valid) validation and \(report.test) test utterances (+ channel-degraded copies of validation and test)\(report.validSeen > 0 ? ", \(report.validSeen) valid_seen (validation sentences, training voices)" : "") in \(out)
                \(report.trainSentences) training / \(report.validSentences) validation / \(report.testSentences) test sentences\(report.voices.isEmpty ? "" : "; espeak-ng: \(report.voices.count) voices × \(report.variants.count + 1) variants")
                training audio: \(String(format: "%.0f", report.trainSeconds)) s
                """)
                for split in ["train", "valid", "test", "valid_seen"] {
                    guard let seconds = report.seconds[split] else { continue }
                    let parts = seconds.keys.sorted().map { "\($0) \(String(format: "%.2f", seconds[$0]! / 3600)) h" }
                    try output("  \(split): \(parts.joined(separator: ", "))")
                }
                for (split, voices) in report.ownVoices.sorted(by: { $0.key < $1.key }) where split != "train" {
                    try output("  voices only \(split) hears: \(voices.joined(separator: ", "))")
                }
                if !report.rejectedVariants.isEmpty {
                    try output("variants that do not change the voice (left out): \(report.rejectedVariants.joined(separator: ", "))")
                }
            }
        }

        static func defaultDomain() -> String? {
            let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            let candidates = ["Configs/voice-commands.txt",
                              exe.deletingLastPathComponent().appendingPathComponent("../../../Configs/voice-commands.txt").path,
                              exe.deletingLastPathComponent().appendingPathComponent("../../Configs/voice-commands.txt").path]
            return candidates.first { FileManager.default.fileExists(atPath: $0) }
        }
    }

    struct Prepare: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn a manifest or a LibriSpeech folder into shards for training.",
            discussion: "Unreadable audio and empty transcripts are skipped and listed with the reason (also in OUT/shards.json)."
        )
        @Option(help: ArgumentHelp("NeMo-style JSONL manifest.", valueName: "file")) var manifest: String?
        @Option(help: ArgumentHelp("LibriSpeech-layout folder.", valueName: "dir")) var librispeech: String?
        @Option(help: ArgumentHelp("Output folder.", valueName: "dir")) var out: String
        @Option(help: "Examples per shard file.") var shardSize = 1000
        @Flag(help: "Print the report as one JSON object.") var json = false

        func validate() throws {
            guard (manifest == nil) != (librispeech == nil) else { throw ValidationError("give exactly one of --manifest and --librispeech") }
        }

        func run() throws {
            let utterances = try manifest.map { try Manifest.read($0) } ?? LibriSpeech.read(librispeech!)
            let progress = CountProgress(label: "preparing", enabled: !json)
            let report = try Preparation.prepare(utterances, into: out, shardSize: shardSize) { i, n in progress.tick(i, n) }
            progress.done()
            if json {
                let object: [String: Any] = ["prepared": report.prepared, "skipped": report.skipped.count, "seconds": report.seconds,
                                             "skipped_files": report.skipped.map { ["file": $0.file, "reason": $0.reason] }]
                try output(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                try output("prepared \(report.prepared) utterances (\(String(format: "%.0f", report.seconds)) s of audio) into \(out); skipped \(report.skipped.count)")
                for s in report.skipped.prefix(20) { try output("  skipped \(s.file): \(s.reason)") }
                if report.skipped.count > 20 { try output("  ... and \(report.skipped.count - 20) more (see \(out)/shards.json)") }
            }
        }
    }
}

/// "label 1200/6000" on stderr, updated in place on a terminal, every 10% otherwise.
final class CountProgress: @unchecked Sendable {
    private let label: String
    private let enabled: Bool
    private let tty = isatty(STDERR_FILENO) == 1
    private let lock = NSLock()
    private var lastTenth = -1

    init(label: String, enabled: Bool) {
        self.label = label
        self.enabled = enabled
    }

    func tick(_ i: Int, _ n: Int) {
        guard enabled, n > 0 else { return }
        lock.lock()
        defer { lock.unlock() }
        if tty {
            if i % 50 == 0 { StandardError.write("\r\(label) \(i)/\(n)") }
        } else if i * 10 / n > lastTenth {
            lastTenth = i * 10 / n
            StandardError.write("\(label) \(i)/\(n)\n")
        }
    }

    func done() {
        if enabled, tty { StandardError.write("\r\u{1B}[K") }
    }
}
