import CBLAS

/// A thin singular value decomposition A = L · diag(σ) · R of a row-major (rows × columns)
/// matrix, through LAPACK's divide-and-conquer `sgesdd` (OpenBLAS's build).
public struct SVD: Sendable {
    public let rows: Int
    public let columns: Int
    /// min(rows, columns).
    public var rank: Int { singularValues.count }
    /// (rows × rank), row-major: the left singular vectors as columns.
    public let left: [Float]
    /// Descending.
    public let singularValues: [Float]
    /// (rank × columns), row-major: the right singular vectors as rows.
    public let right: [Float]

    /// Decomposes `matrix` (rows × columns, row-major). Nil when LAPACK reports a failure (it
    /// does for NaN or infinite entries).
    public init?(_ matrix: UnsafeBufferPointer<Float>, rows: Int, columns: Int) {
        precondition(matrix.count == rows * columns && rows > 0 && columns > 0)
        // LAPACK is column-major: the row-major A is the column-major Aᵀ (columns × rows). From
        // Aᵀ = U' σ V'ᵀ follows A = V' σ U'ᵀ, and the buffers come out already in the layout
        // wanted: V'ᵀ (k × rows, column-major) is L (rows × k, row-major), U' (columns × k,
        // column-major) is R (k × columns, row-major).
        let k = min(rows, columns)
        var a = Array(matrix)
        var s = [Float](repeating: 0, count: k)
        var u = [Float](repeating: 0, count: columns * k)   // U': columns × k
        var vt = [Float](repeating: 0, count: k * rows)     // V'ᵀ: k × rows
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var m = Int32(columns), n = Int32(rows), lda = Int32(columns), ldu = Int32(columns), ldvt = Int32(k)
        var info: Int32 = 0
        var jobz = CChar(UInt8(ascii: "S"))
        var query: Float = 0
        var lwork: Int32 = -1
        sgesdd_(&jobz, &m, &n, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &query, &lwork, &iwork, &info)
        guard info == 0 else { return nil }
        lwork = Int32(query.rounded(.up))
        var work = [Float](repeating: 0, count: max(1, Int(lwork)))
        sgesdd_(&jobz, &m, &n, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &work, &lwork, &iwork, &info)
        guard info == 0 else { return nil }
        self.rows = rows
        self.columns = columns
        left = vt
        singularValues = s
        right = u
    }

    /// The first `r` left singular vectors, (rows × r) row-major.
    public func leftColumns(_ r: Int) -> [Float] {
        precondition(r >= 0 && r <= rank)
        var out = [Float](repeating: 0, count: rows * r)
        for i in 0 ..< rows { for j in 0 ..< r { out[i * r + j] = left[i * rank + j] } }
        return out
    }

    /// The best rank-r approximation L_r σ_r R_r, (rows × columns) row-major, into `out`.
    public func truncated(_ r: Int, into out: UnsafeMutableBufferPointer<Float>) {
        precondition(out.count == rows * columns && r >= 0 && r <= rank)
        guard r > 0 else { _ = out.initialize(repeating: 0); return }
        var scaled = leftColumns(r)
        for i in 0 ..< rows { for j in 0 ..< r { scaled[i * r + j] *= singularValues[j] } }
        scaled.withUnsafeBufferPointer { l in
            right.withUnsafeBufferPointer { rt in
                VectorMath.gemm(m: rows, n: columns, k: r, l.baseAddress!, rt.baseAddress!, out.baseAddress!)
            }
        }
    }
}
