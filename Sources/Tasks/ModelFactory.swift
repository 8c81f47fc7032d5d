import Models
import Speech

/// Builds what a worker trains (a model and its data) from the run configuration.
public enum ModelFactory {
    public static func make(model: ModelSettings, data: DataSettings, augmentation: AugmentationSettings = AugmentationSettings(),
                            seed: UInt64) throws -> any TrainableModel {
        switch (model.kind, data.kind) {
        case (.mlp, .synthetic):
            let task = SyntheticClassification(inputDim: model.inputDim, classes: model.classes,
                                               examples: data.examples, noise: Float(data.noise), seed: seed)
            return MLPClassifier(task: task, hiddenDim: model.hiddenDim)
        case (.loadtest, _):
            return LoadTestModel(parameters: model.parameters, examples: data.examples)
        case (.ctc, .speech), (.rnnt, .speech):
            return try SpeechTask(model: model, data: data, augmentation: augmentation, seed: seed)
        case (.mlp, .speech), (.ctc, .synthetic), (.rnnt, .synthetic):
            throw TaskError("model.kind \(model.kind.rawValue) cannot train on data.kind \(data.kind.rawValue): use mlp with synthetic, or ctc or rnnt with speech")
        }
    }
}

public struct TaskError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
