import Foundation
import Testing
@testable import Runtime

/// metrics.jsonl and summary.json hold numbers or null, never "inf" or "nan"; a null that
/// stands for a non-finite value is named in `non_finite`.
struct JSONRecordTests {
    func object(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func nonFiniteMetricsAreNullAndNamed() throws {
        var m = FullDiskTests.metrics(step: 3)
        m.gradNorm = .infinity
        m.loss = .nan
        m.validWer = -.infinity
        let bytes = try JSONRecord.encode(m)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(!text.contains("inf") && !text.contains("nan") && !text.contains("__"))
        #expect(text.contains("\"grad_norm\":null,\"learning_rate\":0.01,\"loss\":null,\"non_finite\":[\"grad_norm\",\"loss\",\"valid_wer\"],\"projection_seconds\":0"))
        let o = try object(bytes)
        #expect(o["grad_norm"] is NSNull && o["loss"] is NSNull && o["valid_wer"] is NSNull)
        #expect(o["non_finite"] as? [String] == ["grad_norm", "loss", "valid_wer"])
        #expect(o["step"] as? Int == 3 && o["sparsity"] as? Double == 0.5)
    }

    @Test func finiteRecordsAreWhatTheEncoderWrites() throws {
        let m = FullDiskTests.metrics(step: 3)
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        #expect(try JSONRecord.encode(m) == [UInt8](try encoder.encode(m)))
    }

    /// As in pruning.jsonl, whose support updates hold a list of layers.
    @Test func nestedValuesAreNamedByPath() throws {
        struct Layer: Encodable { var name: String; var recoveryError: Double? }
        struct Update: Encodable { var step = 4; var layers: [Layer]; var values: [Double] }
        let update = Update(layers: [Layer(name: "a", recoveryError: 0.1), Layer(name: "b", recoveryError: .nan)], values: [1, .infinity])
        let o = try object(try JSONRecord.encode(update))
        #expect(o["non_finite"] as? [String] == ["layers[1].recovery_error", "values[1]"])
        #expect(((o["layers"] as? [[String: Any]])?[1])?["recovery_error"] is NSNull)
        #expect((o["values"] as? [Any])?[1] is NSNull && o["step"] as? Int == 4)
    }

    @Test func theListGoesLastWhenEveryKeySortsBeforeIt() throws {
        struct Small: Encodable { var a = Double.nan; var b = 2.0 }
        #expect(String(decoding: try JSONRecord.encode(Small()), as: UTF8.self) == #"{"a":null,"b":2,"non_finite":["a"]}"#)
        #expect(String(decoding: try JSONRecord.encode(Small(), pretty: true), as: UTF8.self) == "{\n  \"a\" : null,\n  \"b\" : 2,\n  \"non_finite\" : [\"a\"]\n}")
    }

    @Test func theSummaryIsValidJSONWithNonFiniteLosses() throws {
        let summary = RunSummary(status: .failed, runId: "r", steps: 3, startStep: 0, workersSeen: 1, workersFailed: 0,
                                 firstLoss: 2.5, finalLoss: .infinity, sparsity: 0, sparsityOverall: 0, checkpoint: nil,
                                 wallSeconds: 1, examplesPerSecond: .nan, duplicateChunks: 0, staleChunks: 0,
                                 reassignedMicroBatches: 0, validWer: nil, validWerChannel: nil, message: "m")
        for pretty in [true, false] {
            let o = try object(Array(summary.json(pretty: pretty).utf8))
            #expect(o["final_loss"] is NSNull && o["examples_per_second"] is NSNull && o["first_loss"] as? Double == 2.5)
            #expect(o["non_finite"] as? [String] == ["examples_per_second", "final_loss"])
        }
    }

    /// The end of a run says which validation is which: held-out voices (valid, valid_channel)
    /// and training voices (valid_seen), each only when measured.
    @Test func theValidationLineNamesBothKinds() throws {
        var summary = RunSummary(status: .completed, runId: "r", steps: 3, startStep: 0, workersSeen: 1, workersFailed: 0,
                                 firstLoss: 2.5, finalLoss: 1, sparsity: 0, sparsityOverall: 0, checkpoint: nil,
                                 wallSeconds: 1, examplesPerSecond: 1, duplicateChunks: 0, staleChunks: 0,
                                 reassignedMicroBatches: 0, validWer: nil, validWerChannel: nil, message: nil)
        #expect(summary.validationLine == nil)
        summary.validWer = 0.123
        summary.validWerChannel = 0.151
        #expect(summary.validationLine == "validation WER: 12.30% (channel-degraded 15.10%)")
        summary.validWerSeen = 0.042
        #expect(summary.validationLine == "validation WER: 12.30% held-out voices (channel-degraded 15.10%), 4.20% training voices")
        #expect(try object(Array(summary.json().utf8))["valid_wer_seen"] as? Double == 0.042)
    }
}
