import Foundation
import Testing
@testable import Speech
@testable import Tensors

struct AugmentationTests {
    func rms(_ x: [Float]) -> Double { (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, x.count))).squareRoot() }

    @Test func telephoneBandPassesSpeechBandAndCutsTheRest() {
        for (hz, passes) in [(1000.0, true), (100.0, false), (6000.0, false)] {
            let x = sine(hz, rate: 16_000, seconds: 0.5)
            let y = Augmentation.telephone(x, sampleRate: 16_000)
            let gain = rms(Array(y[4000...])) / rms(Array(x[4000...]))
            if passes { #expect(gain > 0.8, "\(hz) Hz gain \(gain)") } else { #expect(gain < 0.15, "\(hz) Hz gain \(gain)") }
        }
    }

    @Test func noiseIsAddedAtTheRequestedSNR() {
        var rng = SeededRandom(3)
        let x = sine(440, rate: 16_000, seconds: 0.5)
        let noise = Augmentation.colouredNoise(count: x.count, colour: 1, rng: &rng)
        let y = Augmentation.addNoise(x, noise, snr: 10)
        let residual = zip(y, x).map { $0 - $1 }
        let snr = 20 * log10(rms(x) / rms(residual))
        #expect(abs(snr - 10) < 0.01)
    }

    @Test func pinkNoiseHasMoreLowThanHighFrequencyEnergy() {
        var rng = SeededRandom(4)
        let pink = Augmentation.colouredNoise(count: 1 << 14, colour: 1, rng: &rng)
        let low = Biquad.lowPass(cutoff: 500, sampleRate: 16_000).run(pink)
        let high = Biquad.highPass(cutoff: 4000, sampleRate: 16_000).run(pink)
        #expect(rms(low) > 1.5 * rms(high))
    }

    @Test func roomResponseStartsWithTheDirectPathAndDecays() {
        let h = Augmentation.roomImpulseResponse(room: (5, 4, 3), source: (1, 1, 1.5), microphone: (3, 2.5, 1.2), rt60: 0.4, sampleRate: 16_000)
        let distance = (4.0 + 2.25 + 0.09).squareRoot()
        let directSample = Int((distance / 343 * 16_000).rounded())
        #expect(h.firstIndex { $0 != 0 } == directSample)
        #expect(abs(h[directSample] - 1) < 1e-5)
        let early = h[..<3200].reduce(0) { $0 + $1 * $1 }, late = h[3200...].reduce(0) { $0 + $1 * $1 }
        #expect(early > late)
    }

    @Test func fftConvolutionMatchesDirectConvolution() {
        let a: [Float] = [1, 2, 3, 4], b: [Float] = [0.5, -1, 2]
        let direct: [Float] = [0.5, 0, 1.5, 3, 2, 8]
        let fast = FFTConvolver.convolve(a, b)
        #expect(fast.count == 6)
        #expect(zip(fast, direct).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func augmentationIsAPureFunctionOfItsKey() {
        let x = sine(300, rate: 16_000, seconds: 0.3)
        var s = AugmentationSettings()
        s.speedProbability = 1
        s.noiseProbability = 1
        s.reverbProbability = 1
        var r1 = SeededRandom(1, 2, 3), r2 = SeededRandom(1, 2, 3), r3 = SeededRandom(1, 2, 4)
        let a = s.apply(x, sampleRate: 16_000, rng: &r1) { _ in nil }
        let b = s.apply(x, sampleRate: 16_000, rng: &r2) { _ in nil }
        let c = s.apply(x, sampleRate: 16_000, rng: &r3) { _ in nil }
        #expect(a == b)
        #expect(a != c)
        var features = [Float](repeating: 1, count: 100 * 80)
        var m = SeededRandom(9)
        s.mask(&features, bands: 80, rng: &m)
        #expect(features.contains(0) && features.contains(1))
    }
}

/// espeak-ng is a runtime dependency (scripts/install-deps.sh); these tests make tiny corpora.
@Suite(.timeLimit(.minutes(2)))
struct CorpusSynthTests {
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

    @Test func splitKeepsSentencesAndStylesApart() throws {
        let dir = try tempFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = CorpusSynth.Options(out: dir, utterances: 40, seed: 7, domainFile: domain)
        options.validationFraction = 0.25
        let report = try CorpusSynth(options: options).synthesize()
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

    @Test func testSplitIsHeldOutFromBothAndLeavesTrainingAlone() throws {
        let plain = try tempFolder(), withTest = try tempFolder()
        defer { for d in [plain, withTest] { try? FileManager.default.removeItem(atPath: d) } }
        var options = CorpusSynth.Options(out: plain, utterances: 24, seed: 3, domainFile: domain)
        options.validationFraction = 0.25
        _ = try CorpusSynth(options: options).synthesize()
        options.out = withTest
        options.testUtterances = 6
        let report = try CorpusSynth(options: options).synthesize()
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
}
