import CKernels
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// Beam search: ESPnet's `default_beam_search` (espnet/nets/beam_search_transducer.py), a
/// simplified form of Graves 2012's algorithm 1 without its prefix merging. Per frame, the most
/// probable open hypothesis is taken out; it closes the frame with a blank (kept for the next
/// frame) and opens its `beam` best one-label extensions; the frame ends once `beam` closed
/// hypotheses are more probable than every open one. Each hypothesis's score is the
/// log-probability of one alignment; the result approximates the most probable single alignment
/// over every label sequence (on tiny lattices, with a beam as wide as the labels, it is that
/// alignment: TransducerModelTests checks it against brute force).
extension TransducerModel {
    struct Hypothesis {
        var score: Double
        var labels: [Int]
        /// The prediction network after `labels`, but for `pending`, the last one, fed only
        /// when the hypothesis is taken out (most extensions never are).
        var state: PredictorState
        var pending: Int?
        /// Labels this hypothesis took in the current frame.
        var emitted = 0
    }

    /// The label sequence (1..<V) of the best-scoring hypothesis, for each utterance. As in greedy
    /// decoding, a hypothesis takes at most `maxSymbolsPerFrame` labels in one frame (ESPnet's
    /// search has no such bound; without it a model that rarely says blank makes the search of
    /// one frame grow without end).
    /// The final pick, as ESPnet's `sort_nbest`, is by score per token (the labels and the start
    /// symbol), so that every label's cost does not make the shortest hypothesis win.
    public func beamSearch(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], beam: Int, maxSymbolsPerFrame: Int = 64) -> [[Int]] {
        finalBeams(parameters: p, features: features, beam: beam, maxSymbolsPerFrame: maxSymbolsPerFrame).map { kept in
            kept.max { $0.score / Double($0.labels.count + 1) < $1.score / Double($1.labels.count + 1) }?.labels ?? []
        }
    }

    /// Each utterance's hypotheses at the end of its last frame, with their scores (the
    /// log-probability of their alignments).
    func finalBeams(parameters p: UnsafeBufferPointer<Float>, features: [[Float]], beam: Int,
                    maxSymbolsPerFrame: Int = 64) -> [[(labels: [Int], score: Double)]] {
        precondition(beam >= 1)
        guard !features.isEmpty else { return [] }
        let enc = encode(features, parameters: p)
        let B = features.count, J = transducer.jointDim, V = settings.classes, width = min(beam, V - 1)
        let zeros = predictor.map { [Float](repeating: 0, count: $0.hidden) }
        let start = feed(0, to: PredictorState(h: zeros, c: zeros), parameters: p)
        return (0 ..< B).map { b in
            var kept = [Hypothesis(score: 0, labels: [], state: start, pending: nil)]
            for t in 0 ..< enc.encoder.output.lengths[b] {
                let f = enc.projected[(t * B + b) * J ..< (t * B + b + 1) * J]
                var open = kept.map { h in var h = h; h.emitted = 0; return h }
                kept = []
                while let best = open.indices.max(by: { open[$0].score < open[$1].score }) {
                    var hypothesis = open.remove(at: best)
                    if let k = hypothesis.pending {
                        hypothesis.state = feed(k, to: hypothesis.state, parameters: p)
                        hypothesis.pending = nil
                    }
                    let logProb = jointLogSoftmax(f, hypothesis.state.output, parameters: p)
                    kept.append(Hypothesis(score: hypothesis.score + logProb[0], labels: hypothesis.labels, state: hypothesis.state, pending: nil))
                    if hypothesis.emitted < maxSymbolsPerFrame {
                        for k in (1 ..< V).sorted(by: { logProb[$0] > logProb[$1] }).prefix(width) {
                            open.append(Hypothesis(score: hypothesis.score + logProb[k], labels: hypothesis.labels + [k],
                                                   state: hypothesis.state, pending: k, emitted: hypothesis.emitted + 1))
                        }
                    }
                    let openBest = open.map(\.score).max() ?? -.infinity
                    let ahead = kept.filter { $0.score > openBest }
                    if ahead.count >= width {
                        kept = ahead
                        break
                    }
                }
            }
            return kept.map { (labels: $0.labels, score: $0.score) }
        }
    }

    /// log softmax of the joint network's output at (f_t, g_u), in double precision: (V).
    func jointLogSoftmax(_ f: ArraySlice<Float>, _ g: [Float], parameters p: UnsafeBufferPointer<Float>) -> [Double] {
        let J = transducer.jointDim
        var sum = [Float](repeating: 0, count: J), hidden = sum
        for j in 0 ..< J { sum[j] = f[f.startIndex + j] + g[j] }
        csp_tanh(sum, &hidden, J)
        let logits = joint.forward(hidden, rows: 1, parameters: p).map(Double.init)
        let m = logits.max() ?? 0
        let lse = m + log(logits.reduce(0) { $0 + exp($1 - m) })
        return logits.map { $0 - lse }
    }
}
