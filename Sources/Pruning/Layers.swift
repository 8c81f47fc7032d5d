import CompressedSensing
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// The tensors a pruning method sparsifies: the layout's prunable tensors minus those whose
/// names match an `exclude` pattern (shell-style: `*`, `?`, `[...]`, as in `conv.0.*`).
public struct PrunedLayers: Sendable, Equatable {
    public let tensors: [TensorSpec]

    public init(layout: ParameterLayout, exclude: [String]) {
        tensors = layout.tensors.filter { spec in
            spec.prunable && !exclude.contains { fnmatch($0, spec.name, 0) == 0 }
        }
    }

    public var count: Int { tensors.reduce(0) { $0 + $1.count } }
}

/// Keeps, per layer, the `keep` entries of largest magnitude: mask[i] = 1 for kept entries of
/// `values` within each tensor's range (ties broken towards lower indices).
func magnitudeMask(_ values: UnsafeBufferPointer<Float>, spec: TensorSpec, keep: Int, into mask: inout [UInt8]) {
    for i in spec.range { mask[i] = 0 }
    var scratch = [Float](repeating: 0, count: spec.count)
    mask.withUnsafeMutableBufferPointer { m in
        scratch.withUnsafeMutableBufferPointer { s in
            Selection.markTopK(UnsafeBufferPointer(rebasing: values[spec.range]), k: keep,
                               into: UnsafeMutableBufferPointer(rebasing: m[spec.range]), scratch: s)
        }
    }
}

/// Entries each block of a layer keeps so that the layer as a whole keeps exactly
/// keptCount(n, s): every block its share (1 − s)·size rounded down, and the remainder one each
/// to the blocks with the largest fractional parts (ties: lower index).
func blockKeeps(count n: Int, block b: Int, sparsity s: Double) -> [Int] {
    let blocks = (n + b - 1) / b
    let shares = (0 ..< blocks).map { (1 - s) * Double(min(b, n - $0 * b)) }
    var keeps = shares.map { Int($0.rounded(.down)) }
    let missing = keptCount(n, sparsity: s) - keeps.reduce(0, +)
    let order = (0 ..< blocks).sorted { a, c in
        let fa = shares[a] - Double(keeps[a]), fc = shares[c] - Double(keeps[c])
        return fa != fc ? fa > fc : a < c
    }
    for j in order.prefix(max(0, missing)) { keeps[j] += 1 }
    return keeps
}

/// Entries kept for a tensor of `count` values at sparsity `s`: round((1 − s) · count).
func keptCount(_ count: Int, sparsity s: Double) -> Int {
    max(0, min(count, Int(((1 - s) * Double(count)).rounded())))
}
