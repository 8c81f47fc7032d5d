import CMalloc
import Foundation
import Glibc
import Testing
@testable import Runtime

/// glibc's allocator as csptrain's processes use it: one arena from the moment the program loads.
struct ProcessTuningTests {
    /// The heaps glibc reports (`malloc_info`: one `<heap nr="...">` per arena).
    static func heapCount() -> Int {
        var buffer: UnsafeMutablePointer<CChar>?
        var size = 0
        guard let stream = open_memstream(&buffer, &size) else { return -1 }
        malloc_info(0, stream)
        fclose(stream)
        defer { free(buffer) }
        guard let buffer else { return -1 }
        return String(cString: buffer).components(separatedBy: "<heap nr=").count - 1
    }

    /// Threads that allocate at the same moment share the main arena: no heap of their own, which
    /// would give its pages back to the kernel and fault them in again on every step.
    @Test func threadsAllocatingAtOnceShareOneArena() throws {
        #expect(ProcessTuning.oneArenaFromStart, "CMalloc's constructor did not run before the test's threads")
        let start = DispatchSemaphore(value: 0), done = DispatchGroup()
        for _ in 0 ..< 8 {
            done.enter()
            Thread.detachNewThread {
                start.wait()
                for round in 0 ..< 200 {
                    guard let p = malloc(1 << 20 + round) else { continue }
                    memset(p, 1, 64)
                    free(p)
                }
                done.leave()
            }
        }
        for _ in 0 ..< 8 { start.signal() }
        done.wait()
        #expect(Self.heapCount() == 1, "glibc made \(Self.heapCount()) arenas")
    }
}
