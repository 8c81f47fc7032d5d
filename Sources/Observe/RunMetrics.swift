import CoreMetrics
import Prometheus

/// The coordinator's Prometheus series, made through swift-metrics with a factory bound to this
/// run's own ``PrometheusCollectorRegistry`` (never the global `MetricsSystem`: tests and benches
/// run several coordinators in one process).
///
/// Names follow Prometheus conventions: counters end in `_total`, durations in `_seconds`, sizes
/// in `_bytes`, fractions in `_ratio`. Workers are labelled by the name they joined with, never
/// by session.
final class RunMetrics: @unchecked Sendable {
    // @unchecked: every instrument is thread-safe (swift-prometheus's are atomic or locked); the
    // per-worker dictionary is only touched under RunObserver's lock.
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// Reasons a worker's chunk is refused (or acknowledged without being folded).
    static let refusalReasons = ["duplicate", "stale", "not_assigned", "malformed", "overloaded", "other"]
    /// Why a worker left the run (Membership.Reason, in Prometheus spelling).
    static let removalReasons = ["left", "disconnected", "missed_deadline", "silent"]
    /// valid and valid_channel: held-out voices; valid_seen: training voices (recipe 2).
    static let validationSets = ["valid", "valid_channel", "valid_seen"]

    let step: CoreMetrics.Gauge
    let totalSteps: CoreMetrics.Gauge
    let examplesPerSecond: CoreMetrics.Gauge
    let audioSecondsPerSecond: CoreMetrics.Gauge
    let loss: CoreMetrics.Gauge
    let learningRate: CoreMetrics.Gauge
    let validationWER: [String: CoreMetrics.Gauge]
    let stepDuration: CoreMetrics.Timer
    let sparsity: CoreMetrics.Gauge
    let sparsityOverall: CoreMetrics.Gauge
    private(set) var layerSparsity: [String: CoreMetrics.Gauge] = [:]
    let projectionDuration: CoreMetrics.Timer
    let receivedBytes: CoreMetrics.Counter
    let sentBytes: CoreMetrics.Counter
    let joins: CoreMetrics.Counter
    let removals: [String: CoreMetrics.Counter]
    let reassigned: CoreMetrics.Counter
    let checkpointWriteDuration: CoreMetrics.Timer
    let workers: CoreMetrics.Gauge

    /// One worker's labelled series.
    struct Worker {
        let microBatches: CoreMetrics.Counter
        let refused: [String: CoreMetrics.Counter]
        let lastHeard: CoreMetrics.Gauge
        let microBatchDuration: CoreMetrics.Timer

        func destroy() {
            microBatches.destroy()
            for c in refused.values { c.destroy() }
            lastHeard.destroy()
            microBatchDuration.destroy()
        }
    }
    private(set) var perWorker: [String: Worker] = [:]

    init(layers: [String]) {
        registry = PrometheusCollectorRegistry()
        var f = PrometheusMetricsFactory(registry: registry)
        // A speech step takes seconds; an MLP's milliseconds.
        let durations: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                     .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
                                     .seconds(10), .seconds(30), .seconds(60)]
        f.defaultDurationHistogramBuckets = durations
        factory = f
        step = CoreMetrics.Gauge(label: "csptrain_step", factory: f)
        totalSteps = CoreMetrics.Gauge(label: "csptrain_steps_planned", factory: f)
        examplesPerSecond = CoreMetrics.Gauge(label: "csptrain_examples_per_second", factory: f)
        audioSecondsPerSecond = CoreMetrics.Gauge(label: "csptrain_audio_seconds_per_second", factory: f)
        loss = CoreMetrics.Gauge(label: "csptrain_loss", factory: f)
        learningRate = CoreMetrics.Gauge(label: "csptrain_learning_rate", factory: f)
        var wer: [String: CoreMetrics.Gauge] = [:]
        for set in Self.validationSets {
            wer[set] = CoreMetrics.Gauge(label: "csptrain_validation_wer_ratio", dimensions: [("set", set)], factory: f)
        }
        validationWER = wer
        stepDuration = CoreMetrics.Timer(label: "csptrain_step_duration_seconds", factory: f)
        sparsity = CoreMetrics.Gauge(label: "csptrain_sparsity_ratio", factory: f)
        sparsityOverall = CoreMetrics.Gauge(label: "csptrain_sparsity_overall_ratio", factory: f)
        projectionDuration = CoreMetrics.Timer(label: "csptrain_projection_duration_seconds", factory: f)
        receivedBytes = CoreMetrics.Counter(label: "csptrain_received_bytes_total", factory: f)
        sentBytes = CoreMetrics.Counter(label: "csptrain_sent_bytes_total", factory: f)
        joins = CoreMetrics.Counter(label: "csptrain_worker_joins_total", factory: f)
        var removals: [String: CoreMetrics.Counter] = [:]
        for reason in Self.removalReasons {
            removals[reason] = CoreMetrics.Counter(label: "csptrain_worker_removals_total", dimensions: [("reason", reason)], factory: f)
        }
        self.removals = removals
        reassigned = CoreMetrics.Counter(label: "csptrain_reassigned_micro_batches_total", factory: f)
        checkpointWriteDuration = CoreMetrics.Timer(label: "csptrain_checkpoint_write_duration_seconds", factory: f)
        workers = CoreMetrics.Gauge(label: "csptrain_workers", factory: f)
        for layer in layers { setLayerSparsity(layer, 0) }
        // Not measured yet: NaN, not a misleading 0.
        for g in [loss, learningRate, audioSecondsPerSecond] + Array(wer.values) { g.record(Double.nan) }
        // Every labelled counter exists at 0 from the start.
        for c in removals.values { c.increment(by: 0) }
        for c in [receivedBytes, sentBytes, joins, reassigned] { c.increment(by: 0) }
    }

    func setLayerSparsity(_ layer: String, _ value: Double) {
        if layerSparsity[layer] == nil {
            layerSparsity[layer] = CoreMetrics.Gauge(label: "csptrain_layer_sparsity_ratio", dimensions: [("layer", layer)], factory: factory)
        }
        layerSparsity[layer]!.record(value)
    }

    /// The worker's series, made (every reason at 0) on first use.
    func worker(_ name: String) -> Worker {
        if let w = perWorker[name] { return w }
        let labels = [("worker", name)]
        var refused: [String: CoreMetrics.Counter] = [:]
        for reason in Self.refusalReasons {
            let c = CoreMetrics.Counter(label: "csptrain_worker_chunks_refused_total", dimensions: labels + [("reason", reason)], factory: factory)
            c.increment(by: 0)
            refused[reason] = c
        }
        let w = Worker(microBatches: CoreMetrics.Counter(label: "csptrain_worker_micro_batches_total", dimensions: labels, factory: factory),
                       refused: refused,
                       lastHeard: CoreMetrics.Gauge(label: "csptrain_worker_last_heard_seconds", dimensions: labels, factory: factory),
                       microBatchDuration: CoreMetrics.Timer(label: "csptrain_worker_micro_batch_duration_seconds", dimensions: labels,
                                                             factory: factory))
        w.microBatches.increment(by: 0)
        perWorker[name] = w
        return w
    }

    /// A departed worker's series disappear from the scrape.
    func removeWorker(_ name: String) {
        perWorker.removeValue(forKey: name)?.destroy()
    }

    /// The text exposition format (version 0.0.4).
    func emit(into buffer: inout [UInt8]) { registry.emit(into: &buffer) }
}
