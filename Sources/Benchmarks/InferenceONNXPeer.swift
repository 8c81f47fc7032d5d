import Checkpoints
import Foundation
import Inference
import Models
import Speech
import Tensors

/// onnxruntime on one thread, on the dense model exported by `checkpoint export --format onnx`:
/// the peer row of `bench --only inference`. It starts from precomputed log-mel features, so it
/// is compared with csptrain's dense model on the same features (features and decoding left out).
enum InferenceONNXPeer {
    struct Result {
        var rtf: Double
        var rtfCsptrain: Double
        var version: String
    }

    /// The Python of scripts/python-env.sh: CSPTRAIN_PYTHON, or .build/pyenv in the working directory.
    static var python: String? {
        if let p = ProcessInfo.processInfo.environment["CSPTRAIN_PYTHON"] { return p }
        let made = ".build/pyenv/bin/python"
        return FileManager.default.isExecutableFile(atPath: made) ? made : nil
    }

    static func run(model: AcousticModel, parameters p: [Float], utterances: [[Float]], audioSeconds: Double,
                    repeats: Int) -> Result? {
        guard let python, FileManager.default.fileExists(atPath: "scripts/bench-onnx.py") else { return nil }
        let s = model.settings, F = s.features
        let mean = [Float](repeating: 0, count: F), std = [Float](repeating: 1, count: F)
        let architecture = ONNXAcousticGraph.Architecture(
            features: F, convChannels: s.convChannels, convLayers: s.convLayers, lstmHidden: s.lstmHidden,
            lstmLayers: s.lstmLayers, bidirectional: s.bidirectional, classes: s.classes)
        guard let bytes = try? ONNXAcousticGraph.export(architecture, tensor: { name in model.layout[name].map { Array(p[$0.range]) } },
                                                        mean: mean, std: std) else { return nil }
        let extractor = LogMelExtractor()
        let features = utterances.map { extractor.features($0) }
        let frames = features[0].count / F
        guard features.allSatisfy({ $0.count == frames * F }) else { return nil }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-bench-onnx-\(UInt64.random(in: 0 ... .max))")
        defer { try? FileManager.default.removeItem(at: folder) }
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(bytes).write(to: folder.appendingPathComponent("model.onnx"))
            try Data(FloatEncoding.denseBytes(features.flatMap { $0 })).write(to: folder.appendingPathComponent("features.f32"))
        } catch { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["scripts/bench-onnx.py", "--model", folder.appendingPathComponent("model.onnx").path,
                             "--features", folder.appendingPathComponent("features.f32").path, "--frames", "\(frames)",
                             "--utterances", "\(utterances.count)", "--repeats", "\(repeats)"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let seconds = object["seconds"] as? Double else { return nil }
        // csptrain's dense model on the same (identity-normalised) features, batch 1, best of `repeats`.
        var options = InferenceModel.Options()
        options.layouts = .dense
        options.chunkFrames = model.outputFrames(frames)
        let packed = InferenceModel(model: model, parameters: p, options: options)
        var best = Double.infinity
        for _ in 0 ..< repeats {
            best = min(best, InferenceBenchmark.seconds {
                var times: LayerTimes?
                for f in features { _ = packed.logits([f], times: &times) }
            })
        }
        return Result(rtf: seconds / audioSeconds, rtfCsptrain: best / audioSeconds, version: object["onnxruntime"] as? String ?? "?")
    }
}
