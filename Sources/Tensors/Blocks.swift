

/// A parameter range cut into blocks along tensor boundaries, each at most `maxValues` long: the
/// unit of work the parameter server spreads over cores. The cut depends only on the layout and
/// the range, never on the number of threads, so anything reduced over blocks in block order
/// (the clip norm's partial sums) has the same bits on every machine.
public struct Blocks: Sendable {
    public let ranges: [Range<Int>]

    public init(layout: ParameterLayout, range: Range<Int>, maxValues: Int = 1 << 18) {
        precondition(maxValues > 0)
        var ranges: [Range<Int>] = []
        for spec in layout.tensors {
            let lo = max(spec.range.lowerBound, range.lowerBound), hi = min(spec.range.upperBound, range.upperBound)
            var start = lo
            while start < hi {
                let end = min(hi, start + maxValues)
                ranges.append(start ..< end)
                start = end
            }
        }
        self.ranges = ranges
    }

    /// `f` of each block of `buffer`, run concurrently, returned in block order.
    public func map<T>(_ buffer: [Float], _ f: (UnsafeBufferPointer<Float>) -> T) -> [T] {
        var out = [T?](repeating: nil, count: ranges.count)
        buffer.withUnsafeBufferPointer { all in
            out.withUnsafeMutableBufferPointer { results in
                let base = results.baseAddress!
                Parallel.forEach(ranges.count) { i in
                    base[i] = f(UnsafeBufferPointer(rebasing: all[ranges[i]]))
                }
            }
        }
        return out.map { $0! }
    }

    /// Runs `f` on each block of `buffer` concurrently.
    public func update(_ buffer: inout [Float], _ f: (UnsafeMutableBufferPointer<Float>) -> Void) {
        buffer.withUnsafeMutableBufferPointer { all in
            let base = all.baseAddress!
            Parallel.forEach(ranges.count) { i in
                f(UnsafeMutableBufferPointer(start: base + ranges[i].lowerBound, count: ranges[i].count))
            }
        }
    }
}
