import Tensors

/// A seeded m × b measurement matrix Φ, shared by every block of a layer, so that measuring all
/// blocks is one matrix product: Y (blocks, m) = X (blocks, b) · Φᵀ.
///
/// All three kinds have columns of unit norm in expectation, so a measurement keeps a block's
/// energy on average and solvers need no per-kind step sizes:
/// - `gaussian`:   entries N(0, 1/m);
/// - `rademacher`: entries ±1/√m;
/// - `srht`:       a subsampled randomized Hadamard transform, Φ = √(b/m) · P · H · D with D random
///                 signs, H the orthonormal Walsh–Hadamard matrix and P a random choice of m of its
///                 rows (b must be a power of two). Its rows are orthogonal: Φ Φᵀ = (b/m) · I. It
///                 is generated in O(b log b) per row by the fast transform; at the block sizes used
///                 here (b ≤ 4096) applying it as an explicit matrix through BLAS is faster than
///                 applying the fast transform block by block.
public struct MeasurementOperator: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case gaussian, rademacher, srht
    }

    public let kind: Kind
    /// m: measurements per block.
    public let rows: Int
    /// b: values per block.
    public let columns: Int
    /// Φ (m, b), row-major.
    public let matrix: [Float]

    /// `seed` keys the operator; the same (kind, m, b, seed) gives the same Φ on every machine.
    public init(kind: Kind, rows m: Int, columns b: Int, seed: UInt64) throws(CompressedSensingError) {
        guard m >= 1, b >= 1, m <= b else {
            throw CompressedSensingError("a measurement operator needs 1 ≤ m ≤ b (got m = \(m), b = \(b))")
        }
        self.kind = kind
        rows = m
        columns = b
        var rng = SeededRandom(seed, 0x5048_49, UInt64(m), UInt64(b))
        switch kind {
        case .gaussian:
            let scale = 1 / Float(m).squareRoot()
            matrix = (0 ..< m * b).map { _ in rng.nextGaussian() * scale }
        case .rademacher:
            let scale = 1 / Float(m).squareRoot()
            matrix = (0 ..< m * b).map { _ in rng.next() & 1 == 0 ? scale : -scale }
        case .srht:
            guard b & (b - 1) == 0 else {
                throw CompressedSensingError("srht needs a block size that is a power of two (got \(b)); use gaussian or rademacher")
            }
            let signs = (0 ..< b).map { _ in rng.next() & 1 == 0 ? Float(1) : -1 }
            // m distinct rows of H, chosen by a partial Fisher–Yates shuffle.
            var order = Array(0 ..< b)
            for i in 0 ..< m { order.swapAt(i, i + Int(rng.next() % UInt64(b - i))) }
            let scale = (Float(b) / Float(m)).squareRoot() / Float(b).squareRoot()
            var out = [Float](repeating: 0, count: m * b)
            for r in 0 ..< m {
                // Row `order[r]` of H (entries ±1) from the fast transform of a unit vector.
                var e = [Float](repeating: 0, count: b)
                e[order[r]] = 1
                Self.walshHadamard(&e)
                for c in 0 ..< b { out[r * b + c] = e[c] * signs[c] * scale }
            }
            matrix = out
        }
    }

    /// In-place unnormalised fast Walsh–Hadamard transform (length a power of two).
    static func walshHadamard(_ x: inout [Float]) {
        var h = 1
        while h < x.count {
            for i in stride(from: 0, to: x.count, by: 2 * h) {
                for j in i ..< i + h {
                    let a = x[j], c = x[j + h]
                    x[j] = a + c
                    x[j + h] = a - c
                }
            }
            h *= 2
        }
    }

    /// Y (blocks, m) = X (blocks, b) · Φᵀ.
    public func measure(_ x: UnsafeBufferPointer<Float>, blocks: Int, into y: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count >= blocks * columns && y.count >= blocks * rows)
        guard blocks > 0 else { return }
        matrix.withUnsafeBufferPointer { phi in
            VectorMath.gemm(transposeB: true, m: blocks, n: rows, k: columns, x.baseAddress!, phi.baseAddress!, y.baseAddress!)
        }
    }

    /// Z (blocks, b) = Y (blocks, m) · Φ: the adjoint, block by block.
    public func adjoint(_ y: UnsafeBufferPointer<Float>, blocks: Int, into z: UnsafeMutableBufferPointer<Float>) {
        precondition(y.count >= blocks * rows && z.count >= blocks * columns)
        guard blocks > 0 else { return }
        matrix.withUnsafeBufferPointer { phi in
            VectorMath.gemm(m: blocks, n: columns, k: rows, y.baseAddress!, phi.baseAddress!, z.baseAddress!)
        }
    }

    /// The Gram matrix ΦᵀΦ (b, b): with it, every solver's products run on all blocks at once as
    /// (blocks, b) · (b, b), whatever m is.
    public func gram() -> [Float] {
        var g = [Float](repeating: 0, count: columns * columns)
        matrix.withUnsafeBufferPointer { phi in
            g.withUnsafeMutableBufferPointer { out in
                VectorMath.gemm(transposeA: true, m: columns, n: columns, k: rows, phi.baseAddress!, phi.baseAddress!, out.baseAddress!)
            }
        }
        return g
    }

    /// The measurement count `measurements: auto` picks for k-sparse blocks of b values:
    /// m = min(b, max(2k, ⌈2·k·ln(b/k)⌉)). The 2k floor matters for dense blocks (k > 0.6·b,
    /// sparsity under about 40%), where 2k·ln(b/k) falls below k and recovery would be ill-posed.
    public static func automaticRows(columns b: Int, sparsity k: Int) -> Int {
        guard k > 0, k < b else { return b }
        let m = (2 * Double(k) * _log(Double(b) / Double(k))).rounded(.up)
        return max(1, min(b, max(2 * k, Int(m))))
    }
}

public struct CompressedSensingError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
#else
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
#endif
