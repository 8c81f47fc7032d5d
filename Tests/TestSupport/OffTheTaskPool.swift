import Foundation

/// Runs `work` on a thread of its own and waits for it without holding a thread of Swift's
/// cooperative pool.
///
/// That pool has one thread per core: two on the CI machine. A test that computes or waits on
/// subprocesses for many seconds without a suspension point holds one of them the whole time, and
/// two such tests at once stall every async test beside them: the socket tests' replies need a
/// pool thread to be read, and they time out (CI on a4bffca: a 13 s fuzz target and an 11 s
/// corpus synthesis; `requestReplyRoundTrip` gave up after 10 s). Long blocking test bodies go
/// through this.
public func offTheTaskPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
