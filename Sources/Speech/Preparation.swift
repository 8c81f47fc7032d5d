import Foundation

/// Turns a list of utterances into a shard set, computing feature normalisation statistics.
public enum Preparation {
    public struct Report: Sendable {
        public var prepared = 0
        public var skipped: [ShardIndex.Skipped] = []
        public var seconds = 0.0
    }

    /// Reads every utterance's audio at 16 kHz, writes shards of `shardSize` examples into
    /// `folder`, and `shards.json`. Unreadable files and empty transcripts are skipped and listed
    /// with the reason; the preparation never stops silently.
    public static func prepare(_ utterances: [Utterance], into folder: String, shardSize: Int = 1000,
                               features: FeatureSettings = FeatureSettings(),
                               progress: (Int, Int) -> Void = { _, _ in }) throws -> Report {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var index = ShardIndex()
        var report = Report()
        var writer: ShardWriter?
        let extractor = LogMelExtractor(settings: features)
        var sum = [Double](repeating: 0, count: features.bands)
        var sumSquares = [Double](repeating: 0, count: features.bands)
        var frames = 0
        func flush() throws {
            guard let w = writer, w.count > 0 else { return }
            try w.finish()
            index.shards.append(.init(file: URL(fileURLWithPath: w.path).lastPathComponent, examples: w.count))
            writer = nil
        }
        for (n, u) in utterances.enumerated() {
            progress(n, utterances.count)
            guard !u.text.isEmpty else {
                report.skipped.append(.init(file: u.audioPath, reason: "empty transcript"))
                continue
            }
            let audio: Audio
            do { audio = try AudioFile.read16k(u.audioPath) } catch {
                report.skipped.append(.init(file: u.audioPath, reason: error.message))
                continue
            }
            guard extractor.frameCount(samples: audio.samples.count) > 0 else {
                report.skipped.append(.init(file: u.audioPath, reason: "shorter than one 25 ms frame"))
                continue
            }
            let f = extractor.features(audio.samples)
            for t in 0 ..< f.count / features.bands {
                for b in 0 ..< features.bands {
                    let v = Double(f[t * features.bands + b])
                    sum[b] += v
                    sumSquares[b] += v * v
                }
            }
            frames += f.count / features.bands
            if writer == nil {
                writer = ShardWriter(path: folder + String(format: "/shard-%05d.bin", index.shards.count))
            }
            writer!.add(samples: audio.samples, text: u.text)
            report.prepared += 1
            report.seconds += audio.seconds
            if writer!.count >= shardSize { try flush() }
        }
        try flush()
        index.examples = report.prepared
        index.seconds = report.seconds
        index.skipped = report.skipped
        index.featureMean = (0 ..< features.bands).map { Float(frames > 0 ? sum[$0] / Double(frames) : 0) }
        index.featureStd = (0 ..< features.bands).map { b in
            guard frames > 0 else { return 1 }
            let mean = sum[b] / Double(frames)
            return Float(max(1e-5, (sumSquares[b] / Double(frames) - mean * mean)).squareRoot())
        }
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(index).write(to: URL(fileURLWithPath: folder + "/shards.json"), options: .atomic)
        return report
    }
}
