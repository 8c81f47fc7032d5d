import Foundation
import Testing
@testable import Tensors

/// The two sums of squares (the gradient norm's four sums, the chunk check's sixteen) against a
/// Kahan-compensated sum of the exact double products, at lengths around every lane boundary.
struct SumOfSquaresTests {
    static func reference(_ x: [Float]) -> Double {
        var sum = 0.0, compensation = 0.0
        for v in x {
            let y = Double(v) * Double(v) - compensation
            let t = sum + y
            compensation = (t - sum) - y
            sum = t
        }
        return sum
    }

    @Test(arguments: [1, 3, 4, 15, 16, 17, 31, 33, 1000, 262_144 + 7])
    func bothSumsAgreeWithTheReference(count: Int) {
        var generator = SystemRandomNumberGenerator()
        let x = (0 ..< count).map { _ in Float.random(in: -3 ... 3, using: &generator) * (Bool.random(using: &generator) ? 1e-3 : 1) }
        let expected = Self.reference(x)
        x.withUnsafeBufferPointer { p in
            #expect(abs(VectorMath.sumOfSquares(p) - expected) <= 1e-12 * expected)
            #expect(abs(VectorMath.sumOfSquaresWide(p) - expected) <= 1e-12 * expected)
        }
        // The chunk check reads received bytes, aligned or not.
        let bytes = FloatEncoding.denseBytes(x)
        var shifted = [UInt8](repeating: 0, count: bytes.count + 1)
        shifted.replaceSubrange(1 ..< shifted.count, with: bytes)
        bytes.withUnsafeBytes { #expect(abs(VectorMath.sumOfSquares(littleEndianBytes: $0) - expected) <= 1e-12 * expected) }
        shifted.withUnsafeBytes { raw in
            #expect(abs(VectorMath.sumOfSquares(littleEndianBytes: UnsafeRawBufferPointer(rebasing: raw[1...])) - expected) <= 1e-12 * expected)
        }
    }

    /// Lane j of sixteen sums the values at j mod 16, and the lanes are added in order.
    @Test func theWideSumHasAFixedOrder() {
        let x = (0 ..< 37).map { Float($0 % 7) * 0.37 + 1e-4 * Float($0) }
        var lanes = [Double](repeating: 0, count: 16)
        for i in 0 ..< 32 { lanes[i % 16] += Double(x[i]) * Double(x[i]) }
        var expected = lanes.reduce(0, +)
        for i in 32 ..< 37 { expected += Double(x[i]) * Double(x[i]) }
        #expect(x.withUnsafeBufferPointer { VectorMath.sumOfSquaresWide($0) }.bitPattern == expected.bitPattern)
    }

    @Test(arguments: [Float.nan, .infinity, -.infinity])
    func aValueThatIsNotFiniteMakesTheSumNotFinite(bad: Float) {
        for position in [0, 5, 16, 40, 99] {
            var x = [Float](repeating: 0.5, count: 100)
            x[position] = bad
            x.withUnsafeBufferPointer { p in
                #expect(!VectorMath.sumOfSquares(p).isFinite)
                #expect(!VectorMath.sumOfSquaresWide(p).isFinite)
            }
        }
        // Finite but large: float32's largest values square to a finite double.
        let big = [Float](repeating: .greatestFiniteMagnitude, count: 20)
        #expect(big.withUnsafeBufferPointer { VectorMath.sumOfSquaresWide($0) }.isFinite)
    }
}
