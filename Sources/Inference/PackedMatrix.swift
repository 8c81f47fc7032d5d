import CBLAS
import CKernels

/// A weight matrix W (rows × columns) packed for inference products y (rows, n) += W · x (columns, n),
/// with activations feature-major (row-major, row stride n: one column per time step or utterance).
///
/// The layouts, and the bytes a product reads (`weightBytes`, the paper's "model reading time"):
/// - `dense`: W row-major, OpenBLAS (sgemv at n = 1, sgemm above): 4·M·K bytes;
/// - `denseTransposed`: Wᵀ for csptrain's own few-rows kernel (`csp_rows_times_matrix`), the
///   training recurrent product: 4·M·K bytes;
/// - `csr`: compressed sparse rows with 16-bit column indices: 6 bytes per stored value + 4 per row;
/// - `bitmask`: each row's positions as K bits, then its values: K/8 + 4 per stored value, per row;
/// - `nm`: N:M structure, `keep` of each group of `group` columns, with 1-byte offsets: 5 bytes per
///   kept slot;
/// - `lowRank`: W = A·B from the SVD of a rank-r matrix, A (M × r), B (r × K): two thin products,
///   4·r·(M + K) bytes.
public struct PackedMatrix: Sendable {
    public enum Layout: Sendable, Hashable, CustomStringConvertible {
        case dense
        case denseTransposed
        case csr
        case bitmask
        case nm(keep: Int, group: Int)
        case lowRank(rank: Int)

        public var description: String {
            switch self {
            case .dense: "dense"
            case .denseTransposed: "dense-rows"
            case .csr: "csr16"
            case .bitmask: "bitmask"
            case let .nm(keep, group): "\(keep):\(group)"
            case let .lowRank(rank): "lowrank-\(rank)"
            }
        }

        public var isDense: Bool { self == .dense || self == .denseTransposed }
    }

    enum Storage: Sendable {
        case dense([Float])                                             // (M, K)
        case denseTransposed([Float])                                   // (K, M)
        case csr(rowStart: [Int32], columns: [UInt16], values: [Float])
        case bitmask(words: Int, masks: [UInt64], rowStart: [Int32], values: [Float])
        case nm(groups: Int, offsets: [UInt8], values: [Float])         // (M, keep · groups) each
        case lowRank(a: [Float], b: [Float])                            // (M, r), (r, K)
    }

    public let rows: Int
    public let columns: Int
    public let layout: Layout
    let storage: Storage
    /// Values other than zero in W (the product's useful multiply-adds per column of x).
    public let nonZero: Int

    init(rows: Int, columns: Int, layout: Layout, storage: Storage, nonZero: Int) {
        self.rows = rows
        self.columns = columns
        self.layout = layout
        self.storage = storage
        self.nonZero = nonZero
    }

    /// Bytes of weights (values, indices, masks) one product reads.
    public var weightBytes: Int {
        switch storage {
        case let .dense(w), let .denseTransposed(w): w.count * 4
        case let .csr(rowStart, columns, values): rowStart.count * 4 + columns.count * 2 + values.count * 4
        case let .bitmask(_, masks, rowStart, values): masks.count * 8 + rowStart.count * 4 + values.count * 4
        case let .nm(_, offsets, values): offsets.count + values.count * 4
        case let .lowRank(a, b): (a.count + b.count) * 4
        }
    }

    /// Scratch a product needs beyond x and y, in floats.
    func scratchCount(n: Int) -> Int {
        switch layout {
        case .denseTransposed: n > 1 ? 2 * n * max(rows, columns) : 0
        case let .lowRank(r): r * n
        default: 0
        }
    }

    /// y (rows, n) += W · x (columns, n). `scratch` grows as needed and may be shared between
    /// matrices used one after another.
    public func multiplyAdd(_ x: UnsafePointer<Float>, n: Int, into y: UnsafeMutablePointer<Float>, scratch: inout [Float]) {
        guard n > 0, rows > 0, columns > 0 else { return }
        let need = scratchCount(n: n)
        if scratch.count < need { scratch = [Float](repeating: 0, count: need) }
        switch storage {
        case let .dense(w):
            w.withUnsafeBufferPointer { Self.denseProduct($0.baseAddress!, rows: rows, columns: columns, x, n: n, y) }
        case let .denseTransposed(wt):
            wt.withUnsafeBufferPointer { wt in
                if n == 1 {
                    csp_rows_times_matrix(x, 1, columns, wt.baseAddress!, rows, y)
                    return
                }
                // The kernel takes x as rows (n, K) and writes (n, M): transpose in and out.
                scratch.withUnsafeMutableBufferPointer { s in
                    let xt = s.baseAddress!, out = s.baseAddress! + n * columns
                    csp_transpose(x, columns, n, xt)
                    out.update(repeating: 0, count: n * rows)
                    csp_rows_times_matrix(xt, n, columns, wt.baseAddress!, rows, out)
                    for j in 0 ..< n { for r in 0 ..< rows { y[r * n + j] += out[j * rows + r] } }
                }
            }
        case let .csr(rowStart, cols, values):
            rowStart.withUnsafeBufferPointer { rs in cols.withUnsafeBufferPointer { c in values.withUnsafeBufferPointer { v in
                csp_csr_multiply_add(rows, rs.baseAddress!, c.baseAddress!, v.baseAddress!, x, n, y)
            } } }
        case let .bitmask(words, masks, rowStart, values):
            masks.withUnsafeBufferPointer { m in rowStart.withUnsafeBufferPointer { rs in values.withUnsafeBufferPointer { v in
                csp_bitmask_multiply_add(rows, words, m.baseAddress!, rs.baseAddress!, v.baseAddress!, x, n, y)
            } } }
        case let .nm(groups, offsets, values):
            guard case let .nm(keep, group) = layout else { return }
            offsets.withUnsafeBufferPointer { o in values.withUnsafeBufferPointer { v in
                csp_nm_multiply_add(rows, groups, keep, group, o.baseAddress!, v.baseAddress!, x, n, y)
            } }
        case let .lowRank(a, b):
            guard case let .lowRank(r) = layout else { return }
            scratch.withUnsafeMutableBufferPointer { s in
                let t = s.baseAddress!   // (r, n) = B · x
                t.update(repeating: 0, count: r * n)
                b.withUnsafeBufferPointer { Self.denseProduct($0.baseAddress!, rows: r, columns: columns, x, n: n, t) }
                a.withUnsafeBufferPointer { Self.denseProduct($0.baseAddress!, rows: rows, columns: r, t, n: n, y) }
            }
        }
    }

    /// y (m, n) += w (m, k) · x (k, n) through OpenBLAS.
    static func denseProduct(_ w: UnsafePointer<Float>, rows m: Int, columns k: Int, _ x: UnsafePointer<Float>, n: Int,
                             _ y: UnsafeMutablePointer<Float>) {
        if n == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, blasint(m), blasint(k), 1, w, blasint(k), x, 1, 1, y, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(m), blasint(n), blasint(k), 1,
                        w, blasint(k), x, blasint(n), 1, y, blasint(n))
        }
    }
}
