import Foundation
import Inference
import Models
import Speech
import Tasks
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// `bench --only inference`: PCM to text on one thread, dense against sparse on the same weights,
/// for whole utterances at batch 1 and 8 and for 100 ms streaming chunks.
public enum InferenceBenchmark {
    public struct Settings: Sendable {
        public var utterances = 8
        public var seconds = 3.0
        public var chunkMilliseconds = 100
        public var repeats = 5
        /// The model of Configs/speech-streaming.yaml.
        public var acoustic: AcousticSettings = {
            var s = AcousticSettings()
            s.bidirectional = false
            s.classes = Vocabulary.characters.classes
            return s
        }()
        public var sparsities: [Double] = [0, 0.5, 0.7, 0.8, 0.9]
        public var lowRankSparsities: [Double] = [0.5, 0.8, 0.9]
        public init() {}
    }

    public struct Record: Sendable {
        public var layout: String
        public var sparsity: Double
        public var batch: Int
        /// "utterance" (whole files) or "stream" (chunks).
        public var mode: String
        public var rtf: Double
        public var rtfDense: Double
        public var speedup: Double { rtfDense / rtf }
        public var weightBytesPerSecond: Double
        public var denseWeightBytesPerSecond: Double
        /// Each matrix's layout as chosen, in model order.
        public var layers: [String]
    }

    public struct Latency: Sendable {
        public var variant: String
        /// Compute seconds from a chunk's arrival to its partial result: p50, p95, p99.
        public var partial: [Double]
        /// From the end of the audio to the final text: p50, p95.
        public var final: [Double]
    }

    public struct Report: Sendable {
        public var records: [Record] = []
        public var shares: [(variant: String, seconds: [String: Double])] = []
        public var latency: [Latency] = []
        public var files: [(variant: String, dense: Int, bitmask: Int, rice: Int, packedBytes: Int)] = []
        public var peakRSSBytes = 0
        /// Variants whose sparse and dense products decoded to different texts (float rounding
        /// at a near tie; none expected).
        public var disagreements: [String] = []
        public var parameters = 0
        public var audioSeconds = 0.0
    }

    /// Deterministic speech-like audio: a few drifting harmonics under noise.
    static func audio(_ settings: Settings) -> [[Float]] {
        let n = Int(settings.seconds * 16_000)
        return (0 ..< settings.utterances).map { u in
            var rng = SeededRandom(21, UInt64(u))
            let f0 = 100 + 40 * Float(u % 5)
            return (0 ..< n).map { i in
                let t = Float(i) / 16_000
                let pitch = f0 * (1 + 0.1 * sinf(2 * .pi * 0.7 * t))
                var s: Float = 0
                for h in 1 ... 4 { s += sinf(2 * .pi * pitch * Float(h) * t) / Float(h) }
                return 0.05 * s + 0.01 * (2 * rng.nextUnitFloat() - 1)
            }
        }
    }

    static func seconds(_ body: () -> Void) -> Double {
        let clock = ContinuousClock(), start = clock.now
        body()
        let d = clock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int((p * Double(sorted.count - 1)).rounded()))]
    }

    public static func run(_ settings: Settings = Settings()) throws -> Report {
        VectorMath.setThreadCount(1)
        let model = AcousticModel(settings: settings.acoustic)
        let base = model.initialParameters(seed: 3)
        let utterances = audio(settings)
        let normalization = FeatureNormalization(mean: [Float](repeating: -8, count: settings.acoustic.features),
                                                 std: [Float](repeating: 3, count: settings.acoustic.features))
        var report = Report()
        report.parameters = base.count
        report.audioSeconds = settings.seconds * Double(settings.utterances)
        var variants = settings.sparsities.map { InferenceModels.unstructured(model, base, sparsity: $0) }
        variants += [InferenceModels.nm(model, base, keep: 2, group: 4), InferenceModels.nm(model, base, keep: 1, group: 10)]
        variants += settings.lowRankSparsities.map { InferenceModels.lowRank(model, base, sparsity: $0) }
        let framesPerUtterance = model.outputFrames(Int(settings.seconds * 100))
        let chunkFrames = max(1, settings.chunkMilliseconds / 10 >> settings.acoustic.convLayers)
        let chunkSamples = settings.chunkMilliseconds * 16

        for v in variants {
            let name = v.layout == "unstructured" || v.layout == "lowrank" ? "\(v.layout) \(Int((v.sparsity * 100).rounded()))%" : v.layout
            func recognizer(_ choice: LayoutChoice, batch: Int, chunk: Int) -> Recognizer {
                var options = InferenceModel.Options()
                options.layouts = choice
                options.batch = batch
                options.chunkFrames = chunk
                options.ranks = v.ranks
                return Recognizer(model: InferenceModel(model: model, parameters: v.parameters, options: options), normalization: normalization)
            }
            func bytesPerSecond(_ r: Recognizer) -> Double {
                Double(r.model.weightBytesPerFrame * framesPerUtterance) / settings.seconds
            }
            // Whole utterances, batch 1 and 8.
            for batch in [1, 8] {
                let dense = recognizer(.dense, batch: batch, chunk: framesPerUtterance)
                let sparse = recognizer(.automatic, batch: batch, chunk: framesPerUtterance)
                var best = (dense: Double.infinity, sparse: Double.infinity)
                var texts: [[String]] = [[], []]
                for _ in 0 ..< settings.repeats {
                    for (which, r) in [(0, dense), (1, sparse)] {
                        texts[which] = []
                        let t = seconds {
                            var times: LayerTimes?
                            for start in stride(from: 0, to: utterances.count, by: batch) {
                                texts[which] += r.transcribe(Array(utterances[start ..< min(utterances.count, start + batch)]), times: &times)
                            }
                        }
                        if which == 0 { best.dense = min(best.dense, t) } else { best.sparse = min(best.sparse, t) }
                    }
                }
                if texts[0] != texts[1] { report.disagreements.append("\(name), batch \(batch): sparse and dense texts differ") }
                report.records.append(Record(layout: v.layout, sparsity: v.sparsity, batch: batch, mode: "utterance",
                                             rtf: best.sparse / report.audioSeconds, rtfDense: best.dense / report.audioSeconds,
                                             weightBytesPerSecond: bytesPerSecond(sparse), denseWeightBytesPerSecond: bytesPerSecond(dense),
                                             layers: sparse.model.layers.map { "\($0.name)=\($0.layout)" }))
                if batch == 1 {
                    var denseTimes: LayerTimes? = LayerTimes(), sparseTimes: LayerTimes? = LayerTimes()
                    _ = dense.transcribe(utterances, times: &denseTimes)
                    _ = sparse.transcribe(utterances, times: &sparseTimes)
                    if v.sparsity == 0 { report.shares.append(("dense", denseTimes!.seconds)) }
                    if v.sparsity == 0.9 || v.layout == "2:4" { report.shares.append((name, sparseTimes!.seconds)) }
                }
                if batch == 1 {
                    let sizes = try InferenceModels.fileSizes(model, v.parameters)
                    report.files.append((name, sizes.dense, sizes.bitmask, sizes.rice,
                                         sparse.model.layers.reduce(0) { $0 + $1.weightBytes }))
                }
            }
            // Streaming, batch 1, 100 ms chunks.
            let dense = recognizer(.dense, batch: 1, chunk: chunkFrames)
            let sparse = recognizer(.automatic, batch: 1, chunk: chunkFrames)
            var totals = (dense: Double.infinity, sparse: Double.infinity)
            var partial: [Double] = [], final: [Double] = []
            for _ in 0 ..< settings.repeats {
                for (which, r) in [(0, dense), (1, sparse)] {
                    var total = 0.0
                    for u in utterances {
                        guard var stream = try? TranscriptionStream(recognizer: r) else { continue }
                        var start = 0
                        while start < u.count {
                            let chunk = Array(u[start ..< min(u.count, start + chunkSamples)])
                            let t = seconds { _ = stream.push(chunk) }
                            total += t
                            if which == 1 { partial.append(t) }
                            start += chunkSamples
                        }
                        let t = seconds { _ = stream.finish() }
                        total += t
                        if which == 1 { final.append(t) }
                    }
                    if which == 0 { totals.dense = min(totals.dense, total) } else { totals.sparse = min(totals.sparse, total) }
                }
            }
            report.records.append(Record(layout: v.layout, sparsity: v.sparsity, batch: 1, mode: "stream",
                                         rtf: totals.sparse / report.audioSeconds, rtfDense: totals.dense / report.audioSeconds,
                                         weightBytesPerSecond: bytesPerSecond(sparse), denseWeightBytesPerSecond: bytesPerSecond(dense),
                                         layers: sparse.model.layers.map { "\($0.name)=\($0.layout)" }))
            report.latency.append(Latency(variant: name, partial: [0.5, 0.95, 0.99].map { percentile(partial, $0) },
                                          final: [0.5, 0.95].map { percentile(final, $0) }))
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        report.peakRSSBytes = Int(usage.ru_maxrss) * 1024
        return report
    }
}
