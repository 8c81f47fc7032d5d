import Foundation
import Tensors

/// The voice-assistant command domain: sentence templates with {slot} names and slot values
/// (Configs/voice-commands.txt).
public struct CommandDomain: Sendable {
    public let templates: [String]
    public let slots: [String: [String]]

    public init(file: String) throws {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw DatasetError(file: file, line: nil, message: "cannot read the command domain")
        }
        var templates: [String] = [], slots: [String: [String]] = [:]
        var section = ""
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("## ") { section = String(line.dropFirst(3)); continue }
            if line.isEmpty || line.hasPrefix("#") { continue }
            switch section {
            case "templates": templates.append(line)
            case "slots":
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { throw DatasetError(file: file, line: n + 1, message: "expected 'slot: value | value'") }
                slots[parts[0].trimmingCharacters(in: .whitespaces)] = parts[1].split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            default:
                throw DatasetError(file: file, line: n + 1, message: "text outside the '## templates' and '## slots' sections")
            }
        }
        for t in templates {
            for slot in Self.slotNames(t) where slots[slot] == nil {
                throw DatasetError(file: file, line: nil, message: "template '\(t)' uses {\(slot)}, which has no values")
            }
        }
        self.templates = templates
        self.slots = slots
    }

    static func slotNames(_ template: String) -> [String] {
        var names: [String] = []
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            names.append(String(rest[rest.index(after: open) ..< close]))
            rest = rest[rest.index(after: close)...]
        }
        return names
    }

    /// Every sentence the domain can produce, in a fixed order.
    public func allSentences() -> [String] {
        var out: [String] = []
        for t in templates {
            var partial = [t]
            for slot in Self.slotNames(t) {
                partial = partial.flatMap { s in slots[slot]!.map { s.replacingOccurrences(of: "{\(slot)}", with: $0, options: [], range: s.range(of: "{\(slot)}")) } }
            }
            out += partial.map(Transcript.normalize)
        }
        return Array(Set(out)).sorted()
    }
}

/// How the built-in corpus is spoken.
public struct SpeakerStyle: Hashable, Sendable, Codable {
    public var voice: String
    /// An espeak-ng voice variant (a file under `!v/`), or "" for the voice's own.
    public var variant: String
    /// Words per minute.
    public var speed: Int
    /// 0–99.
    public var pitch: Int

    public var espeakVoice: String { variant.isEmpty ? voice : "\(voice)+\(variant)" }
}

/// `csptrain data synth`: a spoken corpus made with espeak-ng.
///
/// Split: held-out sentences and held-out speaker styles (voice, variant, speed, pitch) never
/// occur in training. Sentences are held out by a seeded shuffle; a style is held out when a hash
/// of it falls in the held-out fraction. The held-out sentences and styles are then divided
/// between validation (for tuning) and test (for the final score), alternately for sentences and
/// by the lower and upper half of the hash band for styles, so the test set shares neither
/// sentences nor styles with training or validation. Training utterances do not depend on
/// whether a test split is made: the same seed gives the same training set either way. A
/// channel-degraded copy of each held-out set is made by
/// ``Augmentation/degradeChannel(_:sampleRate:rng:)``.
public struct CorpusSynth: Sendable {
    public struct Options: Sendable {
        public var out: String
        public var utterances: Int
        public var seed: UInt64
        public var domainFile: String
        public var validationFraction = 0.1
        /// Test utterances, made in addition to `utterances` (0: no test split, and validation
        /// takes all held-out sentences and styles).
        public var testUtterances = 0
        public var speeds = [130, 150, 170, 190, 210]
        public var pitches = [25, 40, 55, 70, 85]
        public var espeak = "espeak-ng"
        public var jobs = 2
        public init(out: String, utterances: Int, seed: UInt64, domainFile: String) {
            self.out = out
            self.utterances = utterances
            self.seed = seed
            self.domainFile = domainFile
        }
    }

    public struct Report: Codable, Sendable {
        public var train = 0
        public var valid = 0
        public var validChannel = 0
        public var test = 0
        public var testChannel = 0
        public var testSentences = 0
        public var voices: [String] = []
        public var variants: [String] = []
        public var rejectedVariants: [String] = []
        public var trainSentences = 0
        public var validSentences = 0
        public var trainSeconds = 0.0
    }

    let options: Options
    public init(options: Options) {
        var o = options
        o.out = URL(fileURLWithPath: options.out).standardizedFileURL.path
        self.options = o
    }

    /// English voices of espeak-ng's own (not mbrola, which needs extra data).
    public func englishVoices() throws -> [String] {
        let listing = try run([options.espeak, "--voices=en"])
        var voices: [String] = []
        for line in listing.split(separator: "\n").dropFirst() {
            let cols = line.split(separator: " ", omittingEmptySubsequences: true)
            guard cols.count >= 5, cols[4].hasPrefix("gmw/") else { continue }
            voices.append(String(cols[1]))
        }
        return Array(Set(voices)).sorted()
    }

    /// Variant names from espeak-ng's data folder (`voices/!v`).
    public func variantNames() throws -> [String] {
        let dataPath = try run([options.espeak, "--version"]).components(separatedBy: "Data at: ").last?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "/usr/lib/x86_64-linux-gnu/espeak-ng-data"
        let folder = dataPath + "/voices/!v"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { !$0.contains(" ") }.sorted()
    }

    /// Renders `text` to samples (espeak-ng writes 22.05 kHz WAV).
    public func speak(_ text: String, style: SpeakerStyle, to path: String) throws {
        _ = try run([options.espeak, "-v", style.espeakVoice, "-s", String(style.speed), "-p", String(style.pitch), "-w", path, text])
        // espeak-ng exits 0 even when it cannot create the file.
        guard FileManager.default.fileExists(atPath: path) else {
            throw DatasetError(file: path, line: nil, message: "espeak-ng wrote no audio (is the folder writable?)")
        }
    }

    /// Variants that really change the voice: a misspelt variant silently falls back to the
    /// plain voice, so each is compared with the plain rendering of a probe sentence.
    public func workingVariants(_ variants: [String], voice: String, scratch: String) throws -> (working: [String], rejected: [String]) {
        let probe = "set a timer for five minutes"
        let plainPath = scratch + "/probe-plain.wav"
        try speak(probe, style: SpeakerStyle(voice: voice, variant: "", speed: 170, pitch: 50), to: plainPath)
        let plain = try AudioFile.read(plainPath).samples
        var working: [String] = [], rejected: [String] = []
        for v in variants {
            let path = scratch + "/probe-\(v).wav"
            try speak(probe, style: SpeakerStyle(voice: voice, variant: v, speed: 170, pitch: 50), to: path)
            let samples = try AudioFile.read(path).samples
            if samples == plain { rejected.append(v) } else { working.append(v) }
        }
        return (working, rejected)
    }

    public func synthesize(progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> Report {
        let fm = FileManager.default
        let folders = ["train", "valid", "valid-channel", ".probe"] + (options.testUtterances > 0 ? ["test", "test-channel"] : [])
        for sub in folders {
            try fm.createDirectory(atPath: options.out + "/" + sub, withIntermediateDirectories: true)
        }
        var report = Report()
        let domain = try CommandDomain(file: options.domainFile)
        let voices = try englishVoices()
        guard !voices.isEmpty else { throw DatasetError(file: options.espeak, line: nil, message: "espeak-ng lists no English voices") }
        let (variants, rejected) = try workingVariants(try variantNames(), voice: voices[0], scratch: options.out + "/.probe")
        try? fm.removeItem(atPath: options.out + "/.probe")
        report.voices = voices
        report.variants = variants
        report.rejectedVariants = rejected

        // Sentence split.
        var sentences = domain.allSentences()
        var rng = SeededRandom(options.seed, 0x53594E)
        for i in stride(from: sentences.count - 1, to: 0, by: -1) { sentences.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        let heldOut = max(1, Int(Double(sentences.count) * options.validationFraction))
        let trainSentences = Array(sentences[heldOut...])
        let makeTest = options.testUtterances > 0
        var validSentences = Array(sentences[..<heldOut]), testSentences: [String] = []
        if makeTest {
            validSentences = stride(from: 0, to: heldOut, by: 2).map { sentences[$0] }
            testSentences = stride(from: 1, to: heldOut, by: 2).map { sentences[$0] }
        }
        report.trainSentences = trainSentences.count
        report.validSentences = validSentences.count
        report.testSentences = testSentences.count

        // Style split by hash.
        let seed = options.seed, fraction = options.validationFraction
        func styleSplit(_ s: SpeakerStyle) -> String {
            var h: UInt64 = seed
            for byte in "\(s.voice)|\(s.variant)|\(s.speed)|\(s.pitch)".utf8 { h = SeededRandom.mix(h ^ UInt64(byte)) }
            let u = Double(h % 10_000) / 10_000
            if u >= fraction { return "train" }
            return makeTest && u >= fraction / 2 ? "test" : "valid"
        }
        let variantChoices = [""] + variants
        func drawStyle(split: String, rng: inout SeededRandom) throws -> SpeakerStyle {
            for _ in 0 ..< 100_000 {
                let s = SpeakerStyle(voice: voices[Int(rng.next() % UInt64(voices.count))],
                                     variant: variantChoices[Int(rng.next() % UInt64(variantChoices.count))],
                                     speed: options.speeds[Int(rng.next() % UInt64(options.speeds.count))],
                                     pitch: options.pitches[Int(rng.next() % UInt64(options.pitches.count))])
                if styleSplit(s) == split { return s }
            }
            throw DatasetError(file: options.domainFile, line: nil,
                               message: "no \(split) speaker style exists with \(voices.count) voices and \(variantChoices.count) variants: add voices, speeds or pitches")
        }
        guard !trainSentences.isEmpty, !validSentences.isEmpty, !makeTest || !testSentences.isEmpty else {
            throw DatasetError(file: options.domainFile, line: nil, message: "the domain has \(sentences.count) sentences: too few to hold some out for validation\(makeTest ? " and test" : "")")
        }

        struct Job: Sendable { let index: Int; let split: String; let text: String; let style: SpeakerStyle }
        let validCount = max(1, Int(Double(options.utterances) * options.validationFraction))
        var jobs: [Job] = []
        // Test utterances follow the others, so the training ones keep their indices and draws.
        for i in 0 ..< options.utterances + options.testUtterances {
            let split = i >= options.utterances ? "test" : i < validCount ? "valid" : "train"
            var r = SeededRandom(options.seed, 0x5554, UInt64(i))
            let pool = split == "test" ? testSentences : split == "valid" ? validSentences : trainSentences
            let text = pool[Int(r.next() % UInt64(pool.count))]
            jobs.append(Job(index: i, split: split, text: text, style: try drawStyle(split: split, rng: &r)))
        }

        // Render with a few espeak-ng processes at once.
        let failures = ResultBox()
        let allJobs = jobs
        DispatchQueue.concurrentPerform(iterations: max(1, options.jobs)) { lane in
            for job in allJobs where job.index % max(1, options.jobs) == lane {
                let path = "\(options.out)/\(job.split)/\(job.split)-\(String(format: "%06d", job.index)).wav"
                do { try speak(job.text, style: job.style, to: path) } catch { failures.add("\(path): \(error)") }
                progress(job.index, allJobs.count)
            }
        }
        if let first = failures.first { throw DatasetError(file: options.espeak, line: nil, message: "synthesis failed: \(first)") }

        var sets: [String: [Utterance]] = [:]
        for job in jobs {
            let path = "\(options.out)/\(job.split)/\(job.split)-\(String(format: "%06d", job.index)).wav"
            let audio = try AudioFile.read(path)
            sets[job.split, default: []].append(Utterance(audioPath: path, text: job.text, duration: audio.seconds))
            if job.split == "train" {
                report.trainSeconds += audio.seconds
            } else {
                var r = SeededRandom(options.seed, 0x4348414E, UInt64(job.index))
                let degraded = Augmentation.degradeChannel(audio.samples, sampleRate: audio.sampleRate, rng: &r)
                let channelPath = "\(options.out)/\(job.split)-channel/\(job.split)-channel-\(String(format: "%06d", job.index)).wav"
                try AudioFile.write(Audio(samples: degraded, sampleRate: audio.sampleRate), to: channelPath)
                sets[job.split + "_channel", default: []].append(Utterance(audioPath: channelPath, text: job.text, duration: audio.seconds))
            }
        }
        let names = makeTest ? ["train", "valid", "valid_channel", "test", "test_channel"] : ["train", "valid", "valid_channel"]
        for name in names { try Manifest.write(sets[name] ?? [], to: "\(options.out)/\(name).jsonl") }
        report.train = sets["train"]?.count ?? 0
        report.valid = sets["valid"]?.count ?? 0
        report.validChannel = sets["valid_channel"]?.count ?? 0
        report.test = sets["test"]?.count ?? 0
        report.testChannel = sets["test_channel"]?.count ?? 0
        // The styles used, so the split can be audited.
        let styles = jobs.map { ["split": $0.split, "voice": $0.style.espeakVoice, "speed": String($0.style.speed), "pitch": String($0.style.pitch), "text": $0.text] }
        let data = try JSONSerialization.data(withJSONObject: ["seed": options.seed, "utterances": styles], options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: options.out + "/styles.json"))
        return report
    }

    private func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe(), errors = Pipe()
        process.standardOutput = pipe
        process.standardError = errors
        do { try process.run() } catch {
            throw DatasetError(file: arguments[0], line: nil, message: "cannot run \(arguments[0]): is espeak-ng installed? (apt-get install espeak-ng)")
        }
        // Drain stderr concurrently, so a chatty child cannot block on a full pipe.
        let errBox = ResultBox()
        let drain = Thread {
            do { errBox.add(String(decoding: try errors.fileHandleForReading.readToEnd() ?? Data(), as: UTF8.self)) } catch {
                errBox.add("(cannot read its standard error: \(error))")
            }
        }
        drain.start()
        let out: Data
        do { out = try pipe.fileHandleForReading.readToEnd() ?? Data() } catch {
            process.waitUntilExit()
            throw DatasetError(file: arguments[0], line: nil, message: "cannot read the output of \(arguments.joined(separator: " ")): \(error)")
        }
        process.waitUntilExit()
        while errBox.first == nil { usleep(1000) }
        let err = Data((errBox.first ?? "").utf8)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw DatasetError(file: arguments[0], line: nil, message: "\(arguments.joined(separator: " ")) failed: \(String(decoding: err, as: UTF8.self))")
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Collects failures from concurrent lanes.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func add(_ m: String) { lock.lock(); messages.append(m); lock.unlock() }
    var first: String? { lock.lock(); defer { lock.unlock() }; return messages.first }
}
