import Tensors

/// Word errors and reference words of each test utterance, in a fixed utterance order, so two
/// systems scored on the same set can be compared utterance by utterance.
public struct UtteranceScores: Codable, Sendable, Equatable {
    public var wordEdits: [Int]
    public var words: [Int]
    public var characterEdits: [Int]
    public var characters: [Int]

    public init(wordEdits: [Int] = [], words: [Int] = [], characterEdits: [Int] = [], characters: [Int] = []) {
        self.wordEdits = wordEdits
        self.words = words
        self.characterEdits = characterEdits
        self.characters = characters
    }

    public var count: Int { words.count }
    public var wer: Double { ratio(wordEdits.reduce(0, +), words.reduce(0, +)) }
    public var cer: Double { ratio(characterEdits.reduce(0, +), characters.reduce(0, +)) }
}

private func ratio(_ a: Int, _ b: Int) -> Double { b == 0 ? 0 : Double(a) / Double(b) }

/// The difference of two systems' corpus WER on the same utterances, with a paired-bootstrap
/// confidence interval: utterances are drawn with replacement (the same draw for both systems)
/// and WER_a − WER_b recomputed on each resample as total edits over total reference words; the
/// interval is the (α/2, 1 − α/2) percentiles of the resampled differences (Koehn 2004; Bisani
/// & Ney 2004).
public struct PairedDifference: Codable, Sendable, Equatable {
    /// WER_a − WER_b on the full set (negative: a makes fewer errors).
    public var delta: Double
    public var ciLow: Double
    public var ciHigh: Double
    public var level: Double
    public var samples: Int

    /// "a wins" when the whole interval is below 0, "a loses" when above, a tie otherwise.
    public enum Verdict: String, Sendable { case wins, ties, loses }
    public var verdict: Verdict { ciHigh < 0 ? .wins : ciLow > 0 ? .loses : .ties }

    public init(_ a: UtteranceScores, _ b: UtteranceScores, samples: Int = 2000, level: Double = 0.95, seed: UInt64 = 1) {
        precondition(a.words == b.words, "paired scores must come from the same utterances")
        let n = a.count
        delta = a.wer - b.wer
        self.level = level
        self.samples = samples
        guard n > 0, samples > 0 else {
            ciLow = delta
            ciHigh = delta
            return
        }
        var rng = SeededRandom(seed, 0x424F4F54)
        var deltas = [Double](repeating: 0, count: samples)
        for s in 0 ..< samples {
            var ea = 0, eb = 0, w = 0
            for _ in 0 ..< n {
                let i = Int(rng.next() % UInt64(n))
                ea += a.wordEdits[i]
                eb += b.wordEdits[i]
                w += a.words[i]
            }
            deltas[s] = ratio(ea, w) - ratio(eb, w)
        }
        deltas.sort()
        let tail = (1 - level) / 2
        ciLow = Self.percentile(deltas, tail)
        ciHigh = Self.percentile(deltas, 1 - tail)
    }

    /// Linear interpolation between closest ranks (numpy's default).
    static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let position = q * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down)), upper = min(sorted.count - 1, lower + 1)
        let f = position - Double(lower)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * f
    }
}

/// One system's WER with a percentile bootstrap interval over utterances (resampled with
/// replacement, WER recomputed from the summed edits and words of each resample).
public struct BootstrapInterval: Codable, Sendable, Equatable {
    public var wer: Double
    public var low: Double
    public var high: Double
    public var level: Double
    public var samples: Int

    public init(_ scores: UtteranceScores, samples: Int = 2000, level: Double = 0.95, seed: UInt64 = 1) {
        let n = scores.count
        wer = scores.wer
        self.level = level
        self.samples = samples
        guard n > 0, samples > 0 else {
            low = wer
            high = wer
            return
        }
        var rng = SeededRandom(seed, 0x424F4F54)
        var rates = [Double](repeating: 0, count: samples)
        for s in 0 ..< samples {
            var edits = 0, words = 0
            for _ in 0 ..< n {
                let i = Int(rng.next() % UInt64(n))
                edits += scores.wordEdits[i]
                words += scores.words[i]
            }
            rates[s] = ratio(edits, words)
        }
        rates.sort()
        let tail = (1 - level) / 2
        low = PairedDifference.percentile(rates, tail)
        high = PairedDifference.percentile(rates, 1 - tail)
    }
}
