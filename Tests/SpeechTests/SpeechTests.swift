import Foundation
import Testing
@testable import Speech

struct TranscriptTests {
    @Test func normalisation() {
        #expect(Transcript.normalize("Turn the LIGHTS on!") == "turn the lights on")
        #expect(Transcript.normalize("  What’s   on my\tcalendar?? ") == "what's on my calendar")
        #expect(Transcript.normalize("set 2 timers-now") == "set timers now")
        #expect(Transcript.normalize("...") == "")
    }

    @Test func vocabularyRoundTrip() {
        let v = Vocabulary.characters
        #expect(v.classes == 29)
        let encoded = v.encode("what's up")
        #expect(encoded.allSatisfy { $0 >= 1 && $0 < 29 })
        #expect(v.decode(encoded) == "what's up")
        #expect(v.encode(" ") == [1] && v.encode("'") == [2] && v.encode("a") == [3] && v.encode("z") == [28])
    }
}

struct ScoringTests {
    @Test func errorRatesByHand() {
        var rates = ErrorRates()
        rates.add(reference: "a b c d", hypothesis: "a x c")      // 1 substitution + 1 deletion
        rates.add(reference: "volume up", hypothesis: "volume up")
        #expect(rates.wordEdits == 2 && rates.words == 6)
        #expect(rates.wer == 2.0 / 6.0)
        #expect(ErrorRates.editDistance(Array("kitten"), Array("sitting")) == 3)
        #expect(rates.utterances == 2)
    }
}

struct DecodingTests {
    /// One-hot-ish logits for a frame sequence of classes.
    func logits(_ frames: [Int], classes: Int = 5) -> [Float] {
        frames.flatMap { k in (0 ..< classes).map { $0 == k ? Float(5) : Float(0) } }
    }

    @Test func greedyMergesRepeatsAndDropsBlanks() {
        #expect(CTCDecoder.greedy(logits([3, 3, 0, 4, 4, 0, 0, 4]), classes: 5) == [3, 4, 4])
        #expect(CTCDecoder.greedy(logits([0, 0]), classes: 5) == [])
    }

    @Test func beamSearchSumsAlignments() {
        // Each frame: blank 0.6, 'a' 0.4. Greedy says "" (0.36); the label "a" has
        // 0.4·0.4 + 0.4·0.6 + 0.6·0.4 = 0.64, which prefix beam search finds.
        let l: [Float] = [log(0.6), log(0.4), log(0.6), log(0.4)]
        #expect(CTCDecoder.greedy(l, classes: 2) == [])
        #expect(CTCDecoder.beamSearch(l, classes: 2, beam: 4) == [1])
    }

    @Test func beamSearchAgreesWithGreedyOnPeakedOutput() {
        let l = logits([3, 3, 0, 4, 0, 4, 1, 2])
        #expect(CTCDecoder.beamSearch(l, classes: 5, beam: 8) == CTCDecoder.greedy(l, classes: 5))
    }
}

struct AudioTests {
    func temp(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-audio-\(UInt32.random(in: 0 ... .max))-\(name)").path
    }

    func tone(_ hz: Double, rate: Int, seconds: Double, amplitude: Float = 0.5) -> [Float] {
        (0 ..< Int(Double(rate) * seconds)).map { amplitude * Float(sin(2 * Double.pi * hz * Double($0) / Double(rate))) }
    }

    func rms(_ x: ArraySlice<Float>) -> Double {
        (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(x.count)).squareRoot()
    }

    @Test func wavAt22kHzAndFlacAt16kHzRoundTrip() throws {
        let wav = temp("a.wav"), flac = temp("b.flac")
        defer { try? FileManager.default.removeItem(atPath: wav); try? FileManager.default.removeItem(atPath: flac) }
        let a = Audio(samples: tone(440, rate: 22_050, seconds: 0.2), sampleRate: 22_050)
        try AudioFile.write(a, to: wav)
        let back = try AudioFile.read(wav)
        #expect(back.sampleRate == 22_050 && back.samples.count == a.samples.count)
        #expect(zip(back.samples, a.samples).allSatisfy { abs($0 - $1) < 1e-4 })  // 16-bit quantisation
        let b = Audio(samples: tone(1000, rate: 16_000, seconds: 0.1), sampleRate: 16_000)
        try AudioFile.write(b, to: flac, format: .flac16)
        let flacBack = try AudioFile.read16k(flac)
        #expect(flacBack.samples.count == b.samples.count)
        // 22.05 kHz WAV comes in at 16 kHz.
        let resampled = try AudioFile.read16k(wav)
        #expect(resampled.sampleRate == 16_000)
        #expect(abs(resampled.samples.count - Int(0.2 * 16_000)) <= 2)
    }

    @Test func stereoIsMixedDown() throws {
        let path = temp("s.wav")
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Left 0.5, right −0.25: the mix is 0.125.
        try AudioFile.write(interleaved: (0 ..< 200).flatMap { _ in [Float(0.5), -0.25] }, channels: 2, sampleRate: 16_000, to: path)
        let mono = try AudioFile.read(path)
        #expect(mono.samples.count == 200)
        #expect(mono.samples.allSatisfy { abs($0 - 0.125) < 1e-4 })
    }

    @Test func corruptFileIsAnErrorNamingIt() throws {
        let path = temp("broken.wav")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("RIFF....WAVEnot really".utf8).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: AudioError.self) { try AudioFile.read(path) }
        #expect(error?.file == path)
        #expect(error?.description.contains(path) == true)
        let missing = #expect(throws: AudioError.self) { try AudioFile.read("/nonexistent/x.flac") }
        #expect(missing?.description.contains("/nonexistent/x.flac") == true)
    }

    /// 44.1 kHz → 16 kHz: a 1 kHz and a 6 kHz tone pass unchanged; a 10 kHz tone (above the new
    /// Nyquist frequency) must not alias back into the band.
    @Test func resamplerFrequencyResponse() throws {
        for (hz, expectedGain) in [(1000.0, 1.0), (6000.0, 1.0), (10_000.0, 0.0)] {
            let input = Audio(samples: tone(hz, rate: 44_100, seconds: 0.5), sampleRate: 44_100)
            let out = try Resampler.resample(input, to: 16_000)
            #expect(abs(out.samples.count - 8000) <= 2)
            let gain = rms(out.samples[2000 ..< 6000]) / rms(input.samples[5000 ..< 15000])
            if expectedGain > 0 {
                #expect(abs(gain - expectedGain) < 0.01, "\(hz) Hz: gain \(gain)")
            } else {
                #expect(gain < 1e-3, "\(hz) Hz leaks through with gain \(gain) (> −60 dB)")
            }
        }
    }
}

struct FeatureTests {
    struct Fixture: Decodable {
        let signal: [Float]
        let frames: Int
        let bands: Int
        let features: [Double]
    }

    /// Against numpy (Fixtures/make_logmel_fixture.py), in float64 there and float32 here.
    @Test func logMelMatchesNumpyReference() throws {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/logmel_fixture", withExtension: "json"))
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        let extractor = LogMelExtractor()
        #expect(extractor.frameCount(samples: fixture.signal.count) == fixture.frames)
        let ours = extractor.features(fixture.signal)
        #expect(ours.count == fixture.frames * fixture.bands)
        let worst = zip(ours, fixture.features).map { abs(Double($0) - $1) }.max() ?? .infinity
        #expect(worst < 1e-3, "largest difference \(worst) (log units)")
    }

    /// No band is empty: with 80 bands on a 512-point FFT the lowest triangles are narrower than
    /// a bin (31.25 Hz), so their peaks fall between bins, but every band still sees energy
    /// (smallest peak 0.40, computed with numpy).
    @Test func everyMelBandSeesEnergy() {
        let f = LogMelExtractor().filters
        let bins = 257
        let peaks = (0 ..< 80).map { m in f[m * bins ..< (m + 1) * bins].max() ?? 0 }
        #expect(peaks.allSatisfy { $0 >= 0.4 && $0 <= 1 })
        #expect(abs(Double(peaks.min() ?? 0) - 0.40010121) < 1e-5)
    }
}
