import Dispatch

/// `DispatchQueue.concurrentPerform` for bodies that write disjoint parts of buffers the caller
/// owns for the duration of the call (blocks of the parameters, tensors of a model). Dispatch
/// asks for a `@Sendable` body; the box below vouches for these: each iteration touches only its
/// own part, and the call returns only when every iteration has.
public enum Parallel {
    public static func forEach(_ iterations: Int, _ body: (Int) -> Void) {
        guard iterations > 1 else {
            if iterations == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: iterations) { box.value($0) }
        }
    }
}

/// The box `Parallel.forEach` hands to Dispatch (see there why it is sound).
private struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
