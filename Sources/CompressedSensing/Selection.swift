import Tensors

/// Top-k selection by magnitude in linear expected time (quickselect), for masks and hard
/// thresholding.
public enum Selection {
    /// The k-th largest |value| (1 ≤ k ≤ values.count). `scratch` must hold values.count floats.
    public static func kthLargestMagnitude(_ values: UnsafeBufferPointer<Float>, k: Int,
                                           scratch: UnsafeMutableBufferPointer<Float>) -> Float {
        precondition(k >= 1 && k <= values.count && scratch.count >= values.count)
        for i in 0 ..< values.count { scratch[i] = abs(values[i]) }
        var lo = 0, hi = values.count - 1
        let target = k - 1  // index in descending order
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        while lo < hi {
            seed = SeededRandom.mix(seed)
            let pivot = scratch[lo + Int(seed % UInt64(hi - lo + 1))]
            var i = lo, j = hi
            while i <= j {
                while scratch[i] > pivot { i += 1 }
                while scratch[j] < pivot { j -= 1 }
                if i <= j { scratch.swapAt(i, j); i += 1; j -= 1 }
            }
            if target <= j { hi = j } else if target >= i { lo = i } else { return scratch[target] }
        }
        return scratch[target]
    }

    /// Sets mask[i] = 1 for the k entries of largest magnitude (ties: lower index first); leaves
    /// the other entries of `mask` as they are.
    public static func markTopK(_ values: UnsafeBufferPointer<Float>, k: Int, into mask: UnsafeMutableBufferPointer<UInt8>,
                                scratch: UnsafeMutableBufferPointer<Float>) {
        let n = values.count
        guard k > 0 else { return }
        guard k < n else {
            for i in 0 ..< n { mask[i] = 1 }
            return
        }
        let threshold = kthLargestMagnitude(values, k: k, scratch: scratch)
        var kept = 0
        for i in 0 ..< n where abs(values[i]) > threshold { mask[i] = 1; kept += 1 }
        for i in 0 ..< n where kept < k && abs(values[i]) == threshold && mask[i] == 0 { mask[i] = 1; kept += 1 }
    }
}
