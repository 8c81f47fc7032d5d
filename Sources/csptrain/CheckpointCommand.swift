import ArgumentParser
import Checkpoints
import Configuration
import FileIO
import Foundation
import Models
import Pruning
import Runtime
import Speech
import Tasks
import Tensors
import Wire

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Inspect checkpoints and export their weights for other tools.",
        subcommands: [Inspect.self, Export.self]
    )

    /// A checkpoint file, or a run folder (its latest checkpoint).
    static func resolve(_ path: String) throws -> URL {
        do { return try CheckpointStore.resolve(path) } catch { throw ValidationError("\(error)") }
    }

    // MARK: inspect

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a checkpoint's step, epoch, per-layer sparsity and sizes, verifying every checksum.",
            discussion: "Exits 1 (naming the file and the record at fault) when a checksum fails or the file is truncated."
        )

        @Argument(help: ArgumentHelp("Checkpoint file, or a run folder (its latest checkpoint).", valueName: "path"))
        var path: String

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let url = try CheckpointCommand.resolve(path)
            let bytes: [UInt8]
            do { bytes = try CheckpointStore.readBytes(url) } catch { throw ValidationError("\(error)") }
            let header: Checkpoint.Header
            let records: [RecordLayout]
            let checkpoint: Checkpoint
            do {
                (header, records, checkpoint) = try Checkpoint.layout(of: bytes, source: url.path)
            } catch {
                if json { try? printJSON(jsonObject(["status": "corrupt", "path": url.path, "error": "\(error)"])) }
                StandardError.write("csptrain checkpoint inspect: \(error)\n")
                throw ExitCode.failure
            }
            let report = Report(url: url, fileBytes: bytes.count, header: header, records: records, checkpoint: checkpoint)
            if json { try printJSON(report.json()) } else { try output(report.text(), terminator: "") }
        }
    }

    struct Report {
        let url: URL
        let fileBytes: Int
        let header: Checkpoint.Header
        let records: [RecordLayout]
        let checkpoint: Checkpoint

        struct Layer {
            let name: String
            let shape: [Int]
            let values: Int
            let zeros: Int
            let encoding: String
            let storedBytes: Int
        }

        var layers: [Layer] {
            checkpoint.records(role: "param").map { r in
                let stored = records.first { $0.name == r.name && $0.role == r.role }
                return Layer(name: r.name, shape: r.shape, values: r.values.count, zeros: r.values.reduce(0) { $0 + ($1 == 0 ? 1 : 0) },
                             encoding: stored?.encoding.name ?? "?", storedBytes: stored?.storedBytes ?? 0)
            }
        }

        var parameters: Int { layers.reduce(0) { $0 + $1.values } }
        var zeros: Int { layers.reduce(0) { $0 + $1.zeros } }

        /// Bytes by role ("param", "master", "optimizer/m", ...).
        var bytesByRole: [(String, Int)] {
            var out: [String: Int] = [:]
            for r in records { out[r.role, default: 0] += r.storedBytes }
            return out.sorted { $0.key < $1.key }
        }

        func text() -> String {
            let s = checkpoint.state
            var lines: [String] = []
            lines.append("\(url.path): csptrain checkpoint, format version \(header.formatVersion), checksums OK")
            lines.append("run \(checkpoint.runID), step \(checkpoint.step), written \(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: checkpoint.createdUnix)))")
            if header.formatVersion >= 2 {
                lines.append("epoch \(s.epoch), \(s.positionInEpoch) of \(s.examplesPerEpoch) examples of it used; \(s.examplesSeen) examples since step 0; optimizer updates \(s.optimizerSteps)")
                lines.append("deterministic \(s.deterministic ? "yes (gradient sums in units of 2^-\(s.accumulationScaleBits))" : "no"); seed \(s.rngSeed); pruning \(s.projection.isEmpty ? "none" : s.projection) (schedule at \(String(format: "%.4f", s.scheduleSparsity)))")
                lines.append("compute signature \(s.computeSignature.isEmpty ? "none (not deterministic: workers may compute differently)" : s.computeSignature)")
                lines.append("fingerprint \(header.fingerprint.map { String(format: "%02x", $0) }.joined())")
            }
            if checkpoint.lastLoss.isFinite { lines.append(String(format: "last loss %.5f", checkpoint.lastLoss)) }
            lines.append("")
            let width = max(6, layers.map(\.name.count).max() ?? 6)
            lines.append("tensor".padding(toLength: width, withPad: " ", startingAt: 0) + "  shape            values    sparsity  encoding  bytes")
            for l in layers {
                let shape = "(" + l.shape.map(String.init).joined(separator: ", ") + ")"
                lines.append(l.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                             + shape.padding(toLength: 15, withPad: " ", startingAt: 0) + "  "
                             + String(l.values).leftPadded(8) + "  " + String(format: "%7.2f%%", 100 * Double(l.zeros) / Double(max(1, l.values)))
                             + "  " + l.encoding.padding(toLength: 8, withPad: " ", startingAt: 0) + "  " + String(l.storedBytes).leftPadded(9))
            }
            lines.append("")
            lines.append(String(format: "model: %d parameters, %.2f%% zeros; %d bytes stored for it (dense float32: %d, %.2fx)",
                                parameters, 100 * Double(zeros) / Double(max(1, parameters)),
                                layers.reduce(0) { $0 + $1.storedBytes }, parameters * 4,
                                Double(parameters * 4) / Double(max(1, layers.reduce(0) { $0 + $1.storedBytes }))))
            lines.append("file: \(fileBytes) bytes; by role: " + bytesByRole.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
            return lines.joined(separator: "\n") + "\n"
        }

        func json() -> String {
            let s = checkpoint.state
            var object: [String: Any] = [
                "status": "ok", "path": url.path, "format_version": Int(header.formatVersion), "run_id": checkpoint.runID,
                "step": checkpoint.step, "file_bytes": fileBytes, "parameters": parameters,
                "sparsity": Double(zeros) / Double(max(1, parameters)),
                "fingerprint": header.fingerprint.map { String(format: "%02x", $0) }.joined(),
                "layers": layers.map { l -> [String: Any] in
                    ["name": l.name, "shape": l.shape, "values": l.values, "sparsity": Double(l.zeros) / Double(max(1, l.values)),
                     "encoding": l.encoding, "stored_bytes": l.storedBytes]
                },
                "records": records.map { r -> [String: Any] in
                    ["name": r.name, "role": r.role, "encoding": r.encoding.name, "count": r.count, "stored_bytes": r.storedBytes,
                     "crc32c": String(format: "%08x", r.checksum)]
                },
            ]
            if checkpoint.lastLoss.isFinite { object["last_loss"] = checkpoint.lastLoss }
            if header.formatVersion >= 2 {
                object["epoch"] = Int(s.epoch)
                object["position_in_epoch"] = Int(s.positionInEpoch)
                object["examples_per_epoch"] = Int(s.examplesPerEpoch)
                object["examples_seen"] = Int(s.examplesSeen)
                object["optimizer_steps"] = Int(s.optimizerSteps)
                object["deterministic"] = s.deterministic
                object["compute_signature"] = s.computeSignature
                object["pruning_method"] = s.projection
                object["schedule_sparsity"] = s.scheduleSparsity
                object["seed"] = Int(s.rngSeed)
            }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    // MARK: export

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a checkpoint's model as safetensors (PyTorch's names and layouts) or as an ONNX graph.",
            discussion: """
            Names and layouts are torch.nn's: conv.<n>.weight (Cout, Cin, k) and .bias of Conv1d \
            layers, lstm.weight_ih_l<n>[_reverse] (4H, I), weight_hh (4H, H), bias_ih, bias_hh with \
            the gate order i, f, g, o of nn.LSTM, output.weight (V, D) and output.bias of nn.Linear, \
            and feature_normalization.mean/.std (per log-mel band). The metadata key csptrain.model \
            holds the architecture as JSON; scripts/check-export.py is a numpy reference of the \
            forward pass. --layout bitmask stores the pruned weights in the sparse-bitmask layout of \
            compressed-tensors (<prefix>.shape, .compressed, .bitmask, .row_offsets, the prefix being \
            the name without .weight).

            An RNN-T checkpoint (model.kind: rnnt) exports with torchaudio.models.RNNT's part names: \
            transcriber.conv.<n>.*, transcriber.lstm.*, transcriber.output_linear.*, \
            predictor.embedding.weight, predictor.lstm_layers.<n>.x2g.weight/.bias and .p2g.weight \
            (torchaudio's _CustomLSTM without layer norm), predictor.linear.*, and joiner.linear.* \
            applied to tanh(transcriber + predictor); safetensors only.

            --format onnx writes the whole model as an ONNX graph (opset 17) that onnxruntime runs: \
            input features (1, T, F) raw log-mels, output logits (1, T', V); normalisation, Conv, \
            LSTM (gates reordered to ONNX's i, o, f, c) and the output layer inside. Pruned weights \
            stay zeros (ONNX operators take dense weights); low-rank factored tensors are written as \
            their two factors where the operator allows it. scripts/check-onnx.py runs it against \
            the Swift model's logits (--reference).
            """
        )

        enum Format: String, ExpressibleByArgument { case safetensors, onnx }
        enum Layout: String, ExpressibleByArgument { case dense, bitmask }

        @Argument(help: ArgumentHelp("Checkpoint file, or a run folder (its latest checkpoint).", valueName: "path"))
        var path: String

        @Option(help: "Output format.")
        var format = Format.safetensors

        @Option(help: ArgumentHelp("Output file.", valueName: "file"))
        var out: String

        @Option(help: "dense: every tensor as float32; bitmask: the pruned weights in compressed-tensors' sparse-bitmask layout.")
        var layout = Layout.dense

        @Option(help: ArgumentHelp(
            "Also write the Swift model's input features and logits for this audio file beside --out (<out>.reference.json, .features.f32, .logits.f32), to check the export in another framework.",
            valueName: "audio"))
        var reference: String?

        func run() throws {
            let url = try CheckpointCommand.resolve(path)
            let checkpoint = try CheckpointStore.load(url)
            let config = try RunConfiguration.parse(yaml: checkpoint.configYAML, source: "\(url.path) (its configuration)")
            // The same model, weights and feature statistics `eval` scores.
            let evaluator = try EvalCommand.evaluator(checkpoint, config: config, url: url)
            let parameters = evaluator.parameters
            let mean = evaluator.normalization.mean, std = evaluator.normalization.std
            let tensors: [(name: String, shape: [Int], values: [Float], prunable: Bool)]
            let architecture: [String: Any]
            switch evaluator.network {
            case let .ctc(model):
                let settings = model.settings
                if format == .onnx {
                    guard layout == .dense else { throw ValidationError("--layout \(layout.rawValue) is for safetensors; ONNX weights are dense (pruned ones are zeros)") }
                    try writeONNX(model: model, parameters: parameters, mean: mean, std: std, checkpoint: checkpoint)
                    if let reference { try writeReference(audio: reference, model: model, parameters: parameters, mean: mean, std: std) }
                    return
                }
                let prunable = Set(PrunedLayers(layout: model.layout, exclude: []).tensors.map(\.name))
                tensors = model.layout.tensors.map { ($0.name, $0.shape, Array(parameters[$0.range]), prunable.contains($0.name)) }
                architecture = [
                    "kind": "ctc", "features": settings.features, "conv_channels": settings.convChannels, "conv_layers": settings.convLayers,
                    "conv_kernel": 3, "conv_stride": 2, "conv_padding": 1, "lstm_hidden": settings.lstmHidden,
                    "lstm_layers": settings.lstmLayers, "bidirectional": settings.bidirectional, "classes": settings.classes,
                ]
            case let .rnnt(model):
                guard format == .safetensors, reference == nil else {
                    throw ValidationError("\(url.path) is an RNN-T model: it exports as safetensors without --reference for now (ONNX and the reference logits are the CTC model's)")
                }
                tensors = model.exportedTensors(parameters: parameters).map { ($0.name, $0.shape, $0.values, $0.prunable) }
                architecture = model.exportedArchitecture
            }
            var writer = SafeTensorsWriter()
            for tensor in tensors {
                if layout == .bitmask, tensor.shape.count >= 2, tensor.prunable {
                    let parts = SparseBitmask.compress(tensor.values, shape: tensor.shape)
                    let prefix = SparseBitmask.prefix(of: tensor.name)
                    writer.add("\(prefix).shape", int64: tensor.shape.map { Int64($0) }, shape: [tensor.shape.count])
                    writer.add("\(prefix).compressed", floats: parts.compressed, shape: [parts.compressed.count])
                    writer.add("\(prefix).bitmask", bytes: parts.bitmask, shape: [parts.rows, (parts.columns + 7) / 8])
                    writer.add("\(prefix).row_offsets", int64: parts.rowOffsets, shape: [parts.rows])
                } else {
                    writer.add(tensor.name, floats: tensor.values, shape: tensor.shape)
                }
            }
            writer.add("feature_normalization.mean", floats: mean, shape: [mean.count])
            writer.add("feature_normalization.std", floats: std, shape: [std.count])
            writer.metadata = [
                "format": "pt",
                "csptrain.layout": layout.rawValue,
                "csptrain.step": String(checkpoint.step),
                "csptrain.run_id": checkpoint.runID,
                "csptrain.model": String(decoding: try JSONSerialization.data(withJSONObject: architecture, options: [.sortedKeys]), as: UTF8.self),
                "csptrain.vocabulary": "<blank>" + String(Vocabulary.characters.symbols),
            ]
            let bytes = try writer.encoded()
            do { try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic) } catch {
                throw ValidationError("cannot write \(out): \(error.localizedDescription)")
            }
            let zeros = parameters.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }
            StandardError.write("wrote \(out): \(bytes.count) bytes, \(writer.names.count) tensors, step \(checkpoint.step), \(String(format: "%.2f", 100 * Double(zeros) / Double(max(1, parameters.count))))% zeros, layout \(layout.rawValue)\n")
            if let reference, case let .ctc(model) = evaluator.network {
                try writeReference(audio: reference, model: model, parameters: parameters, mean: mean, std: std)
            }
        }

        private func writeONNX(model: AcousticModel, parameters: [Float], mean: [Float], std: [Float], checkpoint: Checkpoint) throws {
            let s = model.settings
            let architecture = ONNXAcousticGraph.Architecture(
                features: s.features, convChannels: s.convChannels, convLayers: s.convLayers, lstmHidden: s.lstmHidden,
                lstmLayers: s.lstmLayers, bidirectional: s.bidirectional, classes: s.classes)
            var ranks: [String: Int] = [:]
            for (key, rank) in checkpoint.state.projectionIntegers where key.hasPrefix("rank/") && rank > 0 {
                ranks[String(key.dropFirst("rank/".count))] = Int(rank)
            }
            let bytes = try ONNXAcousticGraph.export(
                architecture, tensor: { name in model.layout[name].map { Array(parameters[$0.range]) } }, mean: mean, std: std, ranks: ranks,
                metadata: [("csptrain.step", String(checkpoint.step)), ("csptrain.run_id", checkpoint.runID),
                           ("csptrain.vocabulary", "<blank>" + String(Vocabulary.characters.symbols))])
            do { try Data(bytes).write(to: URL(fileURLWithPath: out), options: .atomic) } catch {
                throw ValidationError("cannot write \(out): \(error.localizedDescription)")
            }
            StandardError.write("wrote \(out): \(bytes.count) bytes, ONNX opset 17, step \(checkpoint.step)"
                                + (ranks.isEmpty ? "" : ", \(ranks.count) tensors as low-rank factors") + "\n")
        }

        private func writeReference(audio path: String, model: AcousticModel, parameters: [Float], mean: [Float], std: [Float]) throws {
            let audio: Audio
            do { audio = try AudioFile.read16k(path) } catch { throw ValidationError("--reference \(path): \(error)") }
            let raw = LogMelExtractor().features(audio.samples)
            var normalized = raw
            FeatureNormalization(mean: mean, std: std).apply(&normalized)
            let logits = parameters.withUnsafeBufferPointer { model.logits(parameters: $0, features: [normalized]) }[0]
            let frames = raw.count / model.settings.features
            let info: [String: Any] = ["audio": path, "frames": frames, "features": model.settings.features,
                                       "output_frames": logits.count / model.settings.classes, "classes": model.settings.classes,
                                       "features_file": out + ".reference.features.f32", "logits_file": out + ".reference.logits.f32"]
            try Data(FloatEncoding.denseBytes(raw)).write(to: URL(fileURLWithPath: out + ".reference.features.f32"))
            try Data(FloatEncoding.denseBytes(logits)).write(to: URL(fileURLWithPath: out + ".reference.logits.f32"))
            try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .prettyPrinted]).write(to: URL(fileURLWithPath: out + ".reference.json"))
        }
    }
}

private extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
