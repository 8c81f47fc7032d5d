#if canImport(Glibc)
import Glibc
#endif

/// CTC decoding without a language model or lexicon.
public enum CTCDecoder {
    /// Best class per frame, repeats merged, blanks removed. `logits` is (T, V) row-major.
    public static func greedy(_ logits: [Float], classes V: Int) -> [Int] {
        let T = logits.count / V
        var out: [Int] = []
        var previous = -1
        for t in 0 ..< T {
            var best = 0
            for k in 1 ..< V where logits[t * V + k] > logits[t * V + best] { best = k }
            if best != previous, best != 0 { out.append(best) }
            previous = best
        }
        return out
    }

    /// Prefix beam search (Hannun et al., 2014) over log-probabilities: keeps the `beam` most
    /// probable label prefixes, each with its probability of ending in a blank and in a label.
    public static func beamSearch(_ logits: [Float], classes V: Int, beam: Int) -> [Int] {
        let T = logits.count / V
        var beams: [[Int]: Score] = [[]: Score(blank: 0)]
        var logProb = [Double](repeating: 0, count: V)
        for t in 0 ..< T {
            var m = -Double.infinity
            for k in 0 ..< V { m = max(m, Double(logits[t * V + k])) }
            var sum = 0.0
            for k in 0 ..< V { sum += exp(Double(logits[t * V + k]) - m) }
            for k in 0 ..< V { logProb[k] = Double(logits[t * V + k]) - m - log(sum) }
            var next: [[Int]: Score] = [:]
            for (prefix, score) in beams {
                // Extend with a blank: the prefix is unchanged.
                next[prefix, default: Score()].blank = logAdd(next[prefix, default: Score()].blank, score.total + logProb[0])
                for k in 1 ..< V {
                    let p = logProb[k]
                    if k == prefix.last {
                        // Repeat without a blank between: stays the same prefix.
                        next[prefix, default: Score()].label = logAdd(next[prefix, default: Score()].label, score.label + p)
                        // Repeat after a blank: a new label.
                        let extended = prefix + [k]
                        next[extended, default: Score()].label = logAdd(next[extended, default: Score()].label, score.blank + p)
                    } else {
                        let extended = prefix + [k]
                        next[extended, default: Score()].label = logAdd(next[extended, default: Score()].label, score.total + p)
                    }
                }
            }
            beams = Dictionary(uniqueKeysWithValues: next.sorted { $0.value.total > $1.value.total }.prefix(max(1, beam)).map { ($0.key, $0.value) })
        }
        return beams.max { $0.value.total < $1.value.total }?.key ?? []
    }

    /// A prefix's log-probabilities of ending in a blank and in a label.
    struct Score {
        var blank = -Double.infinity
        var label = -Double.infinity
        var total: Double { CTCDecoder.logAdd(blank, label) }
    }

    static func logAdd(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        return max(a, b) + log1p(exp(-abs(a - b)))
    }
}
