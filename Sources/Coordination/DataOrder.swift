import Tensors

/// Which examples each step's micro-batches hold.
///
/// The data set is visited epoch by epoch, each epoch in its own seeded permutation; step s takes
/// the global batch at positions [s·G, (s+1)·G) of that endless sequence and cuts it into M
/// micro-batches (sizes differ by at most one). A pure function of (seed, N, G, M, costs, s): it
/// does not depend on the workers.
///
/// With per-example `costs` (audio lengths, say) and a `groupingWindow` of W global batches, each
/// epoch's permutation is cut into windows of W·G examples, each window sorted by cost and cut into
/// global batches, and the batches of the whole epoch shuffled again: every step then holds
/// examples of similar length, so little of a padded micro-batch is padding, and the examples are
/// dealt to micro-batches in turn, so the step's workers finish at about the same time. The
/// batches stay aligned with step boundaries across epochs (examples before an epoch's first
/// boundary finish the step that straddles it).
public struct DataOrder: Sendable {
    public let seed: UInt64
    public let examples: Int
    public let globalBatch: Int
    public let microBatches: Int
    public let costs: [Int]?
    public let groupingWindow: Int
    private var cachedEpoch = -1
    private var permutation: [Int] = []

    public init(seed: UInt64, examples: Int, globalBatch: Int, microBatches: Int, costs: [Int]? = nil, groupingWindow: Int = 0) {
        precondition(examples > 0 && globalBatch > 0 && microBatches > 0 && microBatches <= globalBatch)
        precondition(costs == nil || costs!.count == examples)
        self.seed = seed
        self.examples = examples
        self.globalBatch = globalBatch
        self.microBatches = microBatches
        self.costs = groupingWindow > 0 ? costs : nil
        self.groupingWindow = groupingWindow
    }

    /// The epoch step `step` starts in.
    public func epoch(ofStep step: Int) -> Int { step * globalBatch / examples }

    public mutating func microBatches(forStep step: Int) -> [[Int]] {
        var batch = examplesByEpoch(forStep: step).flatMap(\.examples)
        var out: [[Int]] = []
        if let costs {
            // Dealt in turn from the longest down: micro-batch loads differ by at most one example's cost.
            batch.sort { (costs[$0], $0) > (costs[$1], $1) }
            out = Array(repeating: [], count: microBatches)
            for (i, example) in batch.enumerated() { out[i % microBatches].append(example) }
            return out
        }
        var start = 0
        for m in 0 ..< microBatches {
            let size = globalBatch / microBatches + (m < globalBatch % microBatches ? 1 : 0)
            out.append(Array(batch[start ..< start + size]))
            start += size
        }
        return out
    }

    /// The examples of step `step` by epoch, in data-order position (a step at an epoch boundary
    /// finishes one epoch and starts the next). For the ledger: unlike `microBatches`, which
    /// deals them out by cost, this keeps the order the epoch visits them in.
    public mutating func examplesByEpoch(forStep step: Int) -> [(epoch: Int, examples: [Int])] {
        var parts: [(epoch: Int, examples: [Int])] = []
        parts.reserveCapacity(2)
        for position in step * globalBatch ..< (step + 1) * globalBatch {
            let epoch = position / examples
            if epoch != cachedEpoch { permutation = epochOrder(epoch); cachedEpoch = epoch }
            if parts.last?.epoch != epoch { parts.append((epoch, [])) }
            parts[parts.count - 1].examples.append(permutation[position % examples])
        }
        return parts
    }

    /// How many examples of its epoch come before step `step`'s first.
    public func positionInEpoch(ofStep step: Int) -> Int { (step * globalBatch) % examples }

    /// The order epoch `epoch` visits the examples in.
    func epochOrder(_ epoch: Int) -> [Int] {
        let shuffled = Self.permutation(seed: seed, epoch: epoch, count: examples)
        guard let costs else { return shuffled }
        let g = globalBatch
        let lead = min(examples, (g - (epoch * examples) % g) % g)
        var groups: [ArraySlice<Int>] = []
        var tail: [Int] = []
        var start = lead
        while start < examples {
            let end = min(examples, start + groupingWindow * g)
            let window = shuffled[start ..< end].sorted { (costs[$0], $0) < (costs[$1], $1) }
            var s = 0
            while s + g <= window.count { groups.append(window[s ..< s + g]); s += g }
            tail += window[s...]
            start = end
        }
        var rng = SeededRandom(seed, 0x4752_4F55, UInt64(epoch))
        for i in stride(from: groups.count - 1, to: 0, by: -1) { groups.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        var order = Array(shuffled[0 ..< lead])
        order.reserveCapacity(examples)
        for group in groups { order += group }
        order += tail
        return order
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
    /// Gradient chunk size in float32 values (262144 = 1 MiB); see ``chunkValues(forValues:)``.
    public var chunkValues = 262_144
    /// A model smaller than this many chunks of `chunkValues` is cut into smaller chunks (0:
    /// never); see ``chunkValues(forValues:)``.
    public var chunksPerModel = 16
    /// How long a work request with nothing to do is held before the worker is told to wait.
    public var pollHoldSeconds = 2.0
    /// Steps wait until at least this many workers have joined.
    public var minWorkers = 1
    /// Group training examples of similar cost (audio length) into the same step, sorting windows
    /// of this many global batches (0: plain shuffle). Only models that report costs use it.
    public var lengthGrouping = 32
    /// Score the validation sets every this many steps and at the end (0: never). Training
    /// pauses while workers transcribe them.
    public var evalEverySteps = 0
    /// Validation examples scored per set (the first ones; 0: all).
    public var evalExamples = 200
    /// Validation examples per evaluation task.
    public var evalBatch = 20
    /// Precision of broadcast weight values.
    public enum ValuePrecision: String, Sendable, CaseIterable {
        case f32
        /// IEEE binary16: half the value bytes; the coordinator rounds the weights it broadcasts
        /// (and checkpoints as the model) to it, so workers compute with exactly what it holds.
        /// The master weights stay float32.
        case f16
    }
    public var broadcastValues = ValuePrecision.f32
    /// Precision of gradient chunk values on the wire.
    public enum GradientPrecision: String, Sendable, CaseIterable {
        case f32
        /// bfloat16: half the upload bytes. Workers round each value to nearest (ties to even);
        /// the coordinator folds the rounded values in float32 (or exactly, in deterministic mode).
        case bf16
    }
    public var gradientValues = GradientPrecision.f32
    /// With no worker at all, end the run as failed after this many seconds (0: wait forever).
    public var waitForWorkersSeconds = 0.0
    /// Requests one worker may have unanswered at once; more are refused (a flood from one
    /// member cannot make the coordinator hold replies without bound).
    public var maxRequestsInFlight = 8
    public init() {}
}

extension CoordinatorSettings {
    /// The smallest chunk ``chunkValues(forValues:)`` makes.
    public static let smallestChunkValues = 16_384

    /// The chunk size a run uses for an exchange of `values` values: `chunk_values`, or for a
    /// model smaller than `chunks_per_model` such chunks, 1/`chunks_per_model` of it rounded up
    /// (at least 16 Ki values, never more than `chunk_values`). The coordinator holds a few
    /// received chunks and nng one per connection: with chunks of 1/16 of the model, 8 workers'
    /// chunks in hand stay well under the model's size (issue 11's memory bound), where 1 MiB
    /// chunks of a 4 MB model held 3 models' worth. `chunks_per_model: 0` keeps `chunk_values`.
    public func chunkValues(forValues values: Int) -> Int {
        guard chunksPerModel > 0 else { return chunkValues }
        return min(chunkValues, max(Self.smallestChunkValues, (values + chunksPerModel - 1) / chunksPerModel))
    }
}
