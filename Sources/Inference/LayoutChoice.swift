import Foundation

/// How each weight matrix of a model is packed for inference.
public enum LayoutChoice: Sendable, Equatable {
    /// The candidates the matrix's zeros allow (dense; N:M when the mask has that structure,
    /// low-rank when the checkpoint says the tensor was factored, CSR and bitmask rows below 75%
    /// density), each timed on the matrix itself at the product's width; the fastest is kept, so
    /// a density where sparse does not pay runs dense.
    case automatic
    /// Dense products everywhere, the faster of OpenBLAS and csptrain's few-rows kernel per
    /// matrix (timed as for `automatic`): the baseline.
    case dense
    /// Every prunable matrix in this layout when its weights fit it; dense otherwise. `lowRank`
    /// applies to the matrices with a rank in `InferenceModel.Options.ranks`, at that rank.
    case fixed(PackedMatrix.Layout)
}

/// Picks the packing of one matrix.
public enum LayoutChooser {
    /// The layouts `automatic` tries for this matrix.
    public static func candidates(_ w: [Float], rows: Int, columns: Int, rank: Int?) -> [PackedMatrix.Layout] {
        var out: [PackedMatrix.Layout] = [.dense, .denseTransposed]
        if let rank, rank * (rows + columns) < rows * columns { out.append(.lowRank(rank: rank)) }
        let nonZero = w.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
        if nonZero * 4 < w.count * 3 {
            if let nm = PackedMatrix.detectNM(w, rows: rows, columns: columns) { out.append(nm) }
            out += [.csr, .bitmask]
        }
        return out
    }

    /// Packs `w` as `choice` says; `n` is the product's usual width (columns of x), at which
    /// `automatic` times the candidates.
    public static func pack(_ w: [Float], rows: Int, columns: Int, rank: Int?, prunable: Bool, n: Int,
                            choice: LayoutChoice) -> PackedMatrix {
        let dense = { PackedMatrix.pack(w, rows: rows, columns: columns, as: .dense)! }
        switch choice {
        case .dense:
            let both = [dense(), PackedMatrix.pack(w, rows: rows, columns: columns, as: .denseTransposed)!]
            return fastest(both, n: n).matrix
        case let .fixed(layout):
            guard prunable else { return dense() }
            if case .lowRank = layout {
                // Factors only of the tensors the checkpoint factored, at their own rank.
                guard let rank else { return dense() }
                return PackedMatrix.pack(w, rows: rows, columns: columns, as: .lowRank(rank: rank)) ?? dense()
            }
            return PackedMatrix.pack(w, rows: rows, columns: columns, as: layout) ?? dense()
        case .automatic:
            let packed = candidates(w, rows: rows, columns: columns, rank: prunable ? rank : nil)
                .filter { prunable || $0.isDense }
                .compactMap { PackedMatrix.pack(w, rows: rows, columns: columns, as: $0) }
            return fastest(packed, n: n).matrix
        }
    }

    /// The candidate with the shortest product at width `n` (best of several timed runs on
    /// random activations), with every candidate's seconds per product.
    public static func fastest(_ candidates: [PackedMatrix], n: Int) -> (matrix: PackedMatrix, seconds: [Double]) {
        precondition(!candidates.isEmpty)
        guard candidates.count > 1 else { return (candidates[0], [0]) }
        let first = candidates[0]
        var x = [Float](repeating: 0, count: first.columns * n)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in x.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            x[i] = Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
        var y = [Float](repeating: 0, count: first.rows * n)
        var scratch: [Float] = []
        let timings = candidates.map { m in
            seconds(perProductOf: m, x: x, n: n, y: &y, scratch: &scratch)
        }
        let best = timings.indices.min { timings[$0] < timings[$1] }!
        return (candidates[best], timings)
    }

    /// Seconds of one product: the best of five rounds of enough products to take ~0.3 ms.
    static func seconds(perProductOf m: PackedMatrix, x: [Float], n: Int, y: inout [Float], scratch: inout [Float]) -> Double {
        let clock = ContinuousClock()
        func run(_ times: Int) -> Double {
            let start = clock.now
            x.withUnsafeBufferPointer { x in y.withUnsafeMutableBufferPointer { y in
                for _ in 0 ..< times { m.multiplyAdd(x.baseAddress!, n: n, into: y.baseAddress!, scratch: &scratch) }
            } }
            let d = clock.now - start
            return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        let once = max(run(1), 1e-7)
        let times = max(1, min(1000, Int(3e-4 / once)))
        var best = Double.infinity
        for _ in 0 ..< 5 { best = min(best, run(times) / Double(times)) }
        return best
    }
}
