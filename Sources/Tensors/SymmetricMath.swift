import CBLAS

/// Symmetric matrices: second moments of a layer's inputs and the positive definite systems of a
/// least-squares refit. Row-major, through OpenBLAS (CBLAS and LAPACK).
public enum SymmetricMath {
    /// c (n × n) += Σ over rows of x (rows × n) of x_r x_rᵀ: the upper triangle (and the diagonal)
    /// only, in float32 (`cblas_ssyrk`). The lower triangle is left as it was.
    public static func accumulateSecondMoment(_ x: UnsafePointer<Float>, rows: Int, columns n: Int,
                                              into c: UnsafeMutablePointer<Float>) {
        guard rows > 0, n > 0 else { return }
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, blasint(n), blasint(rows), 1, x, blasint(n), 1, c, blasint(n))
    }

    /// The upper triangle of an n × n row-major matrix, row by row: n(n + 1)/2 values.
    public static func packUpper(_ full: UnsafeBufferPointer<Float>, n: Int, into packed: UnsafeMutableBufferPointer<Float>) {
        precondition(full.count >= n * n && packed.count >= packedCount(n))
        var o = 0
        for r in 0 ..< n {
            for c in r ..< n { packed[o] = full[r * n + c]; o += 1 }
        }
    }

    /// The full symmetric n × n matrix from its packed upper triangle.
    public static func unpackUpper(_ packed: UnsafeBufferPointer<Float>, n: Int) -> [Float] {
        precondition(packed.count >= packedCount(n))
        var full = [Float](repeating: 0, count: n * n)
        var o = 0
        for r in 0 ..< n {
            for c in r ..< n { full[r * n + c] = packed[o]; full[c * n + r] = packed[o]; o += 1 }
        }
        return full
    }

    public static func packedCount(_ n: Int) -> Int { n * (n + 1) / 2 }

    /// Solves A x = b for a symmetric positive definite A (n × n, overwritten by its Cholesky
    /// factor; x replaces b) with LAPACK's `dposv`. False when A is not positive definite.
    public static func solvePositiveDefinite(_ a: inout [Double], _ b: inout [Double], n: Int) -> Bool {
        precondition(a.count >= n * n && b.count >= n)
        guard n > 0 else { return true }
        var n32 = Int32(n), one: Int32 = 1, lda = Int32(n), ldb = Int32(n), info: Int32 = 0
        var uplo = CChar(UInt8(ascii: "U"))
        a.withUnsafeMutableBufferPointer { ap in
            b.withUnsafeMutableBufferPointer { bp in
                dposv_(&uplo, &n32, &one, ap.baseAddress!, &lda, bp.baseAddress!, &ldb, &info)
            }
        }
        return info == 0
    }

    /// The inverse of a symmetric positive definite n × n matrix (row-major), by LAPACK's `dposv`
    /// against the identity; nil when A is not positive definite.
    public static func inversePositiveDefinite(_ matrix: [Double], n: Int) -> [Double]? {
        precondition(matrix.count >= n * n)
        guard n > 0 else { return [] }
        var a = matrix
        var b = [Double](repeating: 0, count: n * n)
        for i in 0 ..< n { b[i * n + i] = 1 }
        var n32 = Int32(n), nrhs = Int32(n), lda = Int32(n), ldb = Int32(n), info: Int32 = 0
        var uplo = CChar(UInt8(ascii: "U"))
        a.withUnsafeMutableBufferPointer { ap in
            b.withUnsafeMutableBufferPointer { bp in
                dposv_(&uplo, &n32, &nrhs, ap.baseAddress!, &lda, bp.baseAddress!, &ldb, &info)
            }
        }
        return info == 0 ? b : nil
    }
}
