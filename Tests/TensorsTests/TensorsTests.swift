import Foundation
import Testing
@testable import Tensors

struct CRC32CTests {
    /// The crc32 instruction and the tables agree on every length and alignment.
    @Test func instructionAndTablesAgree() {
        var rng = SeededRandom(3, 3)
        let bytes = (0 ..< 5000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        bytes.withUnsafeBytes { raw in
            for (start, end) in [(0, 0), (0, 1), (1, 8), (3, 64), (7, 4999), (0, 5000)] {
                let slice = UnsafeRawBufferPointer(rebasing: raw[start ..< end])
                var fast = CRC32C(), slow = CRC32C()
                fast.update(slice)
                slow.updateWithTables(slice)
                #expect(fast.value == slow.value, "bytes \(start)..<\(end)")
            }
        }
    }

    // Test vectors from RFC 3720 (iSCSI), appendix B.4, and the standard check value.
    @Test func knownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0 ..< 32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0 ..< 32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
        #expect(CRC32C.checksum([]) == 0)
    }

    @Test func incrementalEqualsOneShot() {
        let bytes = (0 ..< 1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var crc = CRC32C()
        bytes.withUnsafeBytes { raw in
            crc.update(UnsafeRawBufferPointer(rebasing: raw[0 ..< 13]))
            crc.update(UnsafeRawBufferPointer(rebasing: raw[13...]))
        }
        #expect(crc.value == CRC32C.checksum(bytes))
    }
}

struct EncodingTests {
    @Test func denseRoundTrip() {
        let values: [Float] = [0, -1.5, .pi, 1e-30, -0.0, .greatestFiniteMagnitude]
        let bytes = values.withUnsafeBufferPointer { FloatEncoding.denseBytes($0) }
        #expect(bytes.count == 24)
        #expect(Array(bytes[4 ..< 8]) == [0, 0, 0xC0, 0xBF])  // -1.5 little-endian
        var out = [Float](repeating: 9, count: values.count)
        let ok = bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { FloatEncoding.decodeDense(b, into: $0) } }
        #expect(ok)
        #expect(out.map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test func bitmaskRoundTripAndSize() {
        var rng = SeededRandom(42)
        let values: [Float] = (0 ..< 1001).map { _ in rng.nextUnitFloat() < 0.1 ? rng.nextGaussian() : 0 }
        let nonZero = values.filter { $0 != 0 }.count
        let (mask, packed) = values.withUnsafeBufferPointer { FloatEncoding.bitmask($0) }
        #expect(mask.count == 126)
        #expect(packed.count == nonZero * 4)
        #expect(mask.count + packed.count == FloatEncoding.bitmaskSize(count: 1001, nonZero: nonZero))
        var out = [Float](repeating: 7, count: values.count)
        let ok = mask.withUnsafeBytes { m in packed.withUnsafeBytes { p in
            out.withUnsafeMutableBufferPointer { FloatEncoding.decodeBitmask(mask: m, nonZero: p, into: $0) } } }
        #expect(ok)
        #expect(out == values)
    }

    @Test func bitmaskRejectsInconsistentSizes() {
        let mask: [UInt8] = [0b0000_0011]
        let oneValue = FloatEncoding.denseBytes([Float(1)])
        var out = [Float](repeating: 0, count: 8)
        let ok = mask.withUnsafeBytes { m in oneValue.withUnsafeBytes { p in
            out.withUnsafeMutableBufferPointer { FloatEncoding.decodeBitmask(mask: m, nonZero: p, into: $0) } } }
        #expect(!ok)  // two bits set, one value
    }
}

struct LayoutTests {
    @Test func offsetsAndSparsity() {
        let layout = ParameterLayout([("w", [2, 3], true), ("b", [2], false)])
        #expect(layout.totalCount == 8)
        #expect(layout["b"]?.range == 6 ..< 8)
        #expect(layout.prunableCount == 6)
        let report = SparsityReport([0, 1, 0, 0, 2, 3, 0, 0], layout: layout)
        #expect(report.prunable == 0.5)
        #expect(report.overall == 5.0 / 8.0)
    }

    @Test func gemmMatchesHandComputation() {
        // (2×3) · (3×2) = (2×2)
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        c.withUnsafeMutableBufferPointer { VectorMath.gemm(m: 2, n: 2, k: 3, a, b, $0.baseAddress!) }
        #expect(c == [58, 64, 139, 154])
        // aᵀ (3×2) · a (2×3) = (3×3), first row [17, 22, 27]
        var d = [Float](repeating: 0, count: 9)
        d.withUnsafeMutableBufferPointer { VectorMath.gemm(transposeA: true, m: 3, n: 3, k: 2, a, a, $0.baseAddress!) }
        #expect(Array(d[0 ..< 3]) == [17, 22, 27])
    }

    @Test func seededRandomIsAPureFunctionOfItsKey() {
        var a = SeededRandom(1, 2, 3)
        var b = SeededRandom(1, 2, 3)
        var c = SeededRandom(1, 2, 4)
        let xs = (0 ..< 5).map { _ in a.next() }
        #expect(xs == (0 ..< 5).map { _ in b.next() })
        #expect(xs != (0 ..< 5).map { _ in c.next() })
        var g = SeededRandom(9)
        let samples = (0 ..< 20000).map { _ in Double(g.nextGaussian()) }
        let mean = samples.reduce(0, +) / 20000
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20000
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }
}

struct RiceGapsTests {
    static func sparse(count: Int, density: Double, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed)
        return (0 ..< count).map { _ in Double(rng.nextUnitFloat()) < density ? rng.nextGaussian() + 3 : 0 }
    }

    func roundTrip(_ values: [Float]) -> [Float]? {
        let (code, nonZero) = values.withUnsafeBufferPointer { RiceGaps.encode($0) }
        let packed = values.withUnsafeBufferPointer { FloatEncoding.nonZeroBytes($0) }
        #expect(packed.count == nonZero * 4)
        var out = [Float](repeating: .nan, count: values.count)
        let ok = code.withUnsafeBytes { c in packed.withUnsafeBytes { p in out.withUnsafeMutableBufferPointer { FloatEncoding.decodeRice(code: c, nonZero: p, into: $0) } } }
        return ok ? out : nil
    }

    @Test(arguments: [0.0, 0.003, 0.05, 0.3, 0.7, 1.0])
    func roundTripsAtEveryDensity(density: Double) {
        let values = Self.sparse(count: 5000, density: density, seed: 9)
        #expect(roundTrip(values) == values)
    }

    @Test func edgeCases() {
        #expect(roundTrip([]) == [])
        #expect(roundTrip([0, 0, 0]) == [0, 0, 0])
        #expect(roundTrip([1]) == [1])
        #expect(roundTrip([0, 0, 5]) == [0, 0, 5])
        #expect(roundTrip([5, 0, 0]) == [5, 0, 0])
    }

    @Test func parameterSearchFindsTheExhaustiveOptimum() {
        var rng = SeededRandom(23)
        for trial in 0 ..< 200 {
            let spread = 1 << (trial % 20)
            let gaps = (0 ..< 1 + trial % 50).map { _ in Int(rng.next() % UInt64(spread)) }
            let sizes = (0 ... 24).map { k in gaps.reduce(0) { $0 + ($1 >> k) + 1 + k } }
            #expect(RiceGaps.bestParameter(gaps) == sizes.firstIndex(of: sizes.min()!)!, "gaps \(gaps)")
        }
    }

    @Test func malformedCodesAreRefused() {
        let values: [Float] = [0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0, 3]
        let (code, nonZero) = values.withUnsafeBufferPointer { RiceGaps.encode($0) }
        code.withUnsafeBytes { c in
            #expect(RiceGaps.decode(c, count: 12, nonZero: nonZero) != nil)
            #expect(RiceGaps.decode(c, count: 12, nonZero: nonZero + 1) == nil)   // more values than positions
            #expect(RiceGaps.decode(c, count: 8, nonZero: nonZero) == nil)        // a position past the end
            #expect(RiceGaps.decode(UnsafeRawBufferPointer(rebasing: c[0 ..< 1]), count: 12, nonZero: nonZero) == nil)  // truncated
        }
        #expect((code + [0xFF]).withUnsafeBytes { RiceGaps.decode($0, count: 12, nonZero: nonZero) } == nil)  // trailing garbage
        #expect([UInt8(99)].withUnsafeBytes { RiceGaps.decode($0, count: 12, nonZero: 0) } == nil)            // k out of range
    }

    /// Encoded bytes per value (positions and float32 values) against the information bound
    /// H(d)/8 + 4d at the densities the pruning targets produce.
    @Test(arguments: [0.5, 0.2, 0.1, 0.05, 0.01])
    func withinFifteenPercentOfTheBound(density: Double) {
        let count = 200_000
        let values = Self.sparse(count: count, density: density, seed: 17)
        let nonZero = values.filter { $0 != 0 }.count
        let d = Double(nonZero) / Double(count)
        let entropy = -d * log2(d) - (1 - d) * log2(1 - d)
        let bound = entropy / 8 + 4 * d
        let code = values.withUnsafeBufferPointer { RiceGaps.encode($0) }.code
        let ours = Double(code.count + nonZero * 4) / Double(count)
        #expect(ours <= 1.15 * bound, "density \(d): \(ours) bytes per value, bound \(bound)")
        // The mask part alone stays within 10% of its entropy.
        #expect(Double(code.count) * 8 / Double(count) <= 1.10 * entropy, "mask bits per value at density \(d)")
    }
}
