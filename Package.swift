// swift-tools-version: 6.0
// csptrain: a distributed training coordinator for sparse speech-recognition models.
//
// Dependencies point one way, down towards the numeric core:
//   csptrain (CLI) → Runtime → Coordination, ParameterServer, Checkpoints, Pruning, Training, Models, Wire, Transport
//   Wire → Coordination (the domain messages it converts), Tensors
//   Runtime → TLSMaterial → Transport (TLS files into nng's TLS configurations)
//   Runtime, Checkpoints → FileIO (POSIX files whose errors carry errno, path and disk)
//   Transport knows nothing of training; Tensors knows nothing of networking.
import PackageDescription

let package = Package(
    name: "csptrain",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "csptrain", targets: ["csptrain"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"4.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // The coordinator's /metrics: swift-metrics instruments over a Prometheus registry per run.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        // `csptrain certs init` makes the run's CA and certificates (no openssl on the path).
        .package(url: "https://github.com/apple/swift-certificates", exact: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // C system libraries: a module map and a shim header, nothing else.
        .systemLibrary(name: "CNNG", path: "Sources/CNNG"),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CSndfile", path: "Sources/CSndfile"),
        .systemLibrary(name: "CFFTW", path: "Sources/CFFTW"),
        .systemLibrary(name: "CSoxr", path: "Sources/CSoxr"),

        // glibc's allocator tuning: one malloc arena, set as the program loads (before any thread).
        .target(name: "CMalloc"),

        // Numeric inner loops in C (LSTM cell, activations, Adam, recurrent products), vectorised per
        // CPU at load time. Element-wise kernels round alike in every variant (no fused
        // multiply-adds); the products use FMA where the CPU has it, as OpenBLAS does.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),

        // POSIX files for the run folder: appends, atomic writes, a bounded backlog for lines a
        // full disk refuses, standard output that reports a closed pipe. Errors carry the errno,
        // its text, the path and the file system. Knows nothing of training.
        .target(name: "FileIO"),
        // nng wrapped for Swift: sockets, AIO as async/await, byte streams, errors.
        .target(name: "Transport", dependencies: ["CNNG"]),
        // The wire: generated protobuf (Generated/, never edited by hand) and every conversion
        // between it and the domain types (X+Wire.swift): requests in, replies out, gradient
        // chunks written and read in place, weights framed once per version.
        .target(name: "Wire", dependencies: ["Coordination", "Tensors", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["Generated/PROTO_SHA256"]),
        // Flat parameter buffers, named views, sparse encodings, checksums, BLAS calls.
        .target(name: "Tensors", dependencies: ["CBLAS", "CKernels"]),
        // Models with their backward passes, behind the GradientModel protocol; built-in tasks.
        .target(name: "Models", dependencies: ["Tensors", "CKernels"]),
        // Speech data: audio files, resampling, features, transcripts, decoding and scoring.
        .target(name: "Speech", dependencies: ["Tensors", "CSndfile", "CFFTW", "CSoxr"]),
        // What a worker trains: a model with its data (ModelFactory; the speech task).
        .target(name: "Tasks", dependencies: ["Models", "Speech", "Tensors"]),
        // Optimizers, learning-rate schedules, gradient accumulation and clipping.
        .target(name: "Training", dependencies: ["Tensors", "CKernels"]),
        // Measurement operators and sparse-recovery solvers (NIHT, CoSaMP, FISTA), batched over blocks.
        // Optimised in debug builds too: its solver tests would otherwise take minutes.
        .target(name: "CompressedSensing", dependencies: ["Tensors", "CKernels"],
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // The projection step that makes weights sparse (identity until CSP lands).
        .target(name: "Pruning", dependencies: ["Tensors", "CompressedSensing"], exclude: ["README.md"]),
        // The checkpoint format and its store.
        .target(name: "Checkpoints", dependencies: ["FileIO", "Tensors", "Wire", .product(name: "Crypto", package: "swift-crypto")], exclude: ["README.md"]),
        // The numbers of a run for a range of the parameters: accumulation, mean, clipping, the
        // optimizer, the projection and the encoding of the weights workers receive. No members,
        // no wire.
        .target(name: "ParameterServer", dependencies: ["Tensors", "Training", "Pruning"]),
        // Pure state machines: the run (events in, directives out), membership, join handshakes,
        // step rounds, chunk accounting. No sockets, no clock, no files.
        .target(name: "Coordination", dependencies: ["Tensors", .product(name: "Crypto", package: "swift-crypto")]),
        // A run's TLS material: makes the CA and certificates (`csptrain certs init`), reads a
        // certificate folder into Transport's TLS configurations, warns before expiry.
        .target(name: "TLSMaterial", dependencies: [
            "FileIO", "Transport",
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Watching a run: the coordinator's HTTP endpoint on nng's HTTP server (/metrics through
        // swift-metrics and swift-prometheus, the status API, the live page). Fed by the shell.
        .target(name: "Observe", dependencies: [
            "Transport", "Coordination",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The YAML run configuration: composes the modules' settings structs.
        .target(name: "Configuration", dependencies: [
            "Models", "Training", "Pruning", "CompressedSensing", "Coordination", "Transport", "Checkpoints", "Speech", "Observe",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The shells: coordinator and worker services (their chunk streams too), launcher, metrics files.
        .target(name: "Runtime", dependencies: [
            "FileIO", "Transport", "Wire", "Tensors", "Models", "Training", "Pruning", "Checkpoints", "ParameterServer",
            "Coordination", "Configuration", "Tasks", "Speech", "CMalloc", "TLSMaterial", "Observe",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Inference with sparse weights: each matrix packed dense, CSR, bitmask rows, N:M or low-rank
        // (C kernels in CKernels/sparse.c), streaming sessions, speech to text.
        // Optimised in debug builds too: its tests run whole models.
        .target(name: "Inference", dependencies: ["Models", "Speech", "Tasks", "Tensors", "CKernels", "CBLAS"],
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Throughput benchmarks (`csptrain bench`), kept apart from the tests.
        .target(name: "Benchmarks", dependencies: ["FileIO", "Transport", "Wire", "Tensors", "Training", "Runtime", "Coordination", "Models", "Pruning", "Checkpoints", "Inference", "Speech", "Tasks", "Observe", "Configuration"]),
        // Experiments made of many runs: their plans, statistics and reports (pure; the
        // executable's `experiment` command is the shell that launches and scores the runs).
        .target(name: "Experiments", dependencies: ["Tensors", .product(name: "Yams", package: "Yams")]),
        // Fuzz targets for every decoder that reads network bytes, a field-aware protobuf
        // mutator, the seed corpus and the seeded harness (a test; `csptrain-fuzz` for libFuzzer).
        .target(name: "Fuzzing", dependencies: ["Wire", "Tensors", "Coordination"]),
        .executableTarget(name: "csptrain-fuzz", dependencies: ["Fuzzing"]),
        // Figures as SVG written by csptrain itself: a run's curves, a sweep's WER against sparsity.
        .target(name: "Plots"),
        // The executable: argument-parser commands only.
        .executableTarget(name: "csptrain", dependencies: [
            "FileIO", "Tensors",
            "Runtime", "Configuration", "Benchmarks", "Checkpoints", "Speech", "Tasks", "Models", "Pruning", "Plots", "Experiments", "Wire", "Inference",
            "TLSMaterial",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Helpers the test targets share (not a test target: it holds no tests).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "FileIOTests", dependencies: ["FileIO"]),
        .testTarget(name: "TransportTests", dependencies: ["Transport"]),
        .testTarget(name: "TLSMaterialTests", dependencies: ["TLSMaterial", "Transport"]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "Tensors"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Tensors", "CKernels"], exclude: ["Fixtures"]),
        .testTarget(name: "SpeechTests", dependencies: ["Speech", "Tensors", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Tensors"]),
        .testTarget(name: "CompressedSensingTests", dependencies: ["CompressedSensing", "Tensors"]),
        .testTarget(name: "PruningTests", dependencies: ["Pruning", "CompressedSensing", "Tensors"]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints", "Tensors", "Wire"]),
        .testTarget(name: "CoordinationTests", dependencies: ["Coordination", "Tensors"]),
        .testTarget(name: "ParameterServerTests", dependencies: ["ParameterServer", "Pruning", "Training", "Tensors", "Wire"]),
        .testTarget(name: "InferenceTests", dependencies: ["Inference", "Models", "Tensors", "Speech", "Tasks"]),
        .testTarget(name: "ExperimentsTests", dependencies: ["Experiments"]),
        .testTarget(name: "ObserveTests", dependencies: ["Observe", "Coordination", "Transport"]),
        .testTarget(name: "PlotsTests", dependencies: ["Plots"]),
        .testTarget(name: "FuzzingTests", dependencies: ["Fuzzing", "Wire", "Tensors", "TestSupport"], resources: [.copy("Corpus")]),
        .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "CMalloc", "FileIO", "Checkpoints", "Configuration", "Coordination", "Pruning", "Training", "Tensors"]),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "Pruning", "CompressedSensing"]),
        .testTarget(name: "IntegrationTests", dependencies: [
            "csptrain", "Transport", "Wire", "Models", "Configuration", "Checkpoints", "Tensors", "Tasks", "Speech",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ]
)
