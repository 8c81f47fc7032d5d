#if canImport(Glibc)
import CMalloc
#endif

/// Process-wide settings for a program that allocates and frees the same large buffers every
/// step (weights, gradients, activations of 1–20 MiB).
public enum ProcessTuning {
    /// glibc serves allocations above its mmap threshold with fresh mappings and unmaps them on
    /// free, and trims the heap's top back to the kernel: every step then faults in and zeroes its
    /// buffers' pages again (measured: page faults were ~18% of a coordinator-bound run's CPU).
    /// Keeping buffers up to 32 MiB (glibc's maximum threshold) on the heap and not trimming it
    /// lets freed pages be reused.
    public static func keepLargeBuffersMapped() {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_THRESHOLD, 32 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}
