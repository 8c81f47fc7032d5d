import CKernels
/// One named tensor inside a flat parameter buffer.
public struct TensorSpec: Sendable, Equatable, Hashable {
    public let name: String
    public let shape: [Int]
    /// Offset in the flat buffer, in values.
    public let offset: Int
    /// Whether the projection step may sparsify this tensor (weights yes, biases usually no).
    public let prunable: Bool

    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset ..< offset + count }

    public init(name: String, shape: [Int], offset: Int, prunable: Bool) {
        self.name = name
        self.shape = shape
        self.offset = offset
        self.prunable = prunable
    }
}

/// The layout of a model's single flat parameter buffer: named, shaped views in order.
///
/// Everything that moves parameters or gradients (aggregation, optimizer, projection,
/// checkpoints, the wire) works on one flat `[Float]` and uses this layout to find layers.
public struct ParameterLayout: Sendable, Equatable, Hashable {
    public private(set) var tensors: [TensorSpec] = []
    public private(set) var totalCount = 0

    public init() {}

    public init(_ entries: [(name: String, shape: [Int], prunable: Bool)]) {
        for entry in entries { append(entry.name, shape: entry.shape, prunable: entry.prunable) }
    }

    /// Adds a tensor after the last one and returns its spec.
    @discardableResult
    public mutating func append(_ name: String, shape: [Int], prunable: Bool) -> TensorSpec {
        precondition(!tensors.contains { $0.name == name }, "duplicate tensor name \(name)")
        let spec = TensorSpec(name: name, shape: shape, offset: totalCount, prunable: prunable)
        tensors.append(spec)
        totalCount += spec.count
        return spec
    }

    public subscript(name: String) -> TensorSpec? {
        tensors.first { $0.name == name }
    }

    /// Number of values in prunable tensors.
    public var prunableCount: Int {
        tensors.lazy.filter(\.prunable).map(\.count).reduce(0, +)
    }
}

/// Sparsity statistics of a flat buffer under a layout.
public struct SparsityReport: Sendable, Equatable {
    /// Fraction of zeros among values of prunable tensors (0 when there are none).
    public let prunable: Double
    /// Fraction of zeros among all values.
    public let overall: Double

    public init(prunable: Double, overall: Double) {
        self.prunable = prunable
        self.overall = overall
    }

    public init(_ values: [Float], layout: ParameterLayout) {
        var zeros = 0
        var prunableZeros = 0
        values.withUnsafeBufferPointer { v in
            for spec in layout.tensors where spec.count > 0 {
                let z = spec.count - csp_count_stored(v.baseAddress! + spec.offset, spec.count, 0)
                zeros += z
                if spec.prunable { prunableZeros += z }
            }
        }
        let p = layout.prunableCount
        prunable = p == 0 ? 0 : Double(prunableZeros) / Double(p)
        overall = layout.totalCount == 0 ? 0 : Double(zeros) / Double(layout.totalCount)
    }
}
