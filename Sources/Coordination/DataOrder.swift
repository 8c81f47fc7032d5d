import Tensors

/// Which examples each step's micro-batches hold.
///
/// The data set is visited epoch by epoch, each epoch in its own seeded permutation; step s takes
/// the global batch at positions [s·G, (s+1)·G) of that endless sequence and cuts it into M
/// micro-batches (sizes differ by at most one). A pure function of (seed, N, G, M, s): it does
/// not depend on the workers.
public struct DataOrder: Sendable {
    public let seed: UInt64
    public let examples: Int
    public let globalBatch: Int
    public let microBatches: Int
    private var cachedEpoch = -1
    private var permutation: [Int] = []

    public init(seed: UInt64, examples: Int, globalBatch: Int, microBatches: Int) {
        precondition(examples > 0 && globalBatch > 0 && microBatches > 0 && microBatches <= globalBatch)
        self.seed = seed
        self.examples = examples
        self.globalBatch = globalBatch
        self.microBatches = microBatches
    }

    /// The epoch step `step` starts in.
    public func epoch(ofStep step: Int) -> Int { step * globalBatch / examples }

    public mutating func microBatches(forStep step: Int) -> [[Int]] {
        var batch: [Int] = []
        batch.reserveCapacity(globalBatch)
        for position in step * globalBatch ..< (step + 1) * globalBatch {
            let epoch = position / examples
            if epoch != cachedEpoch { permutation = Self.permutation(seed: seed, epoch: epoch, count: examples); cachedEpoch = epoch }
            batch.append(permutation[position % examples])
        }
        var out: [[Int]] = []
        var start = 0
        for m in 0 ..< microBatches {
            let size = globalBatch / microBatches + (m < globalBatch % microBatches ? 1 : 0)
            out.append(Array(batch[start ..< start + size]))
            start += size
        }
        return out
    }

    /// Fisher–Yates with the counter-based generator keyed by (seed, "shuffle", epoch).
    public static func permutation(seed: UInt64, epoch: Int, count: Int) -> [Int] {
        var p = Array(0 ..< count)
        var rng = SeededRandom(seed, 0x5348_5546, UInt64(epoch))
        for i in stride(from: count - 1, to: 0, by: -1) {
            p.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return p
    }
}

/// Coordinator settings, composed into the run configuration.
public struct CoordinatorSettings: Sendable, Equatable {
    /// Examples per step, over all workers.
    public var globalBatch = 256
    /// Micro-batches per step (fixed, whatever the number of workers).
    public var microBatches = 8
    /// A worker that has not delivered a micro-batch this long after receiving it is dropped.
    public var stepDeadlineSeconds = 60.0
    /// Gradient chunk size in float32 values (262144 = 1 MiB).
    public var chunkValues = 262_144
    /// How long a work request with nothing to do is held before the worker is told to wait.
    public var pollHoldSeconds = 2.0
    /// Steps wait until at least this many workers have joined.
    public var minWorkers = 1
    /// Score the validation sets every this many steps and at the end (0: never). Training
    /// pauses while workers transcribe them.
    public var evalEverySteps = 0
    /// Validation examples scored per set (the first ones; 0: all).
    public var evalExamples = 200
    /// Validation examples per evaluation task.
    public var evalBatch = 20
    public init() {}
}
