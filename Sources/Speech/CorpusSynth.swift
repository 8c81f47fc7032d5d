import Foundation
import Tensors

/// How recipe 1 speaks an utterance: an espeak-ng voice, variant, speed and pitch from a grid.
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

/// `csptrain data synth`: a spoken corpus of the voice-command domain.
///
/// Sentences are held out by a seeded shuffle and divided between validation (for tuning) and
/// test (for the final score) alternately, so neither shares a sentence with training or with
/// the other. Speakers are held out as the recipe says: recipe 1 (``CorpusRecipe/espeakGrid``)
/// holds out (voice, variant, speed, pitch) combinations by a hash; recipe 2
/// (``CorpusRecipe/multiEngine``) holds out whole voices of each engine (``VoiceSplit``) and
/// draws styles from continuous ranges (``MultiEngineRecipe``). Every utterance's draws come from
/// a stream keyed by the seed and its index, and test utterances follow the others, so the
/// training set is the same with or without a test split. A channel-degraded copy of each
/// held-out set is made by ``Augmentation/degradeChannel(_:sampleRate:rng:)``. Recipe 2 also
/// makes `valid_seen`: validation's sentences spoken by training voices in training styles, so
/// a run can tell what unseen speakers cost from what unseen sentences cost.
public struct CorpusSynth: Sendable {
    public struct Options: Sendable {
        public var out: String
        public var utterances: Int
        public var seed: UInt64
        public var domainFile: String
        public var recipe = CorpusRecipe.multiEngine
        public var validationFraction = 0.1
        /// Test utterances, made in addition to `utterances` (0: no test split, and validation
        /// takes all held-out sentences and speakers).
        public var testUtterances = 0
        /// Recipe 2: `valid_seen` utterances (validation sentences, training voices and styles),
        /// made after the others so that no other split changes. nil: half as many as validation
        /// (at least 1); recipe 1 makes none.
        public var seenValidationUtterances: Int?
        /// Recipe 1's grid.
        public var speeds = [130, 150, 170, 190, 210]
        public var pitches = [25, 40, 55, 70, 85]
        /// Recipe 2: the engines' shares, flite's voices per split, how many espeak-ng accents and
        /// what fraction of its variants validation and test each hold out, and the style ranges.
        public var engines = EngineMix.standard
        public var flite = FliteSplit()
        public var heldOutAccents = 1
        public var heldOutVariantFraction = 0.1
        public var ranges = StyleRanges()
        public var tools = VoiceTools()
        public var jobs = 2
        public init(out: String, utterances: Int, seed: UInt64, domainFile: String) {
            self.out = out
            self.utterances = utterances
            self.seed = seed
            self.domainFile = domainFile
        }
    }

    public struct Report: Codable, Sendable {
        public var recipe = 1
        public var train = 0
        public var valid = 0
        public var validChannel = 0
        /// Recipe 2: validation sentences spoken by training voices.
        public var validSeen = 0
        public var test = 0
        public var testChannel = 0
        public var testSentences = 0
        public var voices: [String] = []
        public var variants: [String] = []
        public var rejectedVariants: [String] = []
        public var trainSentences = 0
        public var validSentences = 0
        public var trainSeconds = 0.0
        /// Seconds of clean audio per split, by engine ("flite") and by engine and voice
        /// ("flite:awb", "espeak-ng:en-us"; espeak-ng's variants are in styles.json).
        public var seconds: [String: [String: Double]] = [:]
        /// Recipe 2: each split's own voices ("espeak-ng:en-029", "espeak-ng:+f3", "flite:rms").
        public var ownVoices: [String: [String]] = [:]
    }

    struct Job: Sendable { let index: Int; let split: CorpusSplit; let text: String; let rendering: Rendering }

    let options: Options
    public init(options: Options) {
        var o = options
        o.out = URL(fileURLWithPath: options.out).standardizedFileURL.path
        self.options = o
    }

    /// Renders `text` as recipe 1 does (espeak-ng writes 22.05 kHz WAV).
    public func speak(_ text: String, style: SpeakerStyle, to path: String) throws {
        try options.tools.espeak(text, voice: style.espeakVoice, speed: style.speed, pitch: style.pitch, to: path)
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

    /// Renders one utterance: the engine, then sox when the rendering asks for it.
    func render(_ job: Job, to path: String) throws {
        let r = job.rendering, tools = options.tools
        let raw = r.tempo == nil ? path : path + ".engine.wav"
        switch r.engine {
        case .espeakNG: try tools.espeak(job.text, voice: r.engineVoice, speed: Int(r.speed), pitch: Int(r.pitch), to: raw)
        case .flite: try tools.flite(job.text, voice: r.voice, stretch: r.speedText, f0: r.pitchText, to: raw)
        }
        if raw != path {
            try tools.perturb(raw, to: path, tempo: r.tempoText, cents: r.centsText)
            try FileManager.default.removeItem(atPath: raw)
        }
    }

    /// `valid_seen` utterances this corpus makes.
    var seenValidationCount: Int {
        guard options.recipe == .multiEngine else { return 0 }
        return options.seenValidationUtterances ?? max(1, validationCount / 2)
    }

    var validationCount: Int { max(1, Int(Double(options.utterances) * options.validationFraction)) }

    public func synthesize(progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> Report {
        let fm = FileManager.default
        let makeTest = options.testUtterances > 0
        if options.recipe == .espeakGrid, let n = options.seenValidationUtterances, n > 0 {
            throw DatasetError(file: options.out, line: nil, message: "recipe 1 is kept as it was and has no valid_seen split (asked for \(n) utterances): use recipe 2")
        }
        let makeSeen = seenValidationCount > 0
        let folders = ["train", "valid", "valid-channel", ".probe"] + (makeTest ? ["test", "test-channel"] : []) + (makeSeen ? ["valid_seen"] : [])
        for sub in folders {
            try fm.createDirectory(atPath: options.out + "/" + sub, withIntermediateDirectories: true)
        }
        var report = Report()
        report.recipe = options.recipe.rawValue
        let domain = try CommandDomain(file: options.domainFile)
        let usesEspeak = options.recipe == .espeakGrid || options.engines.engines.contains(.espeakNG)
        if usesEspeak {
            let voices = try options.tools.englishVoices()
            guard !voices.isEmpty else {
                throw DatasetError(file: options.tools.espeak, line: nil, message: "espeak-ng lists no English voices (apt-get install espeak-ng)")
            }
            let (variants, rejected) = try workingVariants(try options.tools.variantNames(), voice: voices[0], scratch: options.out + "/.probe")
            report.voices = voices
            report.variants = variants
            report.rejectedVariants = rejected
        }
        try? fm.removeItem(atPath: options.out + "/.probe")

        // Sentence split.
        var sentences = domain.allSentences()
        var rng = SeededRandom(options.seed, 0x53594E)
        for i in stride(from: sentences.count - 1, to: 0, by: -1) { sentences.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        let heldOut = max(1, Int(Double(sentences.count) * options.validationFraction))
        var pools: [CorpusSplit: [String]] = [.train: Array(sentences[heldOut...]), .valid: Array(sentences[..<heldOut])]
        if makeTest {
            pools[.valid] = stride(from: 0, to: heldOut, by: 2).map { sentences[$0] }
            pools[.test] = stride(from: 1, to: heldOut, by: 2).map { sentences[$0] }
        }
        // valid_seen speaks validation's sentences (never trained on) with training's voices.
        if makeSeen { pools[.validSeen] = pools[.valid] }
        report.trainSentences = pools[.train]!.count
        report.validSentences = pools[.valid]!.count
        report.testSentences = pools[.test]?.count ?? 0
        guard !pools[.train]!.isEmpty, !pools[.valid]!.isEmpty, !makeTest || !pools[.test]!.isEmpty else {
            throw DatasetError(file: options.domainFile, line: nil, message: "the domain has \(sentences.count) sentences: too few to hold some out for validation\(makeTest ? " and test" : "")")
        }

        let jobs: [Job]
        var extra: [String: Any] = [:]
        switch options.recipe {
        case .espeakGrid:
            jobs = try gridJobs(sentences: pools, voices: report.voices, variants: report.variants)
        case .multiEngine:
            let split = try VoiceSplit(accents: report.voices, variants: usesEspeak ? [""] + report.variants : [],
                                       flite: options.flite, seed: options.seed, heldOutAccents: options.heldOutAccents,
                                       heldOutVariantFraction: options.heldOutVariantFraction)
            if options.engines.engines.contains(.flite) { try options.tools.requireFliteVoices(options.flite.all) }
            if options.ranges.soxProbability > 0 { try options.tools.requireSox() }
            let recipe = try MultiEngineRecipe(voices: split, mix: options.engines, ranges: options.ranges)
            jobs = multiEngineJobs(sentences: pools, recipe: recipe, makeTest: makeTest)
            report.ownVoices = Self.ownVoices(split, makeTest: makeTest, engines: options.engines)
            extra = ["recipe": options.recipe.rawValue, "own_voices": report.ownVoices,
                     "engines": Dictionary(uniqueKeysWithValues: options.engines.engines.map { ($0.rawValue, options.engines.fraction($0)) })]
        }

        // Render with a few processes at once.
        let failures = ResultBox()
        DispatchQueue.concurrentPerform(iterations: max(1, options.jobs)) { lane in
            for job in jobs where job.index % max(1, options.jobs) == lane {
                do { try render(job, to: path(job)) } catch { failures.add("\(path(job)): \(error)") }
                progress(job.index, jobs.count)
            }
        }
        if let first = failures.first { throw DatasetError(file: options.out, line: nil, message: "synthesis failed: \(first)") }

        var sets: [String: [Utterance]] = [:]
        for job in jobs {
            let split = job.split.rawValue
            let audio = try AudioFile.read(path(job))
            sets[split, default: []].append(Utterance(audioPath: path(job), text: job.text, duration: audio.seconds))
            report.seconds[split, default: [:]][job.rendering.engine.rawValue, default: 0] += audio.seconds
            report.seconds[split, default: [:]]["\(job.rendering.engine.rawValue):\(job.rendering.voice)", default: 0] += audio.seconds
            if job.split == .train {
                report.trainSeconds += audio.seconds
            } else if job.split != .validSeen {
                var r = SeededRandom(options.seed, 0x4348414E, UInt64(job.index))
                let degraded = Augmentation.degradeChannel(audio.samples, sampleRate: audio.sampleRate, rng: &r)
                let channelPath = "\(options.out)/\(split)-channel/\(split)-channel-\(String(format: "%06d", job.index)).wav"
                try AudioFile.write(Audio(samples: degraded, sampleRate: audio.sampleRate), to: channelPath)
                sets[split + "_channel", default: []].append(Utterance(audioPath: channelPath, text: job.text, duration: audio.seconds))
            }
        }
        let names = (makeTest ? ["train", "valid", "valid_channel", "test", "test_channel"] : ["train", "valid", "valid_channel"])
            + (makeSeen ? ["valid_seen"] : [])
        for name in names { try Manifest.write(sets[name] ?? [], to: "\(options.out)/\(name).jsonl") }
        report.train = sets["train"]?.count ?? 0
        report.valid = sets["valid"]?.count ?? 0
        report.validChannel = sets["valid_channel"]?.count ?? 0
        report.test = sets["test"]?.count ?? 0
        report.testChannel = sets["test_channel"]?.count ?? 0
        report.validSeen = sets["valid_seen"]?.count ?? 0
        try writeStyles(jobs, extra: extra)
        return report
    }

    func path(_ job: Job) -> String {
        "\(options.out)/\(job.split.rawValue)/\(job.split.rawValue)-\(String(format: "%06d", job.index)).wav"
    }

    /// Which split an utterance belongs to: validation first, then training, then test, then
    /// valid_seen, so the training utterances keep their indices (and draws) whether or not a
    /// test or valid_seen split is made, and test's do with or without valid_seen.
    func split(of index: Int) -> CorpusSplit {
        if index >= options.utterances + options.testUtterances { return .validSeen }
        return index >= options.utterances ? .test : index < validationCount ? .valid : .train
    }

    func multiEngineJobs(sentences: [CorpusSplit: [String]], recipe: MultiEngineRecipe, makeTest: Bool) -> [Job] {
        (0 ..< options.utterances + options.testUtterances + seenValidationCount).map { i in
            let split = split(of: i)
            var r = SeededRandom(options.seed, 0x4D45_5554, UInt64(i))
            let pool = sentences[split]!
            let text = pool[Int(r.next() % UInt64(pool.count))]
            return Job(index: i, split: split, text: text, rendering: recipe.draw(split, makeTest: makeTest, rng: &r))
        }
    }

    static func ownVoices(_ split: VoiceSplit, makeTest: Bool, engines: EngineMix) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for s in CorpusSplit.allCases where s != .validSeen && (s != .test || makeTest) {
            // Without a test split, validation hears the test voices too.
            let own = s == .valid && !makeTest ? split.own[.valid]! + split.own[.test]! : split.own[s]!
            var names: [String] = []
            if engines.engines.contains(.espeakNG) {
                names += own.accents.map { "espeak-ng:\($0)" } + own.variants.map { "espeak-ng:+\($0.isEmpty ? "(the voice's own)" : $0)" }
            }
            if engines.engines.contains(.flite) { names += own.flite.map { "flite:\($0)" } }
            out[s.rawValue] = names
        }
        return out
    }

    /// styles.json: every utterance's speaker and style, so the split can be audited. Recipe 1's
    /// file is as it always was (no recipe key).
    func writeStyles(_ jobs: [Job], extra: [String: Any]) throws {
        let rows = jobs.map { job -> [String: String] in
            let r = job.rendering
            var row = ["split": job.split.rawValue, "voice": r.engineVoice, "speed": r.speedText, "pitch": r.pitchText, "text": job.text]
            if options.recipe != .espeakGrid {
                row["engine"] = r.engine.rawValue
                row["tempo"] = r.tempoText ?? "1"
                row["pitch_cents"] = r.centsText ?? "0"
            }
            return row
        }
        var object = extra
        object["seed"] = options.seed
        object["utterances"] = rows
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: options.out + "/styles.json"))
    }
}
