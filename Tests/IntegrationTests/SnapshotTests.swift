import Checkpoints
import Foundation
import Testing

/// `pruning.snapshots` through `launch`: one run keeps a checkpoint at every size on its way.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct SnapshotTests {
    /// Gradual magnitude to 90% with snapshots at 50 and 80%, held 10 steps each; checkpoints
    /// rotate with keep = 1, so only the snapshots' own names can keep them.
    @Test func oneRunKeepsACheckpointAtEverySize() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "2", "--steps", "80", "--run-dir", dir.path, "--json",
                               "--set", "pruning.method=gradual-magnitude", "--set", "pruning.schedule.target=0.9",
                               "--set", "pruning.schedule.end_step=40", "--set", "pruning.schedule.interval=5",
                               "--set", "pruning.snapshots=[0.5, 0.8]", "--set", "pruning.snapshot_steps=10",
                               "--set", "checkpoint.every_steps=7", "--set", "checkpoint.keep=1"])
        let (status, stdout, stderr) = await child.wait(seconds: 120)
        #expect(status == 0, "launch failed: \(stderr)")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && abs(summary.sparsity - 0.9) < 0.005, "\(stdout)")
        let store = CheckpointStore(runDirectory: dir)
        for size in [0.5, 0.8] {
            let url = store.snapshotPath(sparsity: size)
            let checkpoint = try CheckpointStore.load(url)
            let weights = checkpoint.records.filter { $0.role == "param" && $0.name.hasPrefix("w") }.flatMap(\.values)
            let zeros = Double(weights.filter { $0 == 0 }.count) / Double(weights.count)
            #expect(abs(zeros - size) < 0.01, "\(url.lastPathComponent): \(zeros) of the weights are zero")
            #expect(stderr.contains("pruning snapshot kept: \(Int(size * 100))% sparse after step \(checkpoint.step)"))
        }
        // The 80% snapshot comes later than the 50% one, both before the ramp's end.
        let steps = try [0.5, 0.8].map { try CheckpointStore.load(store.snapshotPath(sparsity: $0)).step }
        #expect(steps[0] < steps[1] && steps[1] < 80, "\(steps)")
    }

    @Test func snapshotsThatDoNotFitTheRunAreRefusedNamingTheKey() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let child = try Child(["launch", "--workers", "1", "--steps", "50", "--run-dir", dir.path,
                               "--set", "pruning.method=gradual-magnitude", "--set", "pruning.schedule.end_step=40",
                               "--set", "pruning.snapshots=[0.5, 0.7]", "--set", "pruning.snapshot_steps=20"])
        let (status, _, stderr) = await child.wait(seconds: 60)
        #expect(status != 0)
        #expect(stderr.contains("pruning.snapshots") && stderr.contains("steps = 50"), "\(stderr)")
    }
}
