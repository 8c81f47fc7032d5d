#if canImport(Glibc)
import CMalloc
import Glibc
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
    ///
    /// `coordinator`: at most two arenas as well. glibc gives threads that allocate at once arenas
    /// of their own (up to 8 per core), each keeping its own high-water mark once mmap is off;
    /// in a coordinator nng's threads allocate the received messages and Swift's the buffers.
    /// With 8 workers its resident set grew 18 MiB over 1 worker's with the default arenas and
    /// 7–13 MiB with 1 or 2 (issue 11's memory benchmark, 1 M parameters, one launch each), and
    /// its baseline fell from 127 to 87–101 MiB. The coordinator's work is serial (one actor)
    /// and nng's threads are few: two arenas are not contended. Workers keep glibc's default
    /// (not measured on their step time).
    public static func keepLargeBuffersMapped(coordinator: Bool = false) {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_MAX, 0)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        if coordinator { _ = mallopt(M_ARENA_MAX, 2) }
        #endif
    }

    /// Raises the soft limit on open descriptors to the hard limit (a coordinator holds one per
    /// connection); returns the soft limit in force afterwards.
    @discardableResult
    public static func raiseDescriptorLimit() -> Int {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            // Linux caps RLIMIT_NOFILE at fs.nr_open: an "unlimited" hard limit cannot be used as is.
            raised.rlim_cur = min(limit.rlim_max, 1 << 20)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
        #else
        return 1024
        #endif
    }
}
