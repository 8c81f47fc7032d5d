import Coordination
import Foundation
import Testing
@testable import Observe

/// The observer fed a synthetic run through the shell's entry point; its Prometheus text read
/// back line by line.
struct RunObserverTests {
    let training = RunStateMachine.Phase.training(step: 0)

    func member(_ i: Int) -> Membership.Member {
        Membership.Member(id: UInt32(i), name: "worker-\(i)", session: SessionID(Data([UInt8(i)])), pipe: UInt32(i), lastSeen: 0)
    }

    func observe(_ o: RunObserver, _ d: [RunStateMachine.Directive], members: Set<String>, completes: Bool = false, now: Double) {
        o.observe(d, phase: training, step: 3, workers: members.count, isMember: { members.contains($0) }, completes: { _ in completes }, now: now)
    }

    /// `name{labels} value` lines of the exposition, by series with labels.
    func values(_ o: RunObserver, now: Double) -> [String: Double] {
        let text = String(decoding: o.prometheusText(now: now), as: UTF8.self)
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            out[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
        return out
    }

    @Test func countsPerWorkerAndRemovesDepartedSeries() {
        let o = RunObserver(.init(runID: "r", totalSteps: 10, startStep: 0, method: "none", layers: ["fc1.weight"],
                                  departedSeriesSeconds: 30), now: 0)
        var v = values(o, now: 0)
        // Every reason of every labelled counter exists at 0 before anything happened.
        for reason in ["left", "disconnected", "missed_deadline", "silent"] {
            #expect(v["csptrain_worker_removals_total{reason=\"\(reason)\"}"] == 0)
        }
        #expect(v["csptrain_layer_sparsity_ratio{layer=\"fc1.weight\"}"] == 0)
        #expect(v["csptrain_loss"]?.isNaN == true, "not measured yet is NaN, not 0")

        observe(o, [.memberJoined(member(1), peer: "tcp://10.1.2.3:5000")], members: ["worker-1"], now: 1)
        v = values(o, now: 1)
        for reason in ["duplicate", "stale", "not_assigned", "malformed", "overloaded", "other"] {
            #expect(v["csptrain_worker_chunks_refused_total{worker=\"worker-1\",reason=\"\(reason)\"}"] == 0, "\(reason)")
        }
        #expect(v["csptrain_worker_joins_total"] == 1)

        let task = TaskAssignment(kind: .train(epoch: 0), index: 2, examples: [1, 2], weightsVersion: 1, weights: .none, deadlineSeconds: 60)
        o.request(10, worker: "worker-1", chunk: false, bytes: 100, now: 2)
        observe(o, [.reply(10, .task(task))], members: ["worker-1"], now: 2)
        o.request(11, worker: "worker-1", chunk: true, bytes: 1000, now: 2.5)
        observe(o, [.reply(11, .ack(.duplicate))], members: ["worker-1"], now: 2.5)
        o.request(12, worker: "worker-1", chunk: true, bytes: 1000, now: 3.25)
        observe(o, [.fold(12, offset: 0, examples: 2, microBatch: 2, lossSum: 1), .reply(12, .ack(.accepted))], members: ["worker-1"],
                completes: true, now: 3.25)
        o.replySent(bytes: 77)
        v = values(o, now: 5)
        #expect(v["csptrain_worker_micro_batches_total{worker=\"worker-1\"}"] == 1)
        #expect(v["csptrain_worker_chunks_refused_total{worker=\"worker-1\",reason=\"duplicate\"}"] == 1)
        #expect(v["csptrain_worker_micro_batch_duration_seconds_count{worker=\"worker-1\"}"] == 1)
        #expect(v["csptrain_worker_micro_batch_duration_seconds_sum{worker=\"worker-1\"}"] == 1.25)
        #expect(v["csptrain_worker_last_heard_seconds{worker=\"worker-1\"}"] == 1.75)
        #expect(v["csptrain_received_bytes_total"] == 2100)
        #expect(v["csptrain_sent_bytes_total"] == 77)
        #expect(o.status(now: 5).workers.first?.host == "10.1.2.3")

        observe(o, [.memberRemoved(member(1), reason: .missedDeadline, detail: "", reassigned: [2, 3])], members: [], now: 6)
        v = values(o, now: 20)
        #expect(v["csptrain_worker_removals_total{reason=\"missed_deadline\"}"] == 1)
        #expect(v["csptrain_reassigned_micro_batches_total"] == 2)
        #expect(v["csptrain_worker_micro_batches_total{worker=\"worker-1\"}"] == 1, "kept for departed_series_seconds")
        #expect(o.status(now: 20).workers.first?.state == "missed_deadline")
        v = values(o, now: 37)
        #expect(v.keys.contains { $0.contains("worker-1") } == false, "gone 31 s after leaving")
        #expect(o.status(now: 37).workers.isEmpty)
    }

    @Test func stepsFeedCurvesAndSince() throws {
        let o = RunObserver(.init(runID: "r", totalSteps: 100, startStep: 0, method: "csp", layers: ["a", "b"], goalSparsity: 0.9), now: 0)
        for step in 1 ... 30 {
            o.recorded(.init(step: step, loss: step == 7 ? .nan : 2.0 / Double(step), learningRate: 0.01, examples: 8, stepSeconds: 0.5,
                             examplesPerSecond: 16, sparsity: 0.1, sparsityOverall: 0.05, projectionSeconds: 0.01,
                             wallSeconds: Double(step) * 0.5, validWer: step % 10 == 0 ? 0.5 : nil,
                             validWerChannel: step % 10 == 0 ? 0.6 : nil, validWerSeen: step % 10 == 0 ? 0.025 * Double(step) : nil))
        }
        o.supportUpdated(step: 20, layers: [.init(name: "b", density: 0.25, overlapWithTopK: 0.8, recoveryError: 0.1)])
        let s = o.status(now: 15)
        #expect(s.points.count == 30)
        #expect(s.points[6].loss == nil, "a NaN loss is a gap")
        #expect(s.run.etaSeconds == 35, "0.5 s per step, 70 steps left")
        #expect(s.layers.map(\.sparsity) == [0, 0.75])
        #expect(s.layers[1].overlapWithTopK == 0.8)
        #expect(s.run.goalSparsity == 0.9)
        #expect(o.status(now: 15, since: 25).points.map(\.step) == [26, 27, 28, 29, 30])
        let json = try JSONSerialization.jsonObject(with: Data(s.json())) as? [String: Any]
        #expect((json?["run"] as? [String: Any])?["total_steps"] as? Int == 100)
        let v = values(o, now: 15)
        #expect(v["csptrain_step_duration_seconds_count"] == 30)
        #expect(v["csptrain_validation_wer_ratio{set=\"valid\"}"] == 0.5)
        // Both kinds of validation: held-out voices (valid, valid_channel) and training voices.
        #expect(v["csptrain_validation_wer_ratio{set=\"valid_channel\"}"] == 0.6)
        #expect(v["csptrain_validation_wer_ratio{set=\"valid_seen\"}"] == 0.75)
        #expect(s.run.validWerSeen == 0.75 && s.run.validWerChannel == 0.6)
        #expect(s.points.compactMap(\.validWerSeen) == [0.25, 0.5, 0.75])
        #expect((json?["run"] as? [String: Any])?["valid_wer_seen"] as? Double == 0.75)
        #expect(v["csptrain_layer_sparsity_ratio{layer=\"b\"}"] == 0.75)
    }

    @Test func loopbackAddresses() {
        #expect(ObserveSettings.isLoopback("127.0.0.1:9400"))
        #expect(ObserveSettings.isLoopback("localhost:0"))
        #expect(ObserveSettings.isLoopback("[::1]:9400"))
        #expect(!ObserveSettings.isLoopback("0.0.0.0:9400"))
        #expect(!ObserveSettings.isLoopback("10.0.0.5:9400"))
    }
}
