#if canImport(Glibc)
import CMalloc
#endif

/// Process-wide settings for a program that allocates and frees the same large buffers every
/// step (weights, gradients, activations of 1–20 MiB).
public enum ProcessTuning {
    /// glibc serves allocations above its mmap threshold with fresh mappings and unmaps them on
    /// free, and trims the heap's top back to the kernel: every step then faults in and zeroes its
    /// buffers' pages again (measured: page faults were ~18% of a coordinator-bound run's CPU).
    /// The threshold cannot be raised past 32 MiB, and a 10 M-parameter model's weights are 40 MB:
    /// with mmap off altogether every buffer comes from the heap, which is not trimmed, so freed
    /// pages are reused (measured on the 10 M-parameter load test: page faults went from 18% of
    /// the run's CPU to under 1%, see BENCHMARKS.md).
    public static func keepLargeBuffersMapped() {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_MAX, 0)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}
