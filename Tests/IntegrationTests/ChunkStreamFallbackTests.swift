import Foundation
import Synchronization
import Testing
import Transport

/// A worker that reaches the coordinator only through a relay that forwards its main port, as a
/// NAT or a Kubernetes Service without the chunk stream's port would: it cannot open the chunk
/// stream, says so, and trains with its chunks as requests and its models in replies.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct ChunkStreamFallbackTests {
    /// Forwards every connection made to `url` (on a loopback address of its own) to `target`,
    /// both ways, a thread per direction.
    final class Relay: Sendable {
        let listener: StreamListener
        private let streams = Mutex<[ByteStream]>([])
        var url: String { listener.url }

        init(listen: String, to target: String) throws {
            listener = try StreamListener(listen)
            Thread.detachNewThread { [self] in
                while let inbound = try? listener.accept() {
                    guard let outbound = try? StreamDialer.dial(target, timeout: .seconds(5)) else {
                        inbound.close()
                        continue
                    }
                    streams.withLock { $0 += [inbound, outbound] }
                    for (from, to) in [(inbound, outbound), (outbound, inbound)] {
                        Thread.detachNewThread { Self.pump(from, to) }
                    }
                }
            }
        }

        private static func pump(_ from: ByteStream, _ to: ByteStream) {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
            defer { buffer.deallocate() }
            while let count = try? from.read(into: buffer),
                  (try? to.write([UnsafeRawBufferPointer(rebasing: buffer[..<count])])) != nil {}
            from.close()
            to.close()
        }

        func close() {
            listener.close()
            streams.withLock { $0 }.forEach { $0.close() }
        }
    }

    @Test func aWorkerThatCannotReachTheChunkStreamTrainsOverRequests() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let coordinator = try Child(["coordinator", "--listen", "tcp://127.0.0.2:0", "--run-dir", dir.path, "--json", "--steps", "30"])
        let url = try await waitForFile(dir.appendingPathComponent("endpoint"))
        let port = try #require(url.split(separator: ":").last.map(String.init))
        // The worker dials 127.0.0.3, where only the main port is forwarded: the chunk stream's
        // port, on the host it dialed, has nobody listening.
        let relay = try Relay(listen: "tcp://127.0.0.3:0", to: "tcp://127.0.0.2:\(port)")
        defer { relay.close() }
        let worker = try Child(["worker", "--connect", relay.url, "--token-file", dir.appendingPathComponent("token").path,
                                "--name", "behind-a-relay", "--patience", "30"])
        let (status, stdout, stderr) = await coordinator.wait(seconds: 90)
        #expect(status == 0, "coordinator: \(stderr.suffix(2000))")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 30 && summary.workersFailed == 0, "\(stdout)")
        #expect(summary.streamChunks == 0 && summary.streamWeights == 0, "\(stdout)")
        let (workerStatus, _, workerLog) = await worker.wait(seconds: 30)
        #expect(workerStatus == 0, "worker: \(workerLog.suffix(2000))")
        #expect(workerLog.contains("could not open the coordinator's chunk stream at tcp://127.0.0.3:"), "\(workerLog.suffix(2000))")
    }

    /// The same worker with its chunk stream forwarded too, until the relay cuts the stream's
    /// connection mid-run: the worker says the stream failed and sends the rest of the run's
    /// chunks as requests; nobody is dropped and the run completes.
    @Test func aChunkStreamCutMidRunLeavesTheWorkerTrainingOverRequests() async throws {
        let dir = temporaryRunDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let free = try StreamListener("tcp://127.0.0.2:0")
        let streamPort = try #require(free.url.split(separator: ":").last.map(String.init))
        free.close()
        let coordinator = try Child(["coordinator", "--listen", "tcp://127.0.0.2:0", "--run-dir", dir.path, "--json", "--steps", "300",
                                     "--set", "transport.chunk_stream_port=\(streamPort)"])
        let url = try await waitForFile(dir.appendingPathComponent("endpoint"))
        let port = try #require(url.split(separator: ":").last.map(String.init))
        let relay = try Relay(listen: "tcp://127.0.0.3:0", to: "tcp://127.0.0.2:\(port)")
        defer { relay.close() }
        let streamRelay = try Relay(listen: "tcp://127.0.0.3:\(streamPort)", to: "tcp://127.0.0.2:\(streamPort)")
        let worker = try Child(["worker", "--connect", relay.url, "--token-file", dir.appendingPathComponent("token").path,
                                "--name", "behind-a-relay", "--patience", "30"])
        try await waitForSteps(dir, 20)
        streamRelay.close()
        let (status, stdout, stderr) = await coordinator.wait(seconds: 120)
        #expect(status == 0, "coordinator: \(stderr.suffix(2000))")
        let summary = try Summary.parse(stdout)
        #expect(summary.status == "completed" && summary.steps == 300 && summary.workersFailed == 0, "\(stdout)")
        #expect((summary.streamChunks ?? 0) > 0, "no chunk came on the stream before the cut: \(stdout)")
        let (workerStatus, _, workerLog) = await worker.wait(seconds: 30)
        #expect(workerStatus == 0, "worker: \(workerLog.suffix(2000))")
        #expect(workerLog.contains("sending gradient chunks as requests from now on"), "\(workerLog.suffix(2000))")
    }
}
