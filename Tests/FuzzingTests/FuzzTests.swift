import Foundation
import Fuzzing
import Testing
import TestSupport

/// The network decoders under seeded fuzzing (issue 12): every target from the committed corpus,
/// with field-aware mutations, bounded by inputs and time (under two minutes in all). Nothing may
/// trap, no decoder may report something impossible ("BUG"), and memory stays bounded.
@Suite(.serialized)
struct FuzzTests {
    static var corpusURL: URL { Bundle.module.resourceURL!.appendingPathComponent("Corpus") }
    /// Per target: inputs at most, seconds at most.
    static let inputs = 150_000
    static let seconds = 20.0

    @Test func theCommittedCorpusIsWhatTheEncodersWriteAndHoldsEveryKind() throws {
        let context = FuzzContext()
        for target in FuzzTarget.allCases {
            let committed = try FuzzCorpus.load(target, from: Self.corpusURL)
            let fresh = FuzzCorpus.seeds(target, context: context)
            #expect(committed.map(\.name) == fresh.map { $0.name + ".bin" }.sorted(),
                    "\(target): the corpus is stale; write it again with `swift run csptrain-fuzz corpus Tests/FuzzingTests/Corpus`")
            for (name, bytes) in fresh {
                #expect(committed.first { $0.name == name + ".bin" }?.bytes == bytes, "\(target)/\(name) differs from what the encoders write now")
            }
        }
    }

    @Test func everyValidSeedDecodes() throws {
        let context = FuzzContext()
        for target in FuzzTarget.allCases {
            for (name, bytes) in try FuzzCorpus.load(target, from: Self.corpusURL) {
                let outcome = bytes.withUnsafeBytes { context.run(target, $0) }
                #expect(!outcome.contains("error") && !outcome.contains("refused") && !outcome.hasPrefix("BUG") && !outcome.contains("does not parse"),
                        "\(target)/\(name): \(outcome)")
            }
        }
        // The request seeds reach the machine's answers, not only the decoder.
        let outcomes = try FuzzCorpus.load(.request, from: Self.corpusURL).map { seed in seed.bytes.withUnsafeBytes { context.run(.request, $0) } }
        #expect(outcomes.contains("reply challenge") && outcomes.contains("reply ack accepted") && outcomes.contains("reply finished"), "\(outcomes)")
    }

    @Test(arguments: FuzzTarget.allCases)
    func seededFuzzingFindsNothingAndKeepsMemoryBounded(target: FuzzTarget) async throws {
        let corpus = try FuzzCorpus.load(target, from: Self.corpusURL).map(\.bytes)
        let report = try await offTheTaskPool {
            FuzzHarness.run(target, corpus: corpus, iterations: Self.inputs, seconds: Self.seconds, seed: 20261129)
        }
        print(report.summary)
        let bugs = report.outcomes.counts.keys.filter { $0.hasPrefix("BUG") }
        #expect(bugs.isEmpty, "\(target): \(bugs)")
        #expect(report.iterations >= 2000, "\(target): only \(report.iterations) inputs in \(report.seconds) s")
        // Mutations reach refusals and error paths, not only the valid forms.
        let failures = report.outcomes.counts.keys.filter { $0.contains("error") || $0.contains("refus") || $0.contains("rice:") || $0.contains("does not parse") }
        #expect(failures.count >= 3, "\(target): only \(failures) reached")
        #expect(report.peakGrowthKB < 256 << 10, "\(target): memory grew by \(report.peakGrowthKB) kB")
    }
}
