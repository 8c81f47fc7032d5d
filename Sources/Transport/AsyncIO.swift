import CNNG
import Synchronization

/// One nng asynchronous operation, awaited from Swift.
///
/// nng reports completion by calling a C callback on one of its own threads. This type turns
/// that into a resumed continuation, and Swift task cancellation into `nng_aio_cancel`.
///
/// Two traps are handled here:
/// - A task cancelled *before* the operation is submitted: the cancellation handler's
///   `nng_aio_cancel` finds nothing to cancel and is lost. So after submitting we check
///   `Task.isCancelled` again and cancel then.
/// - Freeing an aio from its own callback deadlocks (`nng_aio_free` waits for the callback).
///   The callback holds no strong reference to this object (`_withUnsafeGuaranteedRef`), so the
///   last release, and with it `deinit` and `nng_aio_free`, always happens on the awaiting task's
///   thread, which may wait for the callback to return.
final class AsyncIO: @unchecked Sendable {
    private var aio: OpaquePointer!
    private let waiter = Mutex<CheckedContinuation<Int32, Never>?>(nil)

    init() throws(NNGError) {
        var handle: OpaquePointer?
        let rv = nng_aio_alloc(&handle, { arg in
            Unmanaged<AsyncIO>.fromOpaque(arg!)._withUnsafeGuaranteedRef { $0.complete() }
        }, Unmanaged.passUnretained(self).toOpaque())
        try nngCall("allocate an aio", rv)
        aio = handle
    }

    deinit {
        if let aio { nng_aio_free(aio) }
    }

    /// Submits an operation with `start` and waits for its result code (0 on success).
    /// `timeout` nil means no timeout.
    func run(timeout: Duration?, _ start: (OpaquePointer) -> Void) async -> Int32 {
        nng_aio_set_timeout(aio, timeout.map(Self.milliseconds) ?? nng_duration(NNG_DURATION_INFINITE))
        let handle = AIOHandle(pointer: aio)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
                waiter.withLock { $0 = continuation }
                start(handle.pointer)
                if Task.isCancelled { nng_aio_cancel(handle.pointer) }
            }
        } onCancel: {
            nng_aio_cancel(handle.pointer)
        }
    }

    /// Runs on nng's callback thread: never blocks, never touches a socket.
    private func complete() {
        let result = nng_aio_result(aio)
        let continuation = waiter.withLock { waiting in
            defer { waiting = nil }
            return waiting
        }
        continuation?.resume(returning: result)
    }

    func setMessage(_ msg: OpaquePointer?) { nng_aio_set_msg(aio, msg) }
    func message() -> OpaquePointer? { nng_aio_get_msg(aio) }

    static func milliseconds(_ d: Duration) -> nng_duration {
        let (seconds, attoseconds) = d.components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return nng_duration(clamping: max(0, ms))
    }
}

/// An aio pointer handed to a cancellation handler. nng_aio_cancel is safe from any thread.
struct AIOHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}
