import Foundation
import Testing
import Tensors
import Wire
@testable import Checkpoints

struct CheckpointFormatTests {
    func sample() -> Checkpoint {
        let dense: [Float] = (0 ..< 100).map { Float($0) * 0.5 - 7 }
        let sparse: [Float] = (0 ..< 1000).map { $0 % 10 == 0 ? Float($0) : 0 }
        return Checkpoint(step: 42, runID: "run-x", configYAML: "seed: 3\n", createdUnix: 1.5e9, lastLoss: 0.25, records: [
            .init(name: "w", shape: [10, 10], role: "param", values: dense),
            .init(name: "s", shape: [1000], role: "param", values: sparse),
            .init(name: "all", shape: [1100], role: "optimizer/m", values: [Float](repeating: 0.125, count: 1100)),
        ])
    }

    @Test func roundTrip() throws {
        let c = sample()
        let decoded = try Checkpoint(decoding: c.encoded(), source: "mem")
        #expect(decoded == c)
    }

    @Test func sparseRecordsAreStoredCompactly() {
        var dense = sample()
        dense.records = [dense.records[1]]
        dense.records[0].payload = .floats((0 ..< 1000).map { Float($0) + 1 })
        var sparse = sample()
        sparse.records = [sparse.records[1]]  // 90% zeros
        let ratio = Double(dense.encoded().count) / Double(sparse.encoded().count)
        #expect(ratio > 3, "dense/sparse size ratio \(ratio)")
    }

    /// Every bit survives: −0.0, NaN payloads, subnormals, in every encoding; bytes records,
    /// the settings text, its fingerprint and the training state too.
    @Test func everyBitSurvivesInEveryEncoding() throws {
        let odd: [Float] = [-0.0, .nan, Float(bitPattern: 0x7FC0_1234), .leastNonzeroMagnitude, -.infinity, 1]
        func tensor(density: Double) -> [Float] {
            (0 ..< 4000).map { i in
                guard Double(i % 1000) / 1000 < density else { return 0 }
                return i % 6 == 5 ? Float(i) : odd[i % odd.count]
            }
        }
        var state = Csptrain_V1_TrainingState()
        state.epoch = 3
        state.optimizerSteps = 77
        state.projectionIntegers = ["active": 1]
        var c = Checkpoint(step: 9, runID: "r", configYAML: "seed: 1\n", lastLoss: 0.5, mathsSettings: "seed = 1\nmodel.kind = mlp", state: state, records: [
            .init(name: "dense", shape: [4000], role: "param", values: tensor(density: 1)),
            .init(name: "half", shape: [4000], role: "param", values: tensor(density: 0.5)),
            .init(name: "sparse", shape: [4000], role: "param", values: tensor(density: 0.01)),
            .init(name: "ledger", role: "ledger", bytes: [1, 2, 3, 0, 255]),
        ])
        c.createdUnix = 12
        let bytes = c.encoded()
        let decoded = try Checkpoint(decoding: bytes, source: "mem")
        #expect(decoded == c)
        #expect(decoded.fingerprint == c.fingerprint && decoded.fingerprint != [UInt8](repeating: 0, count: 32))
        let (header, layout, _) = try Checkpoint.layout(of: bytes, source: "mem")
        #expect(header.fingerprint == c.fingerprint && header.formatVersion == 2)
        #expect(layout.map(\.encoding) == [.dense, .bitmask, .rice, .bytes])
    }

    /// A 90%-sparse model is several times smaller than dense, and Rice coding beats the bitmask
    /// at 99%.
    @Test func sizesFollowDensity() {
        func size(_ density: Double) -> Int {
            var rng = SeededRandom(11, UInt64(density * 1000))
            let v = (0 ..< 100_000).map { _ in Double(rng.nextUnitFloat()) < density ? rng.nextGaussian() : 0 }
            return Checkpoint(step: 1, runID: "", configYAML: "", records: [.init(name: "w", shape: [v.count], role: "param", values: v)]).encoded().count
        }
        let dense = size(1), ninety = size(0.1), ninetyNine = size(0.01)
        #expect(Double(dense) / Double(ninety) > 7, "\(dense) vs \(ninety)")
        #expect(Double(ninetyNine) < 0.01 * 4 * 100_000 + 100_000.0 / 8 * 0.7, "rice should beat the bitmask at 1% density: \(ninetyNine)")
    }

    /// Version 1 files (the foundation's format) still read.
    @Test func versionOneFilesStillRead() throws {
        var meta = Csptrain_V1_CheckpointMeta()
        meta.step = 5
        meta.runID = "old"
        meta.records = [Csptrain_V1_RecordInfo.with { $0.name = "w"; $0.shape = [3]; $0.role = "param" }]
        let metaBytes: [UInt8] = try meta.serializedBytes()
        var out = ByteWriter()
        out.append(Array("CSPTCKPT".utf8))
        out.append(UInt32(1))
        out.append(UInt32(0))
        out.append(UInt64(metaBytes.count))
        out.append(metaBytes)
        out.append(CRC32C.checksum(metaBytes))
        let start = out.bytes.count
        out.append(UInt32(1))
        out.append(UInt64(3))
        out.append(UInt64(0))
        out.append(UInt64(12))
        out.append(FloatEncoding.denseBytes([Float(1), 2, 3]))
        out.append(CRC32C.checksum(Array(out.bytes[start...])))
        out.append(Array("CSPTDONE".utf8))
        let c = try Checkpoint(decoding: out.bytes, source: "v1")
        #expect(c.formatVersion == 1 && c.step == 5 && c.records[0].values == [1, 2, 3])
    }

    @Test func everyFlippedByteIsDetected() throws {
        let bytes = sample().encoded()
        // Flip one bit at positions spread over the whole file: header, metadata, each record, trailer.
        for position in stride(from: 0, to: bytes.count, by: 97) {
            var damaged = bytes
            damaged[position] ^= 0x10
            #expect(throws: CheckpointError.self, "flip at \(position) went unnoticed") {
                try Checkpoint(decoding: damaged, source: "ckpt")
            }
        }
    }

    @Test func errorNamesFileAndRecord() throws {
        let c = sample()
        var bytes = c.encoded()
        bytes[bytes.count - 30] ^= 0x01  // inside the last record's payload
        let error = #expect(throws: CheckpointError.self) { try Checkpoint(decoding: bytes, source: "/runs/a/step-42.ckpt") }
        let text = error?.description ?? ""
        #expect(text.contains("/runs/a/step-42.ckpt") && text.contains("optimizer/m/all") && text.contains("checksum"))
    }

    @Test func truncationIsDetected() {
        let bytes = sample().encoded()
        for cut in [4, 30, bytes.count / 2, bytes.count - 3] {
            #expect(throws: CheckpointError.self) { try Checkpoint(decoding: Array(bytes[..<cut]), source: "t") }
        }
    }
}

struct CheckpointStoreTests {
    func folder() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-ckpt-\(UInt64.random(in: 0 ... .max))")
    }

    @Test func writeMovesLatestAndKeepsTheLastK() throws {
        let dir = folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(runDirectory: dir, keep: 2)
        for step in [10, 20, 30] {
            try store.write(Checkpoint(step: step, runID: "r", configYAML: "", records: [.init(name: "w", shape: [1], role: "param", values: [Float(step)])]))
        }
        #expect(store.steps() == [20, 30])
        let latest = try #require(store.latestPath())
        #expect(latest.lastPathComponent == "step-30.ckpt")
        #expect(try CheckpointStore.load(latest).records[0].values == [30])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: store.directory.path).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty)
    }

    /// A flipped byte or a truncated file at `latest` is reported (file and record named) and the
    /// previous intact checkpoint is used.
    @Test(arguments: ["flip", "truncate", "missing-end"])
    func damagedLatestFallsBackToThePreviousOne(damage: String) throws {
        let dir = folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(runDirectory: dir, keep: 3)
        for step in [10, 20, 30] {
            try store.write(Checkpoint(step: step, runID: "r", configYAML: "", records: [
                .init(name: "w", shape: [100], role: "param", values: (0 ..< 100).map { Float($0 + step) }),
            ]))
        }
        let latest = try #require(store.latestPath())
        var bytes = [UInt8](try Data(contentsOf: latest))
        switch damage {
        case "flip": bytes[bytes.count - 100] ^= 0x04
        case "truncate": bytes = Array(bytes[..<(bytes.count / 2)])
        default: bytes = Array(bytes.dropLast(8))
        }
        try Data(bytes).write(to: latest)
        var reports: [String] = []
        let found = try #require(store.newestIntact { reports.append("\($0)") })
        #expect(found.checkpoint.step == 20 && found.url.lastPathComponent == "step-20.ckpt")
        #expect(reports.count == 1 && reports[0].contains("step-30.ckpt"))
        if damage == "flip" { #expect(reports[0].contains("param/w") && reports[0].contains("checksum")) }
    }

    @Test func unfinishedWritesAreRemoved() throws {
        let dir = folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(runDirectory: dir)
        try store.write(Checkpoint(step: 1, runID: "r", configYAML: "", records: []))
        try Data([1, 2, 3]).write(to: store.directory.appendingPathComponent("step-2.ckpt.tmp"))
        #expect(store.removeUnfinishedWrites() == ["step-2.ckpt.tmp"])
        #expect(store.steps() == [1])
    }

    /// The writer thread writes in order; `latest` ends at the last submitted checkpoint, and a
    /// checkpoint waiting behind a running write is replaced by a newer one.
    @Test func backgroundWriterEndsAtTheNewest() async throws {
        let dir = folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(runDirectory: dir, keep: 50)
        let writer = CheckpointWriter(store: store)
        let outcomes = Outcomes()
        for step in 1 ... 20 {
            writer.submit(Checkpoint(step: step, runID: "r", configYAML: "", records: [
                .init(name: "w", shape: [50_000], role: "param", values: [Float](repeating: Float(step), count: 50_000)),
            ]), final: step == 20) { report in
                if case .written = report.outcome { outcomes.add(report.step, true) } else { outcomes.add(report.step, false) }
            }
        }
        await writer.flush()
        let all = outcomes.all
        #expect(all.count == 20)
        #expect(all.last(where: { $0.1 })?.0 == 20)
        #expect(try CheckpointStore.load(#require(store.latestPath())).step == 20)
        let written = all.filter(\.1).map(\.0)
        #expect(written == written.sorted(), "written out of order: \(written)")
    }

    /// A run's final checkpoint supersedes nothing: the periodic one waiting behind a running
    /// write is written too, then the final one.
    @Test func aFinalCheckpointSupersedesNothing() async throws {
        let dir = folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = CheckpointStore(runDirectory: dir, keep: 50)
        let writer = CheckpointWriter(store: store)
        let outcomes = Outcomes()
        for step in 1 ... 3 {
            writer.submit(Checkpoint(step: step, runID: "r", configYAML: "", records: [
                .init(name: "w", shape: [400_000], role: "param", values: [Float](repeating: Float(step), count: 400_000)),
            ]), final: step == 3) { report in
                if case .written = report.outcome { outcomes.add(report.step, true) } else { outcomes.add(report.step, false) }
            }
        }
        await writer.flush()
        // Step 1 is written, or superseded by step 2 if the writer had not started yet; step 2
        // is not replaced by the final step 3: both are written.
        let written = outcomes.all.filter(\.1).map(\.0)
        #expect(Array(written.suffix(2)) == [2, 3], "\(outcomes.all)")
        #expect(Array(store.steps().suffix(2)) == [2, 3])
    }
}

final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(Int, Bool)] = []
    func add(_ step: Int, _ ok: Bool) { lock.lock(); items.append((step, ok)); lock.unlock() }
    var all: [(Int, Bool)] { lock.lock(); defer { lock.unlock() }; return items }
}
