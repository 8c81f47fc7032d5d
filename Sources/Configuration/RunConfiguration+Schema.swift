import Yams
import Checkpoints
import CompressedSensing
import Coordination
import Models
import Observe
import Pruning
import Speech
import Training
import Transport

// The YAML names of every setting. One line per key: name, storage, help, check.

extension RunConfiguration: ConfigSection {
    static var fields: [ConfigField<RunConfiguration>] {
        [
            .init("seed", \.seed, "seeds initial weights, data order and generated data"),
            .init("steps", \.steps, "total steps of the run", check: positive),
            .init("init_from", \.initFrom, "a checkpoint (file or run folder) whose model weights start the run; empty: from seed"),
            .init("deterministic", \.deterministic, "bit-identical weights whatever the number of workers, the order chunks arrive in, or a kill and resume (exact fixed-point gradient sums)"),
            .init("compute_signature", \.computeSignature, "deterministic runs: the compute signature every worker must have, as the coordinator logs it (\"openblas Haswell, kernels avx2+fma\"); empty: the coordinator's own"),
            .init("model", \.model, "the model"),
            .init("data", \.data, "the training data"),
            .init("augmentation", \.augmentation, "on-the-fly augmentation of speech examples"),
            .init("optimizer", \.optimizer, "optimizer and learning-rate schedule"),
            .init("pruning", \.pruning, "the projection step that sparsifies the weights"),
            .init("coordinator", \.coordinator, "batching, deadlines and chunking"),
            .init("checkpoint", \.checkpoint, "how often to checkpoint, how many to keep, what a failed write does"),
            .init("transport", \.transport, "nng socket limits"),
            .init("security", \.security, "limits that keep the coordinator serving while strangers connect"),
            .init("observe", \.observe, "the coordinator's HTTP endpoint: Prometheus /metrics and the live page"),
        ]
    }
}

extension ModelSettings.Kind: ConfigEnum {}
extension ModelSettings: ConfigSection {
    static var fields: [ConfigField<ModelSettings>] {
        [
            .init("kind", \.kind, "model architecture"),
            .init("input_dim", \.inputDim, "input features", check: positive),
            .init("hidden_dim", \.hiddenDim, "hidden units", check: positive),
            .init("classes", \.classes, "output classes", check: { $0 >= 2 ? nil : "must be at least 2" }),
            .init("parameters", \.parameters, "loadtest: parameter count", check: { $0 >= 2 ? nil : "must be at least 2" }),
            .init("acoustic", \.acoustic, "ctc, rnnt: the acoustic model's (the transducer's encoder's) sizes"),
            .init("rnnt", \.rnnt, "rnnt: the prediction and joint networks' sizes, and the auxiliary CTC loss"),
            .init("dropout", \.dropout, "ctc, rnnt: probability of dropping each unit of every encoder LSTM layer's output while training (inverted dropout, masks keyed by seed, epoch and example; 0: off)",
                  check: { $0 >= 0 && $0 < 1 ? nil : "must be in [0, 1)" }),
        ]
    }
}

extension DataSettings.Kind: ConfigEnum {}
extension DataSettings: ConfigSection {
    static var fields: [ConfigField<DataSettings>] {
        [
            .init("kind", \.kind, "data set"),
            .init("examples", \.examples, "training examples", check: positive),
            .init("noise", \.noise, "noise around class centres", check: nonNegative),
            .init("train", \.train, "speech: prepared training shards (folder)"),
            .init("valid", \.valid, "speech: prepared validation shards (folder)"),
            .init("valid_channel", \.validChannel, "speech: prepared channel-degraded validation shards (folder)"),
            .init("valid_seen", \.validSeen, "speech: prepared validation shards spoken by training voices (folder; data synth's valid_seen), scored beside valid's held-out voices"),
        ]
    }
}

extension OptimizerSettings.Kind: ConfigEnum {}
extension OptimizerSettings: ConfigSection {
    static var fields: [ConfigField<OptimizerSettings>] {
        [
            .init("kind", \.kind, "optimizer"),
            .init("learning_rate", \.learningRate, "base learning rate", check: positive),
            .init("momentum", \.momentum, "SGD momentum", check: unitInterval),
            .init("nesterov", \.nesterov, "SGD: Nesterov momentum"),
            .init("beta1", \.beta1, "Adam first-moment decay", check: unitInterval),
            .init("beta2", \.beta2, "Adam second-moment decay", check: unitInterval),
            .init("epsilon", \.epsilon, "Adam denominator term", check: positive),
            .init("weight_decay", \.weightDecay, "L2 (sgd, adam) or decoupled (adamw) weight decay", check: nonNegative),
            .init("clip_norm", \.clipNorm, "clip the global gradient norm (0: off)", check: nonNegative),
            .init("schedule", \.schedule, "learning-rate schedule"),
        ]
    }
}

extension LearningRateSchedule.Decay: ConfigEnum {}
extension LearningRateSchedule: ConfigSection {
    static var fields: [ConfigField<LearningRateSchedule>] {
        [
            .init("decay", \.decay, "after warm-up: constant or cosine"),
            .init("warmup_steps", \.warmupSteps, "linear warm-up steps", check: nonNegative),
            .init("min_factor", \.minFactor, "cosine: final fraction of the base rate", check: nonNegative),
        ]
    }
}

extension PruningSettings.Method: ConfigEnum {}
extension CoordinatorSettings.ValuePrecision: ConfigEnum {}
extension CoordinatorSettings.GradientPrecision: ConfigEnum {}
extension PruningSettings.Scope: ConfigEnum {}
extension SparsitySchedule.Kind: ConfigEnum {}
extension MeasurementOperator.Kind: ConfigEnum {}
extension PruningSettings.Operator: ConfigEnum {}
extension PruningSettings.RhoGrowth: ConfigEnum {}
extension PruningSettings.Recovery: ConfigEnum {}
extension RowSparseRegression.WarmStart: ConfigEnum {}
extension SparseRecovery.Solver: ConfigEnum {}
extension PruningSettings: ConfigSection {
    static var fields: [ConfigField<PruningSettings>] {
        [
            .init("method", \.method, "pruning method"),
            .init("scope", \.scope, "layer: every pruned layer reaches the target; global: one magnitude threshold"),
            .init("schedule", \.schedule, "target sparsity and when masks are recomputed"),
            .init("snapshots", \.schedule.snapshots,
                  "cubic schedules: sizes the ramp holds on its way, each kept as checkpoints/snapshot-<percent>.ckpt, e.g. [0.5, 0.7, 0.8, 0.9]"),
            .init("snapshot_steps", \.schedule.snapshotSteps, "steps each snapshot size is held with its mask fixed before it is kept",
                  check: positive),
            .init("exclude", \.exclude, "tensor-name patterns never pruned, e.g. [\"conv.0.*\", \"output.*\"]"),
            .init("block", \.block, "csp, admm-magnitude: weights per block", check: { $0 >= 2 ? nil : "must be at least 2" }),
            .init("measurements", \.measurements, "csp: measurements per block, auto (2k ln(b/k); under recover signal at least 5.5 per value the block holds) or a ratio of the block; with operator activation-sketch: rows of each input's sketch, auto (a quarter of the input's dimension d) or a ratio of d"),
            .init("operator", \.measurementOperator, "csp: how W + U is measured: a seeded random operator (gaussian, rademacher, srht), the layer's own inputs (activations: workers send Σ x xᵀ), or a sketch of them (activation-sketch: workers send pruning.measurements random combinations of the input frames)"),
            .init("recover", \.recover,
                  "csp with a random operator: signal (recover W + U at its current sparsity, then keep the largest k) or target (a k-sparse estimate directly; before 2026-11-30)"),
            .init("solver", \.solver, "csp, one-shot-reconstruction: the sparse-recovery solver"),
            .init("iterations", \.iterations, "csp, one-shot-reconstruction: solver iterations", check: positive),
            .init("warm_start", \.warmStart, "csp with operator activations or activation-sketch, one-shot-reconstruction: where each row's solver starts: obs (backward elimination; slow, better) or diagonal (|w|·√G_ii)"),
            .init("swaps", \.swaps, "csp with operator activations or activation-sketch, one-shot-reconstruction: rounds per row after the solver, each exchanging a kept weight for a dropped one where that lowers the layer's output error most (0: none)", check: nonNegative),
            .init("restarts", \.restarts, "csp with operator activations or activation-sketch, one-shot-reconstruction: restarts per row after the swap rounds, each kicking the best support by two random exchanges and searching again, the lower error kept: auto (⌊1024/k²⌋ for a row keeping k, at most 32: none once k > 32) or a count (0: none; needs swaps > 0)"),
            .init("damping", \.damping, "csp with operator activations or activation-sketch, wanda, one-shot-reconstruction: λ of G + λ·mean(diag G)·I", check: nonNegative),
            .init("rho", \.rho, "csp, admm-magnitude: strength of the proximal pull towards Z", check: nonNegative),
            .init("rho_growth", \.rhoGrowth,
                  "csp, admm-magnitude: sparsity (ρ/(1 − s) once the support has sparsity s, the dual rescaled to match) or none (ρ throughout; collapses at 90%)"),
            .init("dual_interval", \.dualInterval, "csp, admm-magnitude: steps between dual updates", check: positive),
            .init("seed", \.seed, "csp: seeds the measurement operators (0: the run's seed)"),
            .init("taylor_decay", \.taylorDecay, "taylor: weight of the running average of |w·g| per step", check: probability),
            .init("structured_keep", \.structuredKeep, "structured: N of N:M (weights kept per group)", check: positive),
            .init("structured_group", \.structuredGroup, "structured: M of N:M (consecutive weights of a row)", check: positive),
        ]
    }
}

extension SparsitySchedule: ConfigSection {
    static var fields: [ConfigField<SparsitySchedule>] {
        [
            .init("kind", \.kind, "one-shot or cubic (Zhu & Gupta)"),
            .init("initial", \.initial, "sparsity at the first update", check: probability),
            .init("target", \.target, "final sparsity of the pruned layers", check: probability),
            .init("start_step", \.startStep, "first mask update", check: nonNegative),
            .init("end_step", \.endStep, "cubic: the step the target is reached", check: nonNegative),
            .init("interval", \.interval, "cubic: steps between mask updates", check: positive),
        ]
    }
}

extension Measurements: ConfigValue {
    static var expected: String { "auto or a ratio in (0, 1]" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> Measurements {
        if node.string == "auto" { return .auto }
        guard let r = node.float ?? node.int.map(Double.init), r > 0, r <= 1 else {
            throw configError(node, key, source, "expected \(expected), found \(scalarText(node))")
        }
        return .ratio(r)
    }
    var yaml: Node {
        switch self {
        case .auto: Node("auto", .implicit)
        case let .ratio(r): Node(String(r), .implicit)
        }
    }
}

extension RowSparseRegression.Restarts: ConfigValue {
    static var expected: String { "auto or a whole number of at least 0" }
    static func parse(_ node: Node, at key: String, source: String) throws(ConfigError) -> RowSparseRegression.Restarts {
        if node.string == "auto" { return .auto }
        guard let n = node.int, n >= 0 else { throw configError(node, key, source, "expected \(expected), found \(scalarText(node))") }
        return .count(n)
    }
    var yaml: Node {
        switch self {
        case .auto: Node("auto", .implicit)
        case let .count(n): Node(String(n), .implicit)
        }
    }
}

extension CoordinatorSettings: ConfigSection {
    static var fields: [ConfigField<CoordinatorSettings>] {
        [
            .init("global_batch", \.globalBatch, "examples per step over all workers", check: positive),
            .init("micro_batches", \.microBatches, "micro-batches per step (independent of workers)", check: positive),
            .init("step_deadline_seconds", \.stepDeadlineSeconds, "drop a worker that holds a micro-batch longer", check: positive),
            .init("chunk_values", \.chunkValues, "largest gradient chunk in float32 values", check: positive),
            .init("chunks_per_model", \.chunksPerModel, "cut a model smaller than this many chunks of chunk_values into at least this many, of at least 16384 values (bounds the chunks a coordinator holds; 0: always chunk_values)", check: nonNegative),
            .init("poll_hold_seconds", \.pollHoldSeconds, "hold an idle work request this long", check: positive),
            .init("min_workers", \.minWorkers, "workers needed before steps start", check: positive),
            .init("length_grouping", \.lengthGrouping, "group examples of similar length into a step, sorting windows of this many global batches (0: plain shuffle)", check: nonNegative),
            .init("eval_every_steps", \.evalEverySteps, "score validation sets every N steps and at the end (0: never)", check: nonNegative),
            .init("eval_examples", \.evalExamples, "validation examples scored per set (0: all)", check: nonNegative),
            .init("eval_batch", \.evalBatch, "validation examples per evaluation task", check: positive),
            .init("broadcast_values", \.broadcastValues, "precision of broadcast weight values: f32, or f16 (half the bytes; the model is rounded to it)"),
            .init("gradient_values", \.gradientValues, "precision of gradient chunk values on the wire: f32, or bf16 (half the upload bytes; workers round to it)"),
            .init("wait_for_workers_seconds", \.waitForWorkersSeconds, "with no worker at all, end the run as failed after this long (0: wait forever)", check: nonNegative),
            .init("max_requests_in_flight", \.maxRequestsInFlight, "requests one worker may have unanswered at once; more are refused", check: positive),
        ]
    }
}

extension CheckpointSettings.WriteFailurePolicy: ConfigEnum {}
extension CheckpointSettings: ConfigSection {
    static var fields: [ConfigField<CheckpointSettings>] {
        [
            .init("every_steps", \.everySteps, "checkpoint interval in steps (0: at the end only)", check: nonNegative),
            .init("keep", \.keep, "checkpoints kept", check: positive),
            .init("on_write_failure", \.onWriteFailure, "stop: end the run (non-zero exit) after \(CheckpointSettings.failedWritesBeforeStop) failed checkpoint writes in a row; continue: train on, holding metrics and ledger lines in memory (bounded) until the disk takes them"),
        ]
    }
}

extension TransportSettings: ConfigSection {
    static var fields: [ConfigField<TransportSettings>] {
        [
            .init("max_message_bytes", \.maxMessageBytes, "largest message accepted (NNG_OPT_RECVMAXSZ)", check: positive),
            .init("coordinator_contexts", \.coordinatorContexts, "concurrent exchanges the coordinator serves", check: positive),
            .init("resend_seconds", \.resendSeconds, "REQ re-send time", check: positive),
            .init("request_timeout_seconds", \.requestTimeoutSeconds,
                  "a worker asks again, keeping its session, after this long without an answer; after twice this long it dials a fresh connection and joins again (keep it above half the longest support update)", check: positive),
            .init("send_window", \.sendWindow, "gradient chunks a worker keeps in flight", check: positive),
            .init("gradient_buffers", \.gradientBuffers,
                  "gradient buffers a worker computes into: 2 overlaps computing the next micro-batch with sending the last (a second copy of the gradient in memory), 1 does not",
                  check: { (1 ... 2).contains($0) ? nil : "must be 1 or 2" }),
            .init("chunk_stream", \.chunkStream,
                  "workers send gradient chunks on a byte stream beside the REQ socket (no message allocated per chunk); false: as requests on it. tcp:// and tls+tcp:// only"),
            .init("chunk_stream_port", \.chunkStreamPort, "the chunk stream's TCP port on the coordinator's host (0: a free one; open it in firewalls beside the coordinator's port)",
                  check: { (0 ... 65535).contains($0) ? nil : "must be a TCP port, 0 to 65535" }),
            .init("tls", \.tls, "TLS for tls+tcp:// addresses"),
        ]
    }
}

extension TLSSettings: ConfigSection {
    static var fields: [ConfigField<TLSSettings>] {
        [
            .init("dir", \.dir, "folder made by `csptrain certs init` (ca.pem, coordinator.pem/.key, worker.pem/.key); empty: no TLS; --tls DIR sets it"),
            .init("require_client_cert", \.requireClientCert, "mutual TLS: workers without a certificate signed by the run's CA fail the handshake"),
            .init("expiry_warning_days", \.expiryWarningDays, "warn at start when a certificate expires within this many days", check: nonNegative),
        ]
    }
}

extension SecuritySettings: ConfigSection {
    static var fields: [ConfigField<SecuritySettings>] {
        [
            .init("max_connections", \.maxConnections, "connections open at once; past it new ones are closed at once", check: positive),
            .init("silent_connection_seconds", \.silentConnectionSeconds, "close a connection without a worker that sends nothing for this long", check: positive),
            .init("join_attempts_per_minute", \.joinAttemptsPerMinute, "join attempts one host may make per minute (0: no limit)", check: nonNegative),
            .init("max_workers", \.maxWorkers, "workers in the run at once (0: no limit)", check: nonNegative),
        ]
    }
}

extension ObserveSettings: ConfigSection {
    static var fields: [ConfigField<ObserveSettings>] {
        [
            .init("http", \.http, "host:port for /metrics, /api/status and the live page (port 0: a free one; empty: off)"),
            .init("token_file", \.tokenFile, "a file holding a bearer token that every HTTP route but /metrics requires (empty: none)"),
            .init("departed_series_seconds", \.departedSeriesSeconds, "a departed worker's labelled series are removed after this long", check: nonNegative),
            .init("goal_wer", \.goalWer, "validation WER goal drawn on the live page and by `csptrain plot` (0: none)", check: probability),
        ]
    }
}

extension AcousticSettings: ConfigSection {
    static var fields: [ConfigField<AcousticSettings>] {
        [
            .init("features", \.features, "log-mel bands", check: positive),
            .init("conv_channels", \.convChannels, "channels of each stride-2 convolution", check: positive),
            .init("conv_layers", \.convLayers, "stride-2 convolutions (time stride 2^n)", check: nonNegative),
            .init("lstm_hidden", \.lstmHidden, "LSTM units per direction", check: positive),
            .init("lstm_layers", \.lstmLayers, "LSTM layers", check: positive),
            .init("bidirectional", \.bidirectional, "bidirectional LSTM layers"),
        ]
    }
}

extension TransducerSettings: ConfigSection {
    static var fields: [ConfigField<TransducerSettings>] {
        [
            .init("predictor_embedding", \.predictorEmbedding, "width of the prediction network's label embedding", check: positive),
            .init("predictor_hidden", \.predictorHidden, "LSTM units of the prediction network", check: positive),
            .init("predictor_layers", \.predictorLayers, "LSTM layers of the prediction network", check: positive),
            .init("joint_dim", \.jointDim, "width of the joint network (both projections and the tanh)", check: positive),
            .init("ctc_weight", \.ctcWeight, "weight λ of an auxiliary CTC loss on the encoder's output while training (objective RNN-T + λ·CTC, through a head inference never reads; shortens the transducer's early plateau; 0: off)",
                  check: { $0.isFinite && $0 >= 0 ? nil : "must be 0 or more" }),
        ]
    }
}

extension AugmentationSettings: ConfigSection {
    static var fields: [ConfigField<AugmentationSettings>] {
        [
            .init("enabled", \.enabled, "augment training examples"),
            .init("speed_probability", \.speedProbability, "speed perturbation 0.9x/1.1x", check: probability),
            .init("noise_probability", \.noiseProbability, "coloured noise at 5-30 dB SNR", check: probability),
            .init("babble_probability", \.babbleProbability, "babble of other utterances", check: probability),
            .init("reverb_probability", \.reverbProbability, "image-method room reverberation", check: probability),
            .init("telephone_probability", \.telephoneProbability, "telephone band 300-3400 Hz", check: probability),
            .init("gain_probability", \.gainProbability, "gain -6..+6 dB", check: probability),
            .init("channel_probability", \.channelProbability, "the degraded validation set's channel recipe (room, telephone, gain, white noise together) instead of the separate draws", check: probability),
            .init("frequency_masks", \.frequencyMasks, "SpecAugment frequency masks", check: nonNegative),
            .init("frequency_mask_width", \.frequencyMaskWidth, "widest frequency mask (bands)", check: nonNegative),
            .init("time_masks", \.timeMasks, "SpecAugment time masks", check: nonNegative),
            .init("time_mask_width", \.timeMaskWidth, "widest time mask (frames)", check: nonNegative),
        ]
    }
}

func probability(_ v: Double) -> String? { v >= 0 && v <= 1 ? nil : "must be in [0, 1]" }
