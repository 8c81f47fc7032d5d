import Foundation
import Models
import Tensors
import Training

/// Training throughput of the speech model on one core, against the machine's sgemm peak measured
/// in the same run and, when it is installed, the same model in PyTorch on the same batches.
public enum SpeechBenchmark {
    public struct Report: Sendable {
        public var results: [Benchmarks.Result]
        /// Why the PyTorch comparison is missing, if it is.
        public var notes: [String]
    }

    /// Micro-batches of `microBatch` utterances whose lengths (10 ms frames) are drawn from
    /// `lengths`: by default the built-in corpus's spread, 0.6–4.4 s around a 2.25 s mean.
    public static func batches(count: Int, microBatch: Int, lengths: [Int]?, seed: UInt64) -> [[Int]] {
        var rng = SeededRandom(seed, 0x5350_4545, 0)
        return (0 ..< count).map { _ in
            (0 ..< microBatch).map { _ in
                if let lengths, !lengths.isEmpty { return lengths[Int(rng.next() % UInt64(lengths.count))] }
                // A triangular spread over 60–440 frames with its mode near the corpus's mean.
                let u = rng.nextUnitFloat(), v = rng.nextUnitFloat()
                return 60 + Int(190 * (u + v))
            }
        }
    }

    /// Floating-point operations of one training step of `model` on utterances of these lengths,
    /// counting only frames inside each utterance (padding is overhead, not work): forward
    /// products, and twice as many backward (input and weight gradients; none for the features).
    public static func trainingFLOPs(model: AcousticModel, frames: [Int]) -> Double {
        let s = model.settings
        var total = 0.0
        for f in frames {
            var t = f, channels = s.features, first = true
            for _ in 0 ..< s.convLayers {
                t = t == 0 ? 0 : (t + 2 - 3) / 2 + 1
                let forward = 2.0 * Double(t * s.convChannels * channels * 3)
                total += forward * (first ? 2 : 3)
                channels = s.convChannels
                first = false
            }
            let directions = s.bidirectional ? 2 : 1
            for _ in 0 ..< s.lstmLayers {
                total += 3 * 2.0 * Double(directions * t * (channels + s.lstmHidden) * 4 * s.lstmHidden)
                channels = s.lstmHidden * directions
            }
            total += 3 * 2.0 * Double(t * channels * s.classes)
        }
        return total
    }

    /// Single-threaded sgemm of 1024³, best of `repeats`: GFLOP/s.
    public static func sgemmPeak(repeats: Int = 5) -> Double {
        let n = 1024
        var rng = SeededRandom(1, 2, 3)
        let a = (0 ..< n * n).map { _ in rng.nextUnitFloat() - 0.5 }
        let b = (0 ..< n * n).map { _ in rng.nextUnitFloat() - 0.5 }
        var c = [Float](repeating: 0, count: n * n)
        var best = Double.infinity
        for _ in 0 ..< repeats {
            let start = ContinuousClock.now
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer { c in
                        VectorMath.gemm(m: n, n: n, k: n, a.baseAddress!, b.baseAddress!, c.baseAddress!)
                    }
                }
            }
            best = min(best, (ContinuousClock.now - start).seconds)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }

    /// Times `batches` training steps (forward, CTC, backward, Adam) after `warmup` untimed ones.
    /// `pytorch` is a command that runs scripts/bench_pytorch.py (exit status 3: not installed).
    /// `dropout` > 0 masks the encoder's LSTM outputs as a training run with `model.dropout` does.
    public static func run(batches shapes: [[Int]], warmup: Int, settings: AcousticSettings = AcousticSettings(),
                           dropout: Float = 0, pytorch: [String]?) throws -> Report {
        VectorMath.setThreadCount(1)
        let model = AcousticModel(settings: settings)
        var parameters = model.initialParameters(seed: 1)
        var gradient = [Float](repeating: 0, count: model.layout.totalCount)
        var optimizerSettings = OptimizerSettings()
        optimizerSettings.kind = .adam
        optimizerSettings.learningRate = 1e-3
        var optimizer = Optimizer(settings: optimizerSettings, parameterCount: parameters.count)
        var rng = SeededRandom(7, 7, 7)
        func inputs(_ frames: [Int]) -> ([[Float]], [[Int]]) {
            let features = frames.map { f in (0 ..< f * settings.features).map { _ in rng.nextGaussian() } }
            let labels = frames.map { f in (0 ..< max(1, f / 10)).map { _ in 1 + Int(rng.next() % UInt64(settings.classes - 1)) } }
            return (features, labels)
        }
        var example = 0
        func step(_ input: ([[Float]], [[Int]])) {
            let keys = input.0.indices.map { _ in
                example += 1
                return EncoderDropout.key(seed: 1, epoch: 0, example: example)
            }
            let masks = dropout > 0 ? EncoderDropout(probability: dropout, keys: keys) : nil
            parameters.withUnsafeMutableBufferPointer { p in
                gradient.withUnsafeMutableBufferPointer { g in
                    _ = model.lossAndGradient(parameters: UnsafeBufferPointer(p), features: input.0, labels: input.1, gradient: g, dropout: masks)
                    optimizer.apply(gradient: UnsafeBufferPointer(g), to: p, learningRate: 1e-3)
                }
            }
        }
        for frames in shapes.prefix(warmup) { step(inputs(frames)) }
        let prepared = shapes.map(inputs)
        let start = ContinuousClock.now
        for input in prepared { step(input) }
        let seconds = (ContinuousClock.now - start).seconds
        let frames = shapes.joined()
        let audioSeconds = Double(frames.reduce(0, +)) / 100
        let gflops = trainingFLOPs(model: model, frames: Array(frames)) / seconds / 1e9
        let peak = sgemmPeak()
        let withDropout = dropout > 0 ? String(format: ", dropout %.2f", dropout) : ""
        var results = [Benchmarks.Result(
            name: "speech model training, 1 thread\(withDropout): forward + backward + Adam, GFLOP/s of useful work",
            ours: gflops, baseline: peak, unit: "GFLOP/s",
            baselineName: "OpenBLAS sgemm 1024x1024x1024 on 1 thread, best of 5 (the machine's peak)")]
        var notes: [String] = []
        let ours = audioSeconds / seconds
        if let pytorch {
            switch runPyTorch(command: pytorch, shapes: shapes, warmup: warmup) {
            case let .success(theirs):
                results.append(Benchmarks.Result(
                    name: "speech model training, 1 thread, \(shapes.count) micro-batches of \(shapes.first?.count ?? 0): audio-seconds per second",
                    ours: ours, baseline: theirs.rate, unit: "audio-s/s",
                    baselineName: "PyTorch \(theirs.version) CPU, same model, batches and Adam, 1 thread"))
            case let .failure(reason):
                notes.append(reason.description)
            }
        }
        if results.count == 1 {
            results.append(Benchmarks.Result(
                name: "speech model training, 1 thread\(withDropout), \(shapes.count) micro-batches of \(shapes.first?.count ?? 0): audio-seconds per second",
                ours: ours, baseline: 0, unit: "audio-s/s", baselineName: "none (PyTorch not run)"))
        }
        return Report(results: results, notes: notes)
    }

    struct PyTorchResult { var rate: Double; var version: String }
    struct PyTorchSkipped: Error, CustomStringConvertible { var description: String }

    static func runPyTorch(command: [String], shapes: [[Int]], warmup: Int) -> Result<PyTorchResult, PyTorchSkipped> {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-bench-batches-\(getpid()).txt")
        defer { try? FileManager.default.removeItem(at: file) }
        let text = shapes.map { $0.map(String.init).joined(separator: " ") }.joined(separator: "\n") + "\n"
        do { try text.write(to: file, atomically: true, encoding: .utf8) } catch {
            return .failure(PyTorchSkipped(description: "PyTorch comparison skipped: cannot write \(file.path): \(error)"))
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst()) + ["--batches", file.path, "--threads", "1", "--warmup", "\(warmup)"]
        let out = Pipe()
        process.standardOutput = out
        do { try process.run() } catch {
            return .failure(PyTorchSkipped(description: "PyTorch comparison skipped: cannot run \(command[0]): \(error)"))
        }
        let data: Data
        do { data = try out.fileHandleForReading.readToEnd() ?? Data() } catch {
            process.waitUntilExit()
            return .failure(PyTorchSkipped(description: "PyTorch comparison failed: cannot read the output of \(command[0]): \(error)"))
        }
        process.waitUntilExit()
        if process.terminationStatus == 3 {
            return .failure(PyTorchSkipped(description: "PyTorch comparison skipped: torch is not installed (scripts/bench-pytorch.sh --install puts it in .venv-torch)"))
        }
        guard process.terminationStatus == 0,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rate = object["audio_seconds_per_second"] as? Double else {
            return .failure(PyTorchSkipped(description: "PyTorch comparison failed: \(command.joined(separator: " ")) exited with status \(process.terminationStatus)"))
        }
        return .success(PyTorchResult(rate: rate, version: object["torch"] as? String ?? "?"))
    }
}
