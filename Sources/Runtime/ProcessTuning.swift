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
    /// One arena, the main heap, for every thread. glibc gives threads that allocate at once
    /// arenas of their own (up to 8 per core), and an arena other than the main one grows in
    /// extra 64 MiB mappings that it unmaps as soon as one is empty, trim threshold or not: a
    /// 16 MiB weights reply or a received message then lands in fresh pages that the kernel
    /// zeroes on first touch. With two arenas in the coordinator and glibc's default in workers
    /// (until 2026-12-01), that was 19% of the coordinator's CPU and 15% of each worker's over a
    /// 40-step ingest benchmark. With one, page zeroing stops once the first steps have sized the
    /// heap (BENCHMARKS.md, "One malloc arena"), and one heap keeps a single high-water mark
    /// (issue 11's memory bound).
    ///
    /// - The one lock is shared by every thread that allocates. Most of the work that allocates
    ///   much is serial (the coordinator's actor, a worker's compute); the one-shot
    ///   reconstruction's rows and `experiment`'s two scoring threads are not, and were not
    ///   re-timed against the change.
    /// - The arena limit applies to arenas made after it is set: a thread that had already
    ///   allocated keeps the arena glibc gave it. Set here, at the start of a command's `run()`,
    ///   it was too late for `launch`'s coordinator, whose REP contexts allocated the weights
    ///   replies in an arena of their own (8,190 page faults a step; BENCHMARKS.md, "Chunk
    ///   streams"). CMalloc sets it as the program loads (``oneArenaFromStart``); it is repeated
    ///   here for programs that link Runtime without CMalloc's constructor running first.
    public static func keepLargeBuffersMapped() {
        #if canImport(Glibc)
        _ = mallopt(M_MMAP_MAX, 0)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        _ = mallopt(M_ARENA_MAX, 1)
        #endif
    }

    /// Whether the process has had one malloc arena since it loaded, before any thread existed.
    public static var oneArenaFromStart: Bool {
        #if canImport(Glibc)
        csptrain_malloc_arenas_at_start() == 1
        #else
        false
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
