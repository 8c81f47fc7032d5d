import Checkpoints
import Foundation
import Models
import Pruning
import Tensors

/// The models `bench --only inference` compares: one set of weights per (layout, sparsity),
/// pruned with random masks (or truncated SVDs) the way the projection methods prune: every
/// prunable matrix but conv.0 and the output layer, which stay dense by default.
public enum InferenceModels {
    public struct Variant: Sendable {
        /// "dense", "unstructured", "2:4", "1:10", "lowrank".
        public var layout: String
        /// Fraction of the prunable weights' stored parameters removed.
        public var sparsity: Double
        public var parameters: [Float]
        /// Ranks of factored tensors (low-rank only).
        public var ranks: [String: Int] = [:]
    }

    public static let excluded: Set<String> = ["conv.0.weight", "output.weight"]

    static func pruned(_ model: AcousticModel) -> [TensorSpec] {
        model.layout.tensors.filter { $0.prunable && $0.shape.count >= 2 && !excluded.contains($0.name) }
    }

    /// Unstructured: each weight kept with probability 1 − s.
    public static func unstructured(_ model: AcousticModel, _ base: [Float], sparsity s: Double) -> Variant {
        var p = base
        for spec in pruned(model) {
            var rng = SeededRandom(11, UInt64(spec.offset), UInt64(s * 1000))
            for i in spec.range where Double(rng.nextUnitFloat()) < s { p[i] = 0 }
        }
        return Variant(layout: s == 0 ? "dense" : "unstructured", sparsity: s, parameters: p)
    }

    /// N:M along the input dimension: `keep` random survivors per group of `group` columns.
    public static func nm(_ model: AcousticModel, _ base: [Float], keep: Int, group: Int) -> Variant {
        var p = base
        for spec in pruned(model) {
            let rows = spec.shape[0], columns = spec.count / rows
            var rng = SeededRandom(13, UInt64(spec.offset))
            for r in 0 ..< rows {
                var c = 0
                while c < columns {
                    let size = min(group, columns - c)
                    var kept = Set<Int>()
                    while kept.count < min(keep, size) { kept.insert(Int(rng.nextUnitFloat() * Float(size)) % size) }
                    for j in 0 ..< size where !kept.contains(j) { p[spec.offset + r * columns + c + j] = 0 }
                    c += group
                }
            }
        }
        return Variant(layout: "\(keep):\(group)", sparsity: 1 - Double(keep) / Double(group), parameters: p)
    }

    /// Low-rank: each pruned matrix replaced by its best rank-r approximation, r storing about
    /// 1 − s of its parameters as two factors (LowRankProjection's rule).
    public static func lowRank(_ model: AcousticModel, _ base: [Float], sparsity s: Double) -> Variant {
        var p = base
        var ranks: [String: Int] = [:]
        for spec in pruned(model) {
            let rows = spec.shape[0], columns = spec.count / rows
            guard let r = LowRankProjection.rank(rows: rows, columns: columns, sparsity: s) else { continue }
            var values = Array(p[spec.range])
            guard let svd = values.withUnsafeBufferPointer({ SVD($0, rows: rows, columns: columns) }) else { continue }
            values.withUnsafeMutableBufferPointer { svd.truncated(r, into: $0) }
            p.replaceSubrange(spec.range, with: values)
            ranks[spec.name] = r
        }
        return Variant(layout: "lowrank", sparsity: s, parameters: p, ranks: ranks)
    }

    /// Bytes of the exported model: dense safetensors, compressed-tensors' bitmask layout, and
    /// csptrain's own compact layout (a weights-only checkpoint: Rice-coded positions where
    /// smaller, float32 values, a CRC per record).
    public static func fileSizes(_ model: AcousticModel, _ p: [Float]) throws -> (dense: Int, bitmask: Int, rice: Int) {
        var dense = SafeTensorsWriter(), bitmask = SafeTensorsWriter()
        var records: [Checkpoint.Record] = []
        let prunable = Set(pruned(model).map(\.name))
        for spec in model.layout.tensors {
            let values = Array(p[spec.range])
            dense.add(spec.name, floats: values, shape: spec.shape)
            if prunable.contains(spec.name) {
                let parts = SparseBitmask.compress(values, shape: spec.shape)
                let prefix = SparseBitmask.prefix(of: spec.name)
                bitmask.add("\(prefix).shape", int64: spec.shape.map { Int64($0) }, shape: [spec.shape.count])
                bitmask.add("\(prefix).compressed", floats: parts.compressed, shape: [parts.compressed.count])
                bitmask.add("\(prefix).bitmask", bytes: parts.bitmask, shape: [parts.rows, (parts.columns + 7) / 8])
                bitmask.add("\(prefix).row_offsets", int64: parts.rowOffsets, shape: [parts.rows])
            } else {
                bitmask.add(spec.name, floats: values, shape: spec.shape)
            }
            records.append(Checkpoint.Record(name: spec.name, shape: spec.shape, role: "param", values: values))
        }
        let compact = Checkpoint(step: 0, runID: "bench", configYAML: "", records: records).encoded()
        return (try dense.encoded().count, try bitmask.encoded().count, compact.count)
    }
}
