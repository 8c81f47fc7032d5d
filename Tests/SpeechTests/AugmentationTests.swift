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
