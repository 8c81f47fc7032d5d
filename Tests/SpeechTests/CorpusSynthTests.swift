import Foundation
import Testing
import TestSupport
@testable import Speech

/// espeak-ng, flite and sox are runtime dependencies (scripts/install-deps.sh); these tests make tiny corpora.
@Suite(.timeLimit(.minutes(2)))
struct CorpusSynthTests {
    /// A corpus made on a thread of its own: synthesis waits on espeak-ng, flite and sox for
    /// seconds, and must not hold a thread of the task pool the socket tests need.
    func synthesized(_ options: CorpusSynth.Options) async throws -> CorpusSynth.Report {
        try await offTheTaskPool { try CorpusSynth(options: options).synthesize() }
    }

    var domain: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Configs/voice-commands.txt").standardizedFileURL.path
    }

    @Test func domainExpandsEveryTemplate() throws {
        let d = try CommandDomain(file: domain)
        let all = d.allSentences()
        #expect(all.count > 1000)
        #expect(all.contains("set an alarm for seven forty five p m"))
        #expect(all.allSatisfy { Transcript.normalize($0) == $0 && !$0.contains("{") })
    }

    @Test func variantsReallyChangeTheVoiceAndBogusOnesAreCaught() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let synth = CorpusSynth(options: .init(out: dir, utterances: 1, seed: 1, domainFile: domain))
        let (working, rejected) = try synth.workingVariants(["adam", "f3", "no-such-variant"], voice: "en-us", scratch: dir)
        #expect(working == ["adam", "f3"])
        #expect(rejected == ["no-such-variant"])
    }

    @Test func gridRecipeKeepsSentencesAndStylesApart() async throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = CorpusSynth.Options(out: dir, utterances: 40, seed: 7, domainFile: domain)
        options.recipe = .espeakGrid
        options.validationFraction = 0.25
        let report = try await synthesized(options)
        #expect(report.train == 30 && report.valid == 10 && report.validChannel == 10)
        let train = try Manifest.read(dir + "/train.jsonl"), valid = try Manifest.read(dir + "/valid.jsonl")
        #expect(Set(train.map(\.text)).isDisjoint(with: Set(valid.map(\.text))))
        let styles = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/styles.json"))) as! [String: Any]
        let rows = styles["utterances"] as! [[String: String]]
        func key(_ r: [String: String]) -> String { "\(r["voice"]!)|\(r["speed"]!)|\(r["pitch"]!)" }
        let trainStyles = Set(rows.filter { $0["split"] == "train" }.map(key)), validStyles = Set(rows.filter { $0["split"] == "valid" }.map(key))
        #expect(trainStyles.isDisjoint(with: validStyles))
        // Real speech: a second or more of audio at espeak-ng's 22.05 kHz.
        let audio = try AudioFile.read(train[0].audioPath)
        #expect(audio.sampleRate == 22_050 && audio.seconds > 0.5)
        let channel = try Manifest.read(dir + "/valid_channel.jsonl")
        #expect(channel.map(\.text) == valid.map(\.text))
        #expect(try AudioFile.read(channel[0].audioPath).samples != (try AudioFile.read(valid[0].audioPath).samples))
    }

    @Test func gridRecipeTestSplitIsHeldOutFromBothAndLeavesTrainingAlone() async throws {
        let plain = try tempFolder(), withTest = try tempFolder()
        defer { for d in [plain, withTest] { try? FileManager.default.removeItem(atPath: d) } }
        var options = CorpusSynth.Options(out: plain, utterances: 24, seed: 3, domainFile: domain)
        options.recipe = .espeakGrid
        options.validationFraction = 0.25
        _ = try await synthesized(options)
        options.out = withTest
        options.testUtterances = 6
        let report = try await synthesized(options)
        #expect(report.train == 18 && report.valid == 6 && report.test == 6 && report.testChannel == 6)
        // The same training utterances, sample for sample.
        let trainA = try Manifest.read(plain + "/train.jsonl"), trainB = try Manifest.read(withTest + "/train.jsonl")
        #expect(trainA.map(\.text) == trainB.map(\.text))
        #expect(try AudioFile.read(trainA[3].audioPath).samples == (try AudioFile.read(trainB[3].audioPath).samples))
        let valid = try Manifest.read(withTest + "/valid.jsonl"), test = try Manifest.read(withTest + "/test.jsonl")
        #expect(Set(test.map(\.text)).isDisjoint(with: Set(trainB.map(\.text))))
        #expect(Set(test.map(\.text)).isDisjoint(with: Set(valid.map(\.text))))
        let styles = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: withTest + "/styles.json"))) as! [String: Any]
        let rows = styles["utterances"] as! [[String: String]]
        func stylesOf(_ split: String) -> Set<String> { Set(rows.filter { $0["split"] == split }.map { "\($0["voice"]!)|\($0["speed"]!)|\($0["pitch"]!)" }) }
        #expect(stylesOf("test").isDisjoint(with: stylesOf("train")) && stylesOf("test").isDisjoint(with: stylesOf("valid")))
        #expect(try Manifest.read(withTest + "/test_channel.jsonl").map(\.text) == test.map(\.text))
    }

    /// Recipe 2 with the real tools: espeak-ng, flite and sox, a handful of utterances.
    @Test func multiEngineCorpusHoldsOutVoicesAndIsReproducible() async throws {
        let a = try tempFolder(), b = try tempFolder(), c = try tempFolder()
        defer { for d in [a, b, c] { try? FileManager.default.removeItem(atPath: d) } }
        func make(_ dir: String, seed: UInt64, seen: Int = 4) async throws -> CorpusSynth.Report {
            var options = CorpusSynth.Options(out: dir, utterances: 10, seed: seed, domainFile: domain)
            options.validationFraction = 0.3
            options.testUtterances = 4
            options.seenValidationUtterances = seen
            options.engines = EngineMix(weights: [.espeakNG: 0.5, .flite: 0.5])
            return try await synthesized(options)
        }
        let report = try await make(a, seed: 11)
        #expect(report.recipe == 2 && report.train == 7 && report.valid == 3 && report.test == 4 && report.testChannel == 4 && report.validSeen == 4)
        let rows = try Self.styles(a)
        #expect(Set(rows.map { $0["engine"]! }) == ["espeak-ng", "flite"], "a seed whose tiny corpus has both engines")
        #expect(rows.contains { $0["tempo"] != "1" } && rows.contains { $0["tempo"] == "1" }, "some utterances through sox, some not")
        // flite's voices per split; no espeak-ng variant or accent of a held-out split in training.
        let own = report.ownVoices
        for row in rows where row["engine"] == "flite" {
            #expect([["kal16", "awb"], ["rms"], ["slt"], ["kal16", "awb"]][["train", "valid", "test", "valid_seen"].firstIndex(of: row["split"]!)!].contains(row["voice"]!), "\(row)")
        }
        let trainEspeak = rows.filter { ["train", "valid_seen"].contains($0["split"]!) && $0["engine"] == "espeak-ng" }.map { $0["voice"]! }
        for voice in trainEspeak {
            let parts = voice.split(separator: "+", maxSplits: 1).map(String.init)
            let names = ["espeak-ng:\(parts[0])", "espeak-ng:+\(parts.count > 1 ? parts[1] : "(the voice's own)")"]
            #expect(names.allSatisfy { !own["valid"]!.contains($0) && !own["test"]!.contains($0) }, "\(voice) is a held-out voice")
        }
        // Real audio at each engine's rate (sox keeps it).
        let train = try Manifest.read(a + "/train.jsonl")
        for (u, row) in zip(train, rows.filter { $0["split"] == "train" }) {
            let audio = try AudioFile.read(u.audioPath)
            #expect(audio.sampleRate == (row["engine"] == "flite" ? 16_000 : 22_050) && audio.seconds > 0.4, "\(row)")
        }
        #expect(!FileManager.default.fileExists(atPath: a + "/train/train-000003.wav.engine.wav"), "sox's input is removed")

        // valid_seen: held-out sentences (none in training or test) spoken by training voices
        // (checked above with training's rows), no channel copy, and the other splits unchanged by it.
        let seen = try Manifest.read(a + "/valid_seen.jsonl"), test = try Manifest.read(a + "/test.jsonl")
        #expect(seen.count == 4 && rows.filter { $0["split"] == "valid_seen" }.map { $0["text"]! } == seen.map(\.text))
        #expect(Set(seen.map(\.text)).isDisjoint(with: Set(train.map(\.text))) && Set(seen.map(\.text)).isDisjoint(with: Set(test.map(\.text))))
        #expect(!FileManager.default.fileExists(atPath: a + "/valid_seen_channel.jsonl"))
        let unseen = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: unseen) }
        #expect(try await make(unseen, seed: 11, seen: 0).validSeen == 0 && !FileManager.default.fileExists(atPath: unseen + "/valid_seen.jsonl"))
        for file in ["train.jsonl", "valid.jsonl", "test.jsonl", "valid_channel.jsonl", "train/train-000003.wav", "test/test-000012.wav"] {
            let x = try String(contentsOfFile: a + "/" + file, encoding: .isoLatin1).replacingOccurrences(of: a, with: "")
            let y = try String(contentsOfFile: unseen + "/" + file, encoding: .isoLatin1).replacingOccurrences(of: unseen, with: "")
            #expect(x == y, "\(file) changes with valid_seen")
        }

        // The same seed: the same manifests, styles and audio bytes; another seed: another corpus.
        _ = try await make(b, seed: 11)
        _ = try await make(c, seed: 12)
        func bytes(_ dir: String, _ file: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file)) }
        for file in ["train.jsonl", "valid.jsonl", "test.jsonl", "styles.json", "train/train-000003.wav", "train/train-000009.wav", "test/test-000012.wav"] {
            #expect(try bytes(a, file) == bytes(b, file), "\(file) differs between two runs with one seed")
        }
        #expect(try bytes(a, "styles.json") != bytes(c, "styles.json"))
        #expect(try bytes(a, "train/train-000003.wav") != bytes(c, "train/train-000003.wav"))
    }

    @Test func missingToolsAndVoicesAreNamed() throws {
        var tools = VoiceTools()
        tools.flite = "csptrain-no-such-flite"
        #expect { try tools.fliteVoices() } throws: { "\($0)".contains("csptrain-no-such-flite") && "\($0)".contains("apt-get install flite") }
        #expect { try VoiceTools().requireFliteVoices(["awb", "csptrain-nobody"]) } throws: {
            "\($0)".contains("no voice csptrain-nobody") && "\($0)".contains("slt")
        }
        #expect(try VoiceTools().fliteVoices().contains("kal16"))
    }

    static func styles(_ dir: String) throws -> [[String: String]] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/styles.json"))) as! [String: Any]
        return object["utterances"] as! [[String: String]]
    }
}
