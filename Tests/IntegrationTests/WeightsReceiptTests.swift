import Foundation
import Synchronization
import Testing
import Transport
import Wire

/// A real `csptrain coordinator` copies a model into at most two replies at once and counts each
/// copy until its connection shows the weights arrived (issue 11's memory bound). Raw members
/// that send no receipts of their own make the waiting visible.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct WeightsReceiptTests {
    @Test func aThirdModelWaitsForAReceiptAndAClosedConnectionFreesAPlace() async throws {
        // 200,000 parameters: 800 kB of weights in every first task, above the 256 KiB under
        // which replies are not counted. The request timeout (the longest a copy counts
        // without a sign) is far beyond what the test waits.
        let run = try await CoordinatorTests().startCoordinator([
            "--steps", "2", "--set", "model.kind=loadtest", "--set", "model.parameters=200000", "--set", "data.examples=64",
            "--set", "coordinator.global_batch=8", "--set", "coordinator.micro_batches=4", "--set", "optimizer.kind=sgd",
            "--set", "transport.request_timeout_seconds=120",
        ])
        defer { try? FileManager.default.removeItem(at: run.dir) }
        let flood = FloodTests()
        var members: [FloodTests.Member] = []
        for _ in 0 ..< 4 { members.append(try await flood.joinRaw(run)) }

        // All four ask for their first task at once: each would carry the whole model.
        let replies = Answers()
        let asks = members.enumerated().map { i, m in
            let client = m.client
            return Task {
                let reply = try await client.send { $0.work = .with { $0.weightsVersion = 0 } }
                replies.state.withLock { $0[i] = reply }
            }
        }
        func answered() -> [Int: Csptrain_V1_Reply] { replies.state.withLock { $0 } }
        func waitFor(_ count: Int, seconds: Double) async throws {
            let deadline = Date().addingTimeInterval(seconds)
            while answered().count < count {
                guard Date() < deadline else { throw TestFailure("\(answered().count) of \(count) members answered within \(seconds) s: \(run.coordinator.stderr)") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await waitFor(2, seconds: 30)
        // Two copies exist, and nothing shows they arrived: the others wait their turn.
        try await Task.sleep(for: .seconds(2))
        let first = answered()
        #expect(first.count == 2, "\(first.keys.sorted())")
        for reply in first.values {
            #expect(reply.task.hasWeights && !reply.task.weights.tensors.isEmpty, "\(reply)")
        }

        // One member's receipt lets one more copy go.
        let keys = first.keys.sorted()
        let receipt = try await members[keys[0]].client.send { $0.receipt = .with { $0.weightsVersion = first[keys[0]]!.task.weightsVersion } }
        #expect(receipt.ack.status == .accepted, "\(receipt)")
        try await waitFor(3, seconds: 20)
        try await Task.sleep(for: .seconds(1))
        #expect(answered().count == 3)

        // The other member's connection closes without a receipt: its copy is freed with it.
        await members[keys[1]].client.close()
        try await waitFor(4, seconds: 20)
        for reply in answered().values {
            #expect(reply.task.hasWeights, "every first task carries the model")
        }
        for task in asks { try await task.value }

        // A real worker (which sends receipts) finishes the run once the raw members leave.
        let worker = try CoordinatorTests().worker(run, name: "real")
        for (i, m) in members.enumerated() where i != keys[1] { await m.client.close() }
        let (status, stdout, stderr) = await run.coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr)")
        #expect(try Summary.parse(stdout).status == "completed")
        #expect(await worker.wait(seconds: 30).status == 0)
    }
}

/// Replies as they arrive, from the tasks that wait for them.
final class Answers: Sendable {
    let state = Mutex<[Int: Csptrain_V1_Reply]>([:])
}
