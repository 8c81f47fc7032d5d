import Checkpoints
import FileIO
import Foundation
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// Checkpoint write and read time and size at several sparsities, next to writing and reading
/// the dense float32 weights raw (write + fsync, read) in the same folder.
public enum CheckpointBenchmark {
    public struct Row: Sendable {
        public var what: String
        public var sparsity: Double
        public var parameters: Int
        public var fileBytes: Int
        /// Encode + temp file + fsync + rename + fsync(folder) + `latest`.
        public var writeSeconds: Double
        /// Read + verify every checksum + decode.
        public var readSeconds: Double
        public var rawBytes: Int
        public var rawWriteSeconds: Double
        public var rawReadSeconds: Double
    }

    /// `parameters` weights in tensors of at most 1 Mi values; per sparsity, the median of
    /// `repeats` runs. With `withOptimizer`, the checkpoint also holds Adam's two moment buffers
    /// (dense: a resumable training checkpoint); the raw baseline then writes as many floats.
    public static func run(parameters: Int, sparsities: [Double], withOptimizer: Bool, folder: URL, repeats: Int = 3) throws -> [Row] {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        var rows: [Row] = []
        for sparsity in sparsities {
            var rng = SeededRandom(7, UInt64(sparsity * 1000))
            var records: [Checkpoint.Record] = []
            var remaining = parameters, index = 0
            while remaining > 0 {
                let n = min(remaining, 1 << 20)
                let values = (0 ..< n).map { _ in rng.nextUnitFloat() < Float(sparsity) ? 0 : rng.nextGaussian() * 0.05 }
                records.append(.init(name: "layer\(index).weight", shape: [n], role: "param", values: values))
                remaining -= n
                index += 1
            }
            if withOptimizer {
                for slot in ["m", "v"] {
                    let values = (0 ..< parameters).map { _ in abs(rng.nextGaussian()) * 1e-3 }
                    records.append(.init(name: "all", shape: [parameters], role: "optimizer/\(slot)", values: values))
                }
            }
            let checkpoint = Checkpoint(step: 1000, runID: "bench", configYAML: "", records: records)
            let floats = parameters * (withOptimizer ? 3 : 1)
            let raw = [Float](repeating: 0.5, count: floats)
            var writes: [Double] = [], reads: [Double] = [], rawWrites: [Double] = [], rawReads: [Double] = []
            var size = 0
            for r in 0 ..< repeats {
                let store = CheckpointStore(runDirectory: folder.appendingPathComponent("run-\(r)"), keep: 1)
                var start = DispatchTime.now().uptimeNanoseconds
                let url = try store.write(checkpoint)
                writes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                size = (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
                start = DispatchTime.now().uptimeNanoseconds
                let back = try CheckpointStore.load(url)
                reads.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                precondition(back.records.count == records.count)

                let rawURL = folder.appendingPathComponent("raw-\(r).f32")
                start = DispatchTime.now().uptimeNanoseconds
                try writeRaw(raw, to: rawURL)
                rawWrites.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                start = DispatchTime.now().uptimeNanoseconds
                let data = try Data(contentsOf: rawURL)
                var decoded = [Float](repeating: 0, count: floats)
                _ = decoded.withUnsafeMutableBufferPointer { o in data.withUnsafeBytes { FloatEncoding.decodeDense($0, into: o) } }
                rawReads.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                precondition(decoded[floats - 1] == 0.5)
            }
            rows.append(Row(what: withOptimizer ? "weights + Adam state" : "weights", sparsity: sparsity, parameters: parameters,
                            fileBytes: size, writeSeconds: median(writes), readSeconds: median(reads), rawBytes: floats * 4,
                            rawWriteSeconds: median(rawWrites), rawReadSeconds: median(rawReads)))
        }
        return rows
    }

    static func writeRaw(_ values: [Float], to url: URL) throws {
        let file = try FileAppender(path: url.path, truncate: true)
        try values.withUnsafeBytes { try file.append($0) }
        try file.sync()
    }

    static func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
}
