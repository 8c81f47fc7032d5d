import Foundation
import Tensors

/// The seeded fuzz loop: each corpus entry once as it is, then mutated entries (field-aware,
/// with crossovers between entries) until `iterations` inputs or `seconds` have gone by. The same
/// seed gives the same inputs: a crash names its seed and iteration, and `csptrain-fuzz run`
/// replays it.
public enum FuzzHarness {
    public struct Report: Sendable {
        public var target: FuzzTarget
        public var seed: UInt64
        public var iterations = 0
        public var seconds = 0.0
        public var outcomes = FuzzOutcomes()
        /// Resident memory growth over the run (kB, from the kernel's high-water mark).
        public var peakGrowthKB = 0

        public var summary: String {
            var lines = ["\(target.rawValue): \(iterations) inputs in \(String(format: "%.1f", seconds)) s (seed \(seed)), peak memory +\(peakGrowthKB) kB"]
            for (outcome, n) in outcomes.counts.sorted(by: { $0.key < $1.key }) { lines.append("  \(n)\t\(outcome)") }
            return lines.joined(separator: "\n")
        }
    }

    public static func run(_ target: FuzzTarget, corpus: [[UInt8]], iterations: Int, seconds: Double, seed: UInt64,
                           context: FuzzContext = FuzzContext(), onInput: ((Int, [UInt8]) -> Void)? = nil) -> Report {
        var report = Report(target: target, seed: seed)
        var mutator = ProtoMutator(seed: seed)
        var rng = SeededRandom(key: seed ^ 0x5EED)
        let startRSS = peakResidentKB()
        let clock = ContinuousClock(), start = clock.now
        let limit: Duration? = seconds.isFinite ? .milliseconds(Int(seconds * 1000)) : nil
        var pool = corpus
        for i in 0 ..< iterations {
            if i % 64 == 0, let limit, clock.now - start > limit { break }
            let input: [UInt8]
            if i < corpus.count {
                input = corpus[i]
            } else {
                let base = pool[Int(rng.next() % UInt64(pool.count))]
                let donor = pool[Int(rng.next() % UInt64(pool.count))]
                input = mutator.mutate(base, donor: donor, maxBytes: 64 << 10)
            }
            onInput?(i, input)
            // One input in four comes on a connection other than the member's.
            let outcome = input.withUnsafeBytes { context.run(target, $0, foreignConnection: i >= corpus.count && i % 4 == 3) }
            // An input that reached an outcome not seen before is mutated further (a small
            // coverage signal: outcomes stand for code paths).
            if report.outcomes.counts[outcome] == nil, i >= corpus.count, pool.count < 4096 { pool.append(input) }
            report.outcomes.record(outcome)
            report.iterations += 1
        }
        report.seconds = Double((clock.now - start).components.attoseconds) / 1e18 + Double((clock.now - start).components.seconds)
        report.peakGrowthKB = max(0, peakResidentKB() - startRSS)
        return report
    }

    /// The process's peak resident set (VmHWM), in kB; 0 where /proc is not there.
    public static func peakResidentKB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }
}
