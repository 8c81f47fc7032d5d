import CKernels
import Tensors

extension PackedMatrix {
    /// Packs a row-major (rows × columns) matrix in `layout`; its zeros are the mask. Nil when the
    /// weights do not fit the layout: more than 65,536 columns for `csr`, a group holding more
    /// than `keep` values for `nm`, a rank the SVD cannot give or that saves nothing for `lowRank`.
    public static func pack(_ w: [Float], rows: Int, columns: Int, as layout: Layout) -> PackedMatrix? {
        precondition(w.count == rows * columns, "pack: \(w.count) values for \(rows) × \(columns)")
        let nonZero = w.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
        func make(_ storage: Storage) -> PackedMatrix {
            PackedMatrix(rows: rows, columns: columns, layout: layout, storage: storage, nonZero: nonZero)
        }
        switch layout {
        case .dense:
            return make(.dense(w))
        case .denseTransposed:
            var wt = [Float](repeating: 0, count: w.count)
            w.withUnsafeBufferPointer { src in wt.withUnsafeMutableBufferPointer { csp_transpose(src.baseAddress!, rows, columns, $0.baseAddress!) } }
            return make(.denseTransposed(wt))
        case .csr:
            guard columns <= 1 << 16 else { return nil }
            var rowStart = [Int32](repeating: 0, count: rows + 1)
            var cols: [UInt16] = [], values: [Float] = []
            cols.reserveCapacity(nonZero)
            values.reserveCapacity(nonZero)
            for r in 0 ..< rows {
                for c in 0 ..< columns where w[r * columns + c] != 0 {
                    cols.append(UInt16(c))
                    values.append(w[r * columns + c])
                }
                rowStart[r + 1] = Int32(values.count)
            }
            return make(.csr(rowStart: rowStart, columns: cols, values: values))
        case .bitmask:
            let words = (columns + 63) / 64
            var masks = [UInt64](repeating: 0, count: rows * words)
            var rowStart = [Int32](repeating: 0, count: rows + 1)
            var values: [Float] = []
            values.reserveCapacity(nonZero)
            for r in 0 ..< rows {
                for c in 0 ..< columns where w[r * columns + c] != 0 {
                    masks[r * words + c / 64] |= 1 << UInt64(c % 64)
                    values.append(w[r * columns + c])
                }
                rowStart[r + 1] = Int32(values.count)
            }
            return make(.bitmask(words: words, masks: masks, rowStart: rowStart, values: values))
        case let .nm(keep, group):
            guard keep >= 1, group >= keep, group <= 256 else { return nil }
            let groups = (columns + group - 1) / group
            var offsets = [UInt8](repeating: 0, count: rows * groups * keep)
            var values = [Float](repeating: 0, count: rows * groups * keep)
            for r in 0 ..< rows {
                for g in 0 ..< groups {
                    var slot = 0
                    for c in g * group ..< min(columns, (g + 1) * group) where w[r * columns + c] != 0 {
                        guard slot < keep else { return nil }
                        let i = (r * groups + g) * keep + slot
                        offsets[i] = UInt8(c - g * group)
                        values[i] = w[r * columns + c]
                        slot += 1
                    }
                }
            }
            return make(.nm(groups: groups, offsets: offsets, values: values))
        case let .lowRank(rank):
            guard rank >= 1, rank <= min(rows, columns), rank * (rows + columns) < rows * columns else { return nil }
            guard let svd = w.withUnsafeBufferPointer({ SVD($0, rows: rows, columns: columns) }) else { return nil }
            // W ≈ (L_r σ_r) · R_r: exact when W has rank r (the projection made it so).
            var a = svd.leftColumns(rank)
            for i in 0 ..< rows { for j in 0 ..< rank { a[i * rank + j] *= svd.singularValues[j] } }
            let b = Array(svd.right[0 ..< rank * columns])
            return make(.lowRank(a: a, b: b))
        }
    }

    /// The N:M pattern of a matrix's zeros, if it has one: the smallest `keep` for which every
    /// group of `group` consecutive columns holds at most `keep` values, among the groups tried
    /// (4, 8, 10, 16), and only when that keeps at most half. Nil for unstructured masks.
    public static func detectNM(_ w: [Float], rows: Int, columns: Int, groups tried: [Int] = [4, 8, 10, 16]) -> Layout? {
        var best: (keep: Int, group: Int)?
        for group in tried where group <= columns {
            var keep = 0
            for r in 0 ..< rows {
                var c = 0
                while c < columns {
                    var count = 0
                    for j in c ..< min(columns, c + group) where w[r * columns + j] != 0 { count += 1 }
                    keep = max(keep, count)
                    c += group
                }
            }
            guard keep * 2 <= group, keep > 0 else { continue }
            if best.map({ Double(keep) / Double(group) < Double($0.keep) / Double($0.group) }) ?? true { best = (keep, group) }
        }
        return best.map { .nm(keep: $0.keep, group: $0.group) }
    }

    /// W as a dense row-major matrix again (for tests and for checking a packing).
    public func unpacked() -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        var identity = [Float](repeating: 0, count: columns * columns)
        for i in 0 ..< columns { identity[i * columns + i] = 1 }
        var scratch: [Float] = []
        identity.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { y in
            multiplyAdd(x.baseAddress!, n: columns, into: y.baseAddress!, scratch: &scratch)
        } }
        return out
    }
}
