import Foundation
@testable import Inference
import Tensors
import Testing

/// Every layout's product against a double-precision product of the same weights.
struct PackedMatrixTests {
    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed, 0x7E57, 0)
        return (0 ..< count).map { _ in 2 * rng.nextUnitFloat() - 1 }
    }

    /// A (rows × columns) matrix with about `density` of its entries kept at random.
    static func sparse(rows: Int, columns: Int, density: Double, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed, 0x5EED, 1)
        return random(rows * columns, seed: seed).map { Double(rng.nextUnitFloat()) < density ? $0 : 0 }
    }

    /// `keep` random survivors in every group of `group` columns of each row.
    static func structured(rows: Int, columns: Int, keep: Int, group: Int, seed: UInt64) -> [Float] {
        var w = random(rows * columns, seed: seed)
        var rng = SeededRandom(seed, 0x4E4D, 2)
        for r in 0 ..< rows {
            var c = 0
            while c < columns {
                let members = Array(c ..< min(columns, c + group))
                var kept = Set<Int>()
                while kept.count < min(keep, members.count) { kept.insert(members[Int(rng.nextUnitFloat() * Float(members.count)) % members.count]) }
                for j in members where !kept.contains(j) { w[r * columns + j] = 0 }
                c += group
            }
        }
        return w
    }

    /// A rank-r (rows × columns) matrix.
    static func lowRank(rows: Int, columns: Int, rank: Int, seed: UInt64) -> [Float] {
        let a = random(rows * rank, seed: seed), b = random(rank * columns, seed: seed + 1)
        var w = [Float](repeating: 0, count: rows * columns)
        for i in 0 ..< rows { for j in 0 ..< columns { for k in 0 ..< rank { w[i * columns + j] += a[i * rank + k] * b[k * columns + j] } } }
        return w
    }

    /// y0 + W x in double.
    static func reference(_ w: [Float], rows: Int, columns: Int, _ x: [Float], n: Int, _ y0: [Float]) -> [Double] {
        var y = y0.map(Double.init)
        for r in 0 ..< rows { for c in 0 ..< columns where w[r * columns + c] != 0 {
            for j in 0 ..< n { y[r * n + j] += Double(w[r * columns + c]) * Double(x[c * n + j]) }
        } }
        return y
    }

    static func check(_ w: [Float], rows: Int, columns: Int, layout: PackedMatrix.Layout, tolerance: Double = 2e-5) throws {
        let m = try #require(PackedMatrix.pack(w, rows: rows, columns: columns, as: layout), "\(layout) refused")
        #expect(m.layout == layout)
        for n in [1, 2, 8, 33, 70] {
            let x = random(columns * n, seed: UInt64(n)), y0 = random(rows * n, seed: UInt64(100 + n))
            var y = y0, scratch: [Float] = []
            x.withUnsafeBufferPointer { x in y.withUnsafeMutableBufferPointer { y in
                m.multiplyAdd(x.baseAddress!, n: n, into: y.baseAddress!, scratch: &scratch)
            } }
            let expected = reference(w, rows: rows, columns: columns, x, n: n, y0)
            // Sums of `columns` terms of magnitude ≤ 1: float error grows with √columns at most linearly.
            let worst = zip(y, expected).map { abs(Double($0) - $1) }.max() ?? 0
            #expect(worst < tolerance * Double(columns), "\(layout) n=\(n): worst error \(worst)")
        }
    }

    @Test(arguments: [0.5, 0.2, 0.1, 0.03])
    func unstructuredLayoutsMatchTheDenseProduct(density: Double) throws {
        let w = Self.sparse(rows: 67, columns: 150, density: density, seed: 3)
        for layout in [PackedMatrix.Layout.dense, .denseTransposed, .csr, .bitmask] {
            try Self.check(w, rows: 67, columns: 150, layout: layout)
        }
    }

    @Test(arguments: [(2, 4), (1, 10), (1, 4), (3, 8)])
    func nmLayoutMatchesTheDenseProduct(keep: Int, group: Int) throws {
        // 150 columns: the last group of 10 (and of 4 and 8) is a short one.
        let w = Self.structured(rows: 40, columns: 150, keep: keep, group: group, seed: 5)
        try Self.check(w, rows: 40, columns: 150, layout: .nm(keep: keep, group: group))
        #expect(PackedMatrix.detectNM(w, rows: 40, columns: 150) != nil)
        // One more value in a group than the pattern keeps: refused.
        var over = w
        for c in 0 ..< group where over[c] == 0 { over[c] = 1; break }
        #expect(PackedMatrix.pack(over, rows: 40, columns: 150, as: .nm(keep: keep, group: group)) == nil)
    }

    @Test func unstructuredMasksHaveNoNMPattern() {
        let w = Self.sparse(rows: 64, columns: 128, density: 0.5, seed: 9)
        #expect(PackedMatrix.detectNM(w, rows: 64, columns: 128) == nil)
    }

    @Test func lowRankFactorsReproduceTheRankRMatrix() throws {
        let w = Self.lowRank(rows: 64, columns: 96, rank: 5, seed: 11)
        try Self.check(w, rows: 64, columns: 96, layout: .lowRank(rank: 5), tolerance: 1e-4)
        let m = try #require(PackedMatrix.pack(w, rows: 64, columns: 96, as: .lowRank(rank: 5)))
        #expect(m.weightBytes == 4 * 5 * (64 + 96))
        // A rank that stores more than the matrix is refused.
        #expect(PackedMatrix.pack(w, rows: 64, columns: 96, as: .lowRank(rank: 60)) == nil)
    }

    @Test func sparseLayoutsStoreExactlyTheNonZeroValues() throws {
        let w = Self.sparse(rows: 30, columns: 200, density: 0.1, seed: 13)
        let nonZero = w.filter { $0 != 0 }.count
        for layout in [PackedMatrix.Layout.csr, .bitmask] {
            let m = try #require(PackedMatrix.pack(w, rows: 30, columns: 200, as: layout))
            #expect(m.nonZero == nonZero)
            #expect(m.unpacked() == w, "\(layout) does not unpack to its weights")
        }
        #expect(PackedMatrix.pack(w, rows: 30, columns: 200, as: .csr)!.weightBytes == 31 * 4 + nonZero * 6)
        #expect(PackedMatrix.pack(w, rows: 30, columns: 200, as: .bitmask)!.weightBytes == 30 * 4 * 8 + 31 * 4 + nonZero * 4)
    }

    @Test func automaticChoiceKeepsACorrectCandidate() throws {
        let w = Self.sparse(rows: 256, columns: 256, density: 0.1, seed: 17)
        let candidates = LayoutChooser.candidates(w, rows: 256, columns: 256, rank: nil)
        #expect(candidates.contains(.csr) && candidates.contains(.bitmask) && candidates.contains(.dense))
        let m = LayoutChooser.pack(w, rows: 256, columns: 256, rank: nil, prunable: true, n: 1, choice: .automatic)
        try Self.check(m.unpacked(), rows: 256, columns: 256, layout: m.layout)
        // Not prunable (a bias-like tensor): dense only, whatever its zeros.
        let fixed = LayoutChooser.pack(w, rows: 256, columns: 256, rank: nil, prunable: false, n: 1, choice: .fixed(.csr))
        #expect(fixed.layout == .dense)
        // A dense matrix offers no sparse candidate.
        #expect(!LayoutChooser.candidates(Self.random(64 * 64, seed: 1), rows: 64, columns: 64, rank: nil).contains(.csr))
    }
}
