import Testing
@testable import CompressedSensing
@testable import Tensors

/// Planted sparse signals: k-sparse blocks measured through Φ, recovered by each solver.
struct RecoveryTests {
    /// `blocks` blocks of b values, block j k-sparse on a random support with N(0, 1) values
    /// bounded away from zero (|v| ≥ 0.5), so that the support is well defined.
    static func planted(blocks: Int, b: Int, k: Int, seed: UInt64) -> (values: [Float], support: [Set<Int>]) {
        var rng = SeededRandom(seed)
        var values = [Float](repeating: 0, count: blocks * b)
        var supports: [Set<Int>] = []
        for j in 0 ..< blocks {
            var order = Array(0 ..< b)
            for i in 0 ..< k { order.swapAt(i, i + Int(rng.next() % UInt64(b - i))) }
            let support = Set(order.prefix(k))
            for i in support {
                let g = rng.nextGaussian()
                values[j * b + i] = g >= 0 ? g + 0.5 : g - 0.5
            }
            supports.append(support)
        }
        return (values, supports)
    }

    static func run(_ solver: SparseRecovery.Solver, kind: MeasurementOperator.Kind, b: Int, m: Int, k: Int,
                    blocks: Int, iterations: Int) throws -> (overlap: Double, error: Double) {
        let phi = try MeasurementOperator(kind: kind, rows: m, columns: b, seed: 42)
        let (values, supports) = planted(blocks: blocks, b: b, k: k, seed: UInt64(m * 31 + k))
        var y = [Float](repeating: 0, count: blocks * m)
        values.withUnsafeBufferPointer { v in y.withUnsafeMutableBufferPointer { phi.measure(v, blocks: blocks, into: $0) } }
        let recovery = SparseRecovery(phi: phi, solver: solver, iterations: iterations)
        let result = y.withUnsafeBufferPointer { recovery.recover($0, blocks: blocks, k: Array(repeating: k, count: blocks)) }
        var found = 0
        var errorSquared = 0.0, normSquared = 0.0
        for j in 0 ..< blocks {
            for i in 0 ..< b {
                if result.support[j * b + i] != 0, supports[j].contains(i) { found += 1 }
                let d = Double(result.estimates[j * b + i] - values[j * b + i])
                errorSquared += d * d
                normSquared += Double(values[j * b + i]) * Double(values[j * b + i])
            }
            #expect(result.support[j * b ..< (j + 1) * b].reduce(0) { $0 + Int($1) } == k, "block \(j) support size")
        }
        return (Double(found) / Double(blocks * k), (errorSquared / normSquared).squareRoot())
    }

    // Well inside the region where theory guarantees recovery: k = 8 of b = 256 from m = 128.
    @Test(arguments: MeasurementOperator.Kind.allCases)
    func nihtRecoversPlantedSupportsExactly(kind: MeasurementOperator.Kind) throws {
        let (overlap, error) = try Self.run(.niht, kind: kind, b: 256, m: 128, k: 8, blocks: 16, iterations: 60)
        #expect(overlap == 1, "\(kind): support overlap \(overlap)")
        #expect(error < 1e-3, "\(kind): relative error \(error)")
    }

    @Test func cosampRecoversPlantedSupportsExactly() throws {
        let (overlap, error) = try Self.run(.cosamp, kind: .gaussian, b: 256, m: 128, k: 8, blocks: 8, iterations: 20)
        #expect(overlap == 1, "support overlap \(overlap)")
        #expect(error < 1e-3, "relative error \(error)")
    }

    @Test func fistaFindsPlantedSupports() throws {
        // The l1 estimate is shrunk (biased towards zero), but its support is the planted one.
        let (overlap, error) = try Self.run(.fista, kind: .gaussian, b: 256, m: 128, k: 8, blocks: 8, iterations: 400)
        #expect(overlap == 1, "support overlap \(overlap)")
        #expect(error < 0.2, "relative error \(error)")
    }

    // Outside it: m = k measurements cannot determine a k-sparse block of 256 (m ≪ 2k ln(b/k) = 56).
    @Test(arguments: SparseRecovery.Solver.allCases)
    func tooFewMeasurementsFailAndSaySo(solver: SparseRecovery.Solver) throws {
        let (overlap, error) = try Self.run(solver, kind: .gaussian, b: 256, m: 8, k: 8, blocks: 8, iterations: 60)
        #expect(overlap < 0.6, "\(solver): support overlap \(overlap) from 8 measurements")
        #expect(error > 0.5, "\(solver): relative error \(error)")
    }

    @Test(arguments: SparseRecovery.Solver.allCases)
    func paddingIsNeverPartOfASupport(solver: SparseRecovery.Solver) throws {
        // A layer's last block: 36 real (dense) values and 28 zeros of padding.
        let b = 64, m = 40
        let phi = try MeasurementOperator(kind: .gaussian, rows: m, columns: b, seed: 4)
        var rng = SeededRandom(8)
        let values = (0 ..< b).map { $0 < 36 ? rng.nextGaussian() : 0 }
        var y = [Float](repeating: 0, count: m)
        values.withUnsafeBufferPointer { v in y.withUnsafeMutableBufferPointer { phi.measure(v, blocks: 1, into: $0) } }
        let result = y.withUnsafeBufferPointer { SparseRecovery(phi: phi, solver: solver, iterations: 30).recover($0, blocks: 1, k: [18], lengths: [36]) }
        #expect(result.support[36...].allSatisfy { $0 == 0 } && result.estimates[36...].allSatisfy { $0 == 0 })
        #expect(result.support.reduce(0) { $0 + Int($1) } == 18)
    }

    @Test func blocksWithDifferentSparsityAreRecoveredTogether() throws {
        let b = 64, m = 48
        let phi = try MeasurementOperator(kind: .rademacher, rows: m, columns: b, seed: 3)
        let a = Self.planted(blocks: 1, b: b, k: 2, seed: 1), c = Self.planted(blocks: 1, b: b, k: 6, seed: 2)
        let values = a.values + c.values
        var y = [Float](repeating: 0, count: 2 * m)
        values.withUnsafeBufferPointer { v in y.withUnsafeMutableBufferPointer { phi.measure(v, blocks: 2, into: $0) } }
        let result = y.withUnsafeBufferPointer { SparseRecovery(phi: phi, solver: .niht, iterations: 60).recover($0, blocks: 2, k: [2, 6]) }
        #expect(Set((0 ..< b).filter { result.support[$0] != 0 }) == a.support[0])
        #expect(Set((0 ..< b).filter { result.support[b + $0] != 0 }) == c.support[0])
    }
}

struct MeasurementTests {
    @Test func srhtRowsAreOrthogonal() throws {
        let b = 64, m = 16
        let phi = try MeasurementOperator(kind: .srht, rows: m, columns: b, seed: 9)
        for r in 0 ..< m {
            for s in 0 ..< m {
                var dot: Float = 0
                for c in 0 ..< b { dot += phi.matrix[r * b + c] * phi.matrix[s * b + c] }
                #expect(abs(dot - (r == s ? Float(b) / Float(m) : 0)) < 1e-5, "rows \(r), \(s)")
            }
        }
    }

    @Test(arguments: MeasurementOperator.Kind.allCases)
    func columnsHaveUnitNormOnAverage(kind: MeasurementOperator.Kind) throws {
        let phi = try MeasurementOperator(kind: kind, rows: 128, columns: 256, seed: 1)
        var total: Float = 0
        for c in 0 ..< 256 { for r in 0 ..< 128 { total += phi.matrix[r * 256 + c] * phi.matrix[r * 256 + c] } }
        #expect(abs(total / 256 - 1) < 0.02)
    }

    @Test func sameSeedSameOperatorOtherSeedOther() throws {
        let a = try MeasurementOperator(kind: .gaussian, rows: 8, columns: 32, seed: 5)
        #expect(try MeasurementOperator(kind: .gaussian, rows: 8, columns: 32, seed: 5).matrix == a.matrix)
        #expect(try MeasurementOperator(kind: .gaussian, rows: 8, columns: 32, seed: 6).matrix != a.matrix)
    }

    @Test func automaticMeasurementCount() {
        // m = min(b, max(2k, ⌈2·k·ln(b/k)⌉))
        #expect(MeasurementOperator.automaticRows(columns: 256, sparsity: 26) == 119)
        #expect(MeasurementOperator.automaticRows(columns: 256, sparsity: 100) == 200)   // 2k·ln(b/k) = 188 < 2k
        #expect(MeasurementOperator.automaticRows(columns: 256, sparsity: 128) == 256)   // min(b, 2k)
        #expect(MeasurementOperator.automaticRows(columns: 256, sparsity: 3) == 27)
        #expect(MeasurementOperator.automaticRows(columns: 256, sparsity: 256) == 256)
    }

    @Test func badShapesAreErrors() {
        #expect(throws: CompressedSensingError.self) { try MeasurementOperator(kind: .gaussian, rows: 300, columns: 256, seed: 1) }
        #expect(throws: CompressedSensingError.self) { try MeasurementOperator(kind: .srht, rows: 10, columns: 100, seed: 1) }
    }
}
