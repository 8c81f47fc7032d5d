import CBLAS
import CKernels

/// BLAS-backed operations on flat Float buffers. Shapes are stated on each function.
public enum VectorMath {
    /// y += alpha * x   (n = x.count = y.count)
    @inlinable
    public static func axpy(_ alpha: Float, _ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count == y.count, "axpy: \(x.count) vs \(y.count) values")
        guard !x.isEmpty else { return }
        cblas_saxpy(blasint(x.count), alpha, x.baseAddress, 1, y.baseAddress, 1)
    }

    /// x *= alpha
    @inlinable
    public static func scale(_ alpha: Float, _ x: UnsafeMutableBufferPointer<Float>) {
        guard !x.isEmpty else { return }
        cblas_sscal(blasint(x.count), alpha, x.baseAddress, 1)
    }

    /// Euclidean norm, accumulated in double precision for stability on long vectors.
    public static func norm(_ x: UnsafeBufferPointer<Float>) -> Double {
        var sum = 0.0
        for v in x { sum += Double(v) * Double(v) }
        return sum.squareRoot()
    }

    /// Σ x², accumulated in double precision in a fixed order; not finite when a value is not.
    public static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress, !x.isEmpty else { return 0 }
        return csp_sum_squares(base, x.count)
    }

    /// Σ x² of little-endian bfloat16 bytes (a chunk sent as bf16).
    public static func sumOfSquares(bf16Bytes bytes: UnsafeRawBufferPointer) -> Double {
        guard bytes.count >= 2, let base = bytes.baseAddress else { return 0 }
        return csp_sum_squares_bf16(base, bytes.count / 2)
    }

    /// Σ x² over sixteen independent sums: four times `sumOfSquares`'s throughput, in another
    /// order (a received chunk's check, whose sum reaches no number of the model).
    public static func sumOfSquaresWide(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let base = x.baseAddress, !x.isEmpty else { return 0 }
        return csp_sum_squares_wide(base, x.count)
    }

    /// Σ x² of little-endian float32 bytes (a received chunk, checked for finiteness and
    /// magnitude before it is folded): in place as `sumOfSquaresWide` when aligned, else one
    /// sum in order.
    public static func sumOfSquares(littleEndianBytes bytes: UnsafeRawBufferPointer) -> Double {
        let n = bytes.count / 4
        guard n > 0, let base = bytes.baseAddress else { return 0 }
        #if _endian(little)
        if Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            return csp_sum_squares_wide(base.assumingMemoryBound(to: Float.self), n)
        }
        #endif
        var sum = 0.0
        for i in 0 ..< n {
            let v = Double(Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))))
            sum += v * v
        }
        return sum
    }

    /// C (m×n) = alpha · op(A) · op(B) + beta · C, row-major.
    /// A is (m×k) or, transposed, (k×m); B is (k×n) or (n×k).
    public static func gemm(transposeA: Bool = false, transposeB: Bool = false,
                            m: Int, n: Int, k: Int, alpha: Float = 1,
                            _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                            beta: Float = 0, _ c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha,
                    a, blasint(transposeA ? m : k),
                    b, blasint(transposeB ? k : n),
                    beta, c, blasint(n))
    }

    /// Fixes the number of BLAS threads (results of some kernels depend on it).
    public static func setThreadCount(_ n: Int) {
        openblas_set_num_threads(Int32(n))
    }
}
