import Testing
import Foundation
@testable import CompressedSensing
@testable import Tensors

/// The activations objective e(z) = (z − w)ᵀ G (z − w) under ‖z‖₀ ≤ k, against brute force over
/// every support of a small row.
struct RowRegressionTests {
    /// G = Q diag(λ) Qᵀ with λ log-spaced over [1, condition] and Q a seeded random orthogonal
    /// matrix (Gram–Schmidt in double precision).
    static func conditionedGram(d: Int, condition: Double, seed: UInt64) -> [Double] {
        var rng = SeededRandom(seed, 1)
        var q = [[Double]]()
        while q.count < d {
            var v = (0 ..< d).map { _ in Double(rng.nextGaussian()) }
            for u in q {
                let dot = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0 ..< d { v[i] -= dot * u[i] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            guard norm > 1e-6 else { continue }
            q.append(v.map { $0 / norm })
        }
        let eigen = (0 ..< d).map { Foundation.pow(condition, Double($0) / Double(d - 1)) }
        var g = [Double](repeating: 0, count: d * d)
        for r in 0 ..< d {
            for c in 0 ..< d {
                var s = 0.0
                for k in 0 ..< d { s += q[k][r] * eigen[k] * q[k][c] }
                g[r * d + c] = s
            }
        }
        return g
    }

    /// Least squares on a support in double precision (Gaussian elimination), and its error.
    static func leastSquares(_ g: [Double], _ w: [Double], support: [Int], d: Int) -> (z: [Double], error: Double) {
        let k = support.count
        var a = [[Double]](repeating: [Double](repeating: 0, count: k + 1), count: k)
        for (p, i) in support.enumerated() {
            for (q, j) in support.enumerated() { a[p][q] = g[i * d + j] }
            a[p][k] = (0 ..< d).reduce(0) { $0 + g[i * d + $1] * w[$1] }
        }
        for col in 0 ..< k {
            let pivot = (col ..< k).max { abs(a[$0][col]) < abs(a[$1][col]) }!
            a.swapAt(col, pivot)
            for r in 0 ..< k where r != col {
                let f = a[r][col] / a[col][col]
                for c in col ... k { a[r][c] -= f * a[col][c] }
            }
        }
        var z = [Double](repeating: 0, count: d)
        for (p, i) in support.enumerated() { z[i] = a[p][k] / a[p][p] }
        return (z, error(g, z, w, d: d))
    }

    static func error(_ g: [Double], _ z: [Double], _ w: [Double], d: Int) -> Double {
        var e = 0.0
        for i in 0 ..< d { for j in 0 ..< d { e += (z[i] - w[i]) * g[i * d + j] * (z[j] - w[j]) } }
        return e
    }

    static func supports(_ d: Int, _ k: Int) -> [[Int]] {
        guard k > 0 else { return [[]] }
        guard d >= k else { return [] }
        return supports(d - 1, k - 1).map { $0 + [d - 1] } + supports(d - 1, k)
    }

    @Test(arguments: [SparseRecovery.Solver.niht, .cosamp])
    func nearBruteForceOnIllConditionedRows(solver: SparseRecovery.Solver) {
        let d = 12, k = 4
        let all = Self.supports(d, k)
        #expect(all.count == 495)
        var worstRatio = 0.0, ratios: [Double] = []
        for seed in UInt64(1) ... 60 {
            let g = Self.conditionedGram(d: d, condition: 1e3, seed: seed)
            var rng = SeededRandom(seed, 2)
            let w = (0 ..< d).map { _ in Double(rng.nextGaussian()) }
            let best = all.map { Self.leastSquares(g, w, support: $0, d: d).error }.min()!
            let regression = RowSparseRegression(secondMoment: g.map(Float.init), dimension: d, damping: 0,
                                                 solver: solver, iterations: 50)
            let wf = w.map(Float.init)
            let result = wf.withUnsafeBufferPointer { regression.solve($0, rows: 1, keep: [k]) }
            let chosen = (0 ..< d).filter { result.support[$0] != 0 }
            #expect(chosen.count == k)
            let found = Self.error(g, result.values.map(Double.init), w, d: d)
            worstRatio = max(worstRatio, found / best)
            ratios.append(found / best)
            // The floor: 1.05 × the best of all 495 supports, on every row. Swap rounds alone
            // left the worst of seeds 1–20 at 1.82 × (its best support more than one exchange from
            // both starts' local optima); the restarts' kicks reach it. `restarts: auto` was
            // chosen looking at seeds 1–20; seeds 21–60 were added after, as held-out rows.
            #expect(found <= 1.05 * best, "seed \(seed): \(found) against the best \(best)")
            // Mask-only magnitude pruning: the k largest |w| at their dense values.
            let magnitude = (0 ..< d).sorted { abs(w[$0]) > abs(w[$1]) }.prefix(k)
            var masked = [Double](repeating: 0, count: d)
            for i in magnitude { masked[i] = w[i] }
            #expect(found < Self.error(g, masked, w, d: d), "seed \(seed)")
            // The values are least squares on the returned support.
            let reference = Self.leastSquares(g, w, support: chosen, d: d).z
            for i in 0 ..< d {
                #expect(abs(Double(result.values[i]) - reference[i]) <= 1e-5 * max(1, abs(reference[i])), "seed \(seed), entry \(i)")
            }
        }
        print("\(solver): output error / brute-force best over 60 rows: worst \(worstRatio), mean \(ratios.reduce(0, +) / Double(ratios.count)), within 1.05 × in \(ratios.filter { $0 <= 1.05 }.count)")
    }

    /// The swap rounds end where no single exchange of a kept and a dropped entry lowers the
    /// error (every exchange tried by brute force), each round lowering it; without rounds the
    /// solver's support is returned as it was.
    @Test func swapRoundsEndAtALocalOptimumOfSingleExchanges() {
        let d = 14, k = 5
        for seed in UInt64(1) ... 12 {
            let g = Self.conditionedGram(d: d, condition: 1e4, seed: seed)
            var rng = SeededRandom(seed, 3)
            let w = (0 ..< d).map { _ in Double(rng.nextGaussian()) }
            let wf = w.map(Float.init)
            func solve(_ swaps: Int) -> (support: [Int], error: Double) {
                let regression = RowSparseRegression(secondMoment: g.map(Float.init), dimension: d, damping: 0,
                                                     solver: .niht, iterations: 50, warmStart: .diagonal, swaps: swaps)
                let result = wf.withUnsafeBufferPointer { regression.solve($0, rows: 1, keep: [k]) }
                let chosen = (0 ..< d).filter { result.support[$0] != 0 }
                return (chosen, Self.error(g, result.values.map(Double.init), w, d: d))
            }
            let before = solve(0), after = solve(100)
            #expect(after.support.count == k)
            #expect(after.error <= before.error * (1 + 1e-9), "seed \(seed): swaps raised the error")
            for out in after.support {
                for into in 0 ..< d where !after.support.contains(into) {
                    let exchanged = after.support.filter { $0 != out } + [into]
                    let e = Self.leastSquares(g, w, support: exchanged.sorted(), d: d).error
                    #expect(e >= after.error * (1 - 1e-6), "seed \(seed): exchanging \(out) for \(into) gives \(e) < \(after.error)")
                }
            }
        }
    }

    /// The cheap start (|w|·√G_ii) gives k entries with least-squares values, no worse than its
    /// own start, and on average no better than backward elimination.
    @Test func diagonalWarmStartIsARefittedSupport() {
        let d = 12, k = 4
        var sums = (obs: 0.0, diagonal: 0.0)
        for seed in UInt64(1) ... 20 {
            let g = Self.conditionedGram(d: d, condition: 1e3, seed: seed)
            var rng = SeededRandom(seed, 2)
            let w = (0 ..< d).map { _ in Double(rng.nextGaussian()) }
            let wf = w.map(Float.init)
            for start in [RowSparseRegression.WarmStart.obs, .diagonal] {
                // The starts compared without swap rounds, which would blur them.
                let regression = RowSparseRegression(secondMoment: g.map(Float.init), dimension: d, damping: 0, solver: .niht,
                                                     iterations: 50, warmStart: start, swaps: 0)
                let result = wf.withUnsafeBufferPointer { regression.solve($0, rows: 1, keep: [k]) }
                let chosen = (0 ..< d).filter { result.support[$0] != 0 }
                #expect(chosen.count == k)
                let reference = Self.leastSquares(g, w, support: chosen, d: d)
                for i in 0 ..< d { #expect(abs(Double(result.values[i]) - reference.z[i]) <= 1e-5 * max(1, abs(reference.z[i]))) }
                let diagonalStart = (0 ..< d).sorted { abs(w[$0]) * g[$0 * d + $0].squareRoot() > abs(w[$1]) * g[$1 * d + $1].squareRoot() }.prefix(k)
                if start == .diagonal {
                    #expect(reference.error <= Self.leastSquares(g, w, support: Array(diagonalStart), d: d).error * (1 + 1e-9))
                    sums.diagonal += reference.error
                } else {
                    sums.obs += reference.error
                }
            }
        }
        #expect(sums.obs <= sums.diagonal, "\(sums)")
    }

    /// With G = I the problem is Euclidean: the support is the top-k by magnitude, values kept.
    @Test func identityGramIsMagnitudePruning() {
        let d = 10
        var identity = [Float](repeating: 0, count: d * d)
        for i in 0 ..< d { identity[i * d + i] = 1 }
        let w: [Float] = [0.3, -2, 0.1, 1.5, -0.2, 0.05, 0.9, -1.1, 0, 0.4]
        let regression = RowSparseRegression(secondMoment: identity, dimension: d, damping: 0, solver: .niht, iterations: 30)
        let result = w.withUnsafeBufferPointer { regression.solve($0, rows: 1, keep: [3]) }
        #expect(result.values == [0, -2, 0, 1.5, 0, 0, 0, -1.1, 0, 0])
    }
}
