import Foundation
import Tensors

/// Which recipe `data synth` follows. A recipe fixes what a seed produces, so a corpus made by
/// one stays reproducible after the built-in corpus changes.
public enum CorpusRecipe: Int, Sendable, CaseIterable {
    /// espeak-ng only: every English voice × variant × five speeds × five pitches; validation and
    /// test hold out sentences and (voice, variant, speed, pitch) combinations. The corpus of the
    /// main job and of the pruning sweeps up to issue 16.
    case espeakGrid = 1
    /// espeak-ng and flite in set proportions, speeds and pitches drawn from continuous ranges,
    /// sox tempo and pitch perturbation; validation and test hold out whole voices of each engine
    /// as well as sentences.
    case multiEngine = 2
}

public enum SpeechEngine: String, Sendable, CaseIterable, Codable {
    case espeakNG = "espeak-ng"
    case flite
}

public enum CorpusSplit: String, Sendable, CaseIterable {
    case train, valid, test
    /// Recipe 2: validation sentences (never in training) spoken by training voices in training
    /// styles: beside `valid` (held-out voices) it tells unseen speakers from unseen sentences.
    case validSeen = "valid_seen"
}

/// One utterance's speaker and style, as the engine and sox are told.
public struct Rendering: Sendable, Hashable {
    public var engine: SpeechEngine
    /// espeak-ng: the accent voice (`en-us`); flite: the voice (`awb`).
    public var voice: String
    /// espeak-ng: a variant under `!v/`, or "" for the voice's own; flite: "".
    public var variant = ""
    /// espeak-ng: words per minute (whole); flite: duration_stretch (1: the voice's own; larger is slower).
    public var speed: Double
    /// espeak-ng: 0–99 (whole); flite: int_f0_target_mean in Hz.
    public var pitch: Double
    /// sox `tempo` factor; nil: sox is not run.
    public var tempo: Double?
    /// sox `pitch` shift in cents; nil when sox is not run.
    public var cents: Double?

    /// The speaker as a training set would know it: engine, voice and variant.
    public var speaker: String { "\(engine.rawValue):\(engineVoice)" }
    /// What the engine is given: `en-us+f3`, `awb`.
    public var engineVoice: String { variant.isEmpty ? voice : "\(voice)+\(variant)" }

    // The arguments as the tools get them, and as styles.json records them.
    public var speedText: String { engine == .espeakNG ? String(Int(speed)) : String(format: "%.3f", speed) }
    public var pitchText: String { engine == .espeakNG ? String(Int(pitch)) : String(format: "%.1f", pitch) }
    public var tempoText: String? { tempo.map { String(format: "%.3f", $0) } }
    public var centsText: String? { cents.map { String(Int($0)) } }
}

/// The share of utterances each engine speaks, e.g. `espeak-ng=0.6,flite=0.4`.
public struct EngineMix: Sendable, Equatable {
    public private(set) var weights: [SpeechEngine: Double]

    public static let standard = EngineMix(weights: [.espeakNG: 0.6, .flite: 0.4])

    public init(weights: [SpeechEngine: Double]) { self.weights = weights.filter { $0.value > 0 } }

    /// `espeak-ng=0.6,flite=0.4`; a bare name has weight 1. Weights are normalised.
    public init(parsing text: String) throws(DatasetError) {
        var weights: [SpeechEngine: Double] = [:]
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let engine = SpeechEngine(rawValue: parts[0]) else {
                throw DatasetError(file: "--engines", line: nil, message: "unknown engine '\(parts[0])' (known: \(SpeechEngine.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let weight = parts.count == 2 ? Double(parts[1]) : 1
            guard let weight, weight >= 0, weight.isFinite, weights[engine] == nil else {
                throw DatasetError(file: "--engines", line: nil, message: "'\(item)': expected ENGINE=WEIGHT with a weight ≥ 0, each engine once")
            }
            weights[engine] = weight
        }
        guard weights.values.contains(where: { $0 > 0 }) else {
            throw DatasetError(file: "--engines", line: nil, message: "'\(text)': no engine has a positive weight (e.g. espeak-ng=0.6,flite=0.4)")
        }
        self.init(weights: weights)
    }

    public var engines: [SpeechEngine] { SpeechEngine.allCases.filter { weights[$0] != nil } }

    public func fraction(_ engine: SpeechEngine) -> Double {
        (weights[engine] ?? 0) / weights.values.reduce(0, +)
    }

    /// The engine whose cumulative share first exceeds `u` ∈ [0, 1).
    func pick(_ u: Double) -> SpeechEngine {
        var total = 0.0
        for engine in engines {
            total += fraction(engine)
            if u < total { return engine }
        }
        return engines.last!
    }
}

/// flite's voices per split: two of its four general voices train, one is held out for
/// validation and one for test. kal (kal16 at 8 kHz, the same speaker) and awb_time (a talking
/// clock that says nothing else) are not used.
public struct FliteSplit: Sendable, Equatable {
    public var train = ["kal16", "awb"]
    public var valid = ["rms"]
    public var test = ["slt"]
    public init() {}
    public var all: [String] { train + valid + test }
}

/// The voices each split hears: training never hears a held-out split's own voices.
///
/// espeak-ng: its accent voices (`en-us`, `en-gb-scotland`, …) and its variants (`f3`, `m2`,
/// `klatt`, …, "" for the voice's own) are each shuffled by the seed; validation and test each
/// take `heldOutAccents` regional accents (training keeps en-gb and en-us, and at least one
/// accent) and a fraction of the variants. A held-out split speaks its own variants in its own or
/// the training accents, so every held-out espeak-ng speaker is new, and some speak an accent
/// training never heard. flite: ``FliteSplit``. The training voices do not depend on whether a test split is
/// made; without one, validation takes the test voices too.
public struct VoiceSplit: Sendable, Equatable {
    public struct Voices: Sendable, Equatable {
        public var accents: [String] = []
        public var variants: [String] = []
        public var flite: [String] = []
        static func + (a: Voices, b: Voices) -> Voices {
            Voices(accents: a.accents + b.accents, variants: a.variants + b.variants, flite: a.flite + b.flite)
        }
    }
    /// Each split's own voices (disjoint): train, valid and test (`validSeen` has none of its own).
    public var own: [CorpusSplit: Voices]
    /// espeak-ng's General American and British voices, which training always keeps.
    public static let baseAccents: Set = ["en-gb", "en-us"]

    public init(accents: [String], variants: [String], flite: FliteSplit, seed: UInt64,
                heldOutAccents: Int = 1, heldOutVariantFraction: Double = 0.1) throws(DatasetError) {
        // espeak-ng's two base English voices stay in training: hold out regional accents only.
        let kept = Set(accents).intersection(Self.baseAccents).sorted()
        let accents = Self.shuffled(Set(accents).subtracting(Self.baseAccents).sorted(), seed: seed, tag: 0x4143_43) + kept
        let variants = Self.shuffled(Array(Set(variants)).sorted(), seed: seed, tag: 0x5641_52)
        let a = accents.count >= 3 ? min(max(0, heldOutAccents), (accents.count - max(1, kept.count)) / 2) : 0
        // No variants: espeak-ng is not among the engines.
        let v = variants.isEmpty ? 0 : max(1, Int((Double(variants.count) * heldOutVariantFraction).rounded()))
        guard variants.isEmpty || variants.count >= 2 * v + 1 else {
            throw DatasetError(file: "espeak-ng", line: nil, message: "\(variants.count) espeak-ng variants: too few to hold \(v) out for validation and \(v) for test and train on the rest")
        }
        guard Set(flite.all).count == flite.all.count, !flite.train.isEmpty, !flite.valid.isEmpty, !flite.test.isEmpty else {
            throw DatasetError(file: "flite", line: nil, message: "each split needs flite voices of its own (train \(flite.train), valid \(flite.valid), test \(flite.test))")
        }
        own = [
            .valid: Voices(accents: Array(accents[0 ..< a]), variants: Array(variants[0 ..< v]), flite: flite.valid),
            .test: Voices(accents: Array(accents[a ..< 2 * a]), variants: Array(variants[v ..< 2 * v]), flite: flite.test),
            .train: Voices(accents: Array(accents[(2 * a)...]), variants: Array(variants[(2 * v)...]), flite: flite.train),
        ]
    }

    /// What a split draws from.
    public func pool(_ split: CorpusSplit, makeTest: Bool) -> Voices {
        let train = own[.train]!
        switch split {
        case .train, .validSeen: return train
        case .test: return Voices(accents: train.accents + own[.test]!.accents, variants: own[.test]!.variants, flite: own[.test]!.flite)
        case .valid:
            let heldOut = makeTest ? own[.valid]! : own[.valid]! + own[.test]!
            return Voices(accents: train.accents + heldOut.accents, variants: heldOut.variants, flite: heldOut.flite)
        }
    }

    static func shuffled(_ items: [String], seed: UInt64, tag: UInt64) -> [String] {
        var out = items, rng = SeededRandom(seed, tag)
        for i in stride(from: out.count - 1, to: 0, by: -1) { out.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return out
    }
}

/// Continuous ranges speaker styles are drawn from (uniformly; factors log-uniformly).
public struct StyleRanges: Sendable, Equatable {
    /// espeak-ng `-s`, words per minute (its default is 175).
    public var espeakSpeed: ClosedRange<Double> = 120 ... 220
    /// espeak-ng `-p`, 0–99 (default 50).
    public var espeakPitch: ClosedRange<Double> = 20 ... 90
    /// flite duration_stretch.
    public var fliteStretch: ClosedRange<Double> = 0.85 ... 1.25
    /// flite int_f0_target_mean as a factor of the voice's own mean pitch.
    public var fliteF0Factor: ClosedRange<Double> = 0.85 ... 1.2
    /// The share of utterances that sox then perturbs.
    public var soxProbability = 0.5
    public var soxTempo: ClosedRange<Double> = 0.9 ... 1.1
    public var soxCents: ClosedRange<Double> = -150 ... 150

    public init() {}

    /// Each range widened by `fraction` of its width on both sides (ratios in log space): held-out
    /// splits also hear styles beyond the training ranges.
    public func widened(by fraction: Double) -> StyleRanges {
        func wide(_ r: ClosedRange<Double>, _ limit: ClosedRange<Double>) -> ClosedRange<Double> {
            let w = (r.upperBound - r.lowerBound) * fraction
            return max(limit.lowerBound, r.lowerBound - w) ... min(limit.upperBound, r.upperBound + w)
        }
        func wideRatio(_ r: ClosedRange<Double>) -> ClosedRange<Double> {
            let w = log(r.upperBound / r.lowerBound) * fraction
            return r.lowerBound * exp(-w) ... r.upperBound * exp(w)
        }
        var out = self
        out.espeakSpeed = wide(espeakSpeed, 80 ... 450)
        out.espeakPitch = wide(espeakPitch, 0 ... 99)
        out.fliteStretch = wideRatio(fliteStretch)
        out.fliteF0Factor = wideRatio(fliteF0Factor)
        out.soxTempo = wideRatio(soxTempo)
        out.soxCents = wide(soxCents, -1200 ... 1200)
        return out
    }
}

/// Recipe 2's draws: which engine, voice and style speaks an utterance. Pure: the seed's stream in,
/// a ``Rendering`` out.
public struct MultiEngineRecipe: Sendable {
    public var voices: VoiceSplit
    public var mix: EngineMix
    public var ranges: StyleRanges
    /// How far held-out styles reach beyond the training ranges (a fraction of each range's width).
    public var heldOutWidening = 0.1

    /// Each flite voice's own mean pitch in Hz: kal16's from its voice definition
    /// (int_f0_target_mean 105); awb, rms and slt measured (median autocorrelation F0 of a
    /// 4-second sentence, flite 2.2). rms ignores int_f0_target_mean: sox alone varies its pitch.
    public static let fliteMeanF0: [String: Double] = ["kal": 105, "kal16": 105, "awb": 129, "rms": 101, "slt": 171]

    public init(voices: VoiceSplit, mix: EngineMix, ranges: StyleRanges) throws(DatasetError) {
        let flite = voices.own.values.flatMap(\.flite)
        if let unknown = flite.first(where: { Self.fliteMeanF0[$0] == nil }) {
            throw DatasetError(file: "flite", line: nil, message: "flite voice \(unknown) has no known mean pitch (known: \(Self.fliteMeanF0.keys.sorted().joined(separator: ", ")))")
        }
        self.voices = voices
        self.mix = mix
        self.ranges = ranges
    }

    public func draw(_ split: CorpusSplit, makeTest: Bool, rng: inout SeededRandom) -> Rendering {
        let pool = voices.pool(split, makeTest: makeTest)
        let r = split == .train || split == .validSeen ? ranges : ranges.widened(by: heldOutWidening)
        func unit() -> Double { Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
        func pick(_ items: [String]) -> String { items[Int(rng.next() % UInt64(items.count))] }
        func uniform(_ range: ClosedRange<Double>) -> Double { range.lowerBound + unit() * (range.upperBound - range.lowerBound) }
        func ratio(_ range: ClosedRange<Double>) -> Double { exp(uniform(log(range.lowerBound) ... log(range.upperBound))) }
        func round(_ x: Double, _ step: Double) -> Double { (x / step).rounded() * step }

        var out: Rendering
        switch mix.pick(unit()) {
        case .espeakNG:
            let accent = pick(pool.accents), variant = pick(pool.variants)
            out = Rendering(engine: .espeakNG, voice: accent, variant: variant,
                            speed: uniform(r.espeakSpeed).rounded(), pitch: uniform(r.espeakPitch).rounded())
        case .flite:
            let voice = pick(pool.flite)
            let base = Self.fliteMeanF0[voice]!
            out = Rendering(engine: .flite, voice: voice, speed: round(ratio(r.fliteStretch), 0.001),
                            pitch: round(base * ratio(r.fliteF0Factor), 0.1))
        }
        if unit() < r.soxProbability {
            out.tempo = round(ratio(r.soxTempo), 0.001)
            out.cents = uniform(r.soxCents).rounded()
        }
        return out
    }
}
