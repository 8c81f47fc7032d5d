import Foundation

/// What `/api/status` answers and the live page draws: the run, its workers, its curves, its
/// sparsity and the last support update. Plain values, encoded as JSON (snake_case keys).
public struct RunStatus: Codable, Sendable, Equatable {
    public struct Run: Codable, Sendable, Equatable {
        public var id: String
        /// waiting_for_workers, training, evaluating, finishing, finished.
        public var phase: String
        public var status: String?
        public var step: Int
        public var totalSteps: Int
        public var startStep: Int
        public var method: String
        public var elapsedSeconds: Double
        /// Seconds to the last step at the recent pace (nil until steps were timed).
        public var etaSeconds: Double?
        public var examplesPerSecond: Double?
        public var loss: Double?
        public var learningRate: Double?
        public var validWer: Double?
        public var validWerChannel: Double?
        /// Validation by training voices (`data.valid_seen`; the two above are held-out voices).
        public var validWerSeen: Double?
        /// Goal lines: the pruning target (when pruning) and the WER goal (`observe.goal_wer`).
        public var goalSparsity: Double?
        public var goalWer: Double?
    }

    public struct Worker: Codable, Sendable, Equatable {
        public var name: String
        public var host: String
        /// joined, or why it left (left, disconnected, missed_deadline, silent).
        public var state: String
        public var microBatches: Int
        /// The last micro-batch's seconds from task to its last chunk.
        public var stepSeconds: Double?
        public var lastHeardSecondsAgo: Double
        public var refused: [String: Int]
    }

    /// One applied step (metrics.jsonl's numbers the page needs).
    public struct Point: Codable, Sendable, Equatable {
        public var step: Int
        public var wallSeconds: Double
        public var loss: Double?
        public var learningRate: Double?
        public var stepSeconds: Double
        public var examplesPerSecond: Double
        public var sparsity: Double
        public var validWer: Double?
        public var validWerChannel: Double?
        public var validWerSeen: Double?
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var name: String
        public var sparsity: Double
        /// From the last support update (pruning runs).
        public var overlapWithTopK: Double?
        public var recoveryError: Double?
    }

    public var run: Run
    public var workers: [Worker]
    public var points: [Point]
    public var layers: [Layer]
    /// The step of the last support update (nil: none yet).
    public var supportUpdateStep: Int?
}

extension RunStatus {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }

    public func json() -> [UInt8] { (try? Array(Self.encoder().encode(self))) ?? Array("{}".utf8) }
}
