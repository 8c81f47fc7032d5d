import Foundation
import Testing
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
        dense.records[0].values = (0 ..< 1000).map { Float($0) + 1 }
        var sparse = sample()
        sparse.records = [sparse.records[1]]  // 90% zeros
        let ratio = Double(dense.encoded().count) / Double(sparse.encoded().count)
        #expect(ratio > 3, "dense/sparse size ratio \(ratio)")
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
}
