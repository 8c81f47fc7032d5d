import Tensors

/// On-the-fly augmentation of training examples, composed into the run configuration. Each
/// example's draws come from the counter-based generator keyed by (seed, epoch, example).
public struct AugmentationSettings: Sendable, Equatable {
    public var enabled = true
    /// Speed perturbation to 0.9× or 1.1× (else 1×).
    public var speedProbability = 0.5
    /// Coloured noise (white, pink or brown) at 5–30 dB SNR.
    public var noiseProbability = 0.3
    /// Babble: 3–5 other training utterances mixed in at 10–25 dB SNR.
    public var babbleProbability = 0.1
    /// Room reverberation by the image method.
    public var reverbProbability = 0.3
    /// Telephone band 300–3400 Hz.
    public var telephoneProbability = 0.2
    /// Gain −6…+6 dB.
    public var gainProbability = 0.5
    /// The whole channel recipe of the degraded validation set (`Augmentation.degradeChannel`:
    /// room, telephone band, gain and white noise together) with fresh draws, in place of the
    /// separate reverberation, noise and telephone draws above: the degradations a far-field
    /// phone call brings arrive together, which separate draws rarely produce.
    public var channelProbability = 0.4
    /// SpecAugment (Park et al., 2019): frequency masks of up to `frequencyMaskWidth` bands and
    /// time masks of up to `timeMaskWidth` frames (at most a fifth of the utterance each).
    public var frequencyMasks = 2
    public var frequencyMaskWidth = 15
    public var timeMasks = 2
    public var timeMaskWidth = 25
    public init() {}

    /// The waveform part. `other` fetches another training utterance (for babble).
    public func apply(_ x: [Float], sampleRate: Int, rng: inout SeededRandom, other: (inout SeededRandom) -> [Float]?) -> [Float] {
        guard enabled else { return x }
        var y = x
        func chance(_ p: Double) -> Bool { Double(rng.nextUnitFloat()) < p }
        if chance(speedProbability) {
            let factor = rng.nextUnitFloat() < 0.5 ? 0.9 : 1.1
            y = (try? Augmentation.speed(y, factor: factor, sampleRate: sampleRate)) ?? y
        }
        if chance(channelProbability) {
            y = Augmentation.degradeChannel(y, sampleRate: sampleRate, rng: &rng)
            if chance(babbleProbability) { y = babble(y, rng: &rng, other: other) }
            return y
        }
        if chance(reverbProbability) {
            y = Augmentation.reverberate(y, impulse: Augmentation.randomRoomResponse(sampleRate: sampleRate, rng: &rng))
        }
        if chance(babbleProbability) { y = babble(y, rng: &rng, other: other) }
        if chance(noiseProbability) {
            let colour = Double(rng.next() % 3)
            let noise = Augmentation.colouredNoise(count: y.count, colour: colour, rng: &rng)
            y = Augmentation.addNoise(y, noise, snr: 5 + 25 * Double(rng.nextUnitFloat()))
        }
        if chance(telephoneProbability) { y = Augmentation.telephone(y, sampleRate: sampleRate) }
        if chance(gainProbability) { y = Augmentation.gain(y, decibels: -6 + 12 * Double(rng.nextUnitFloat())) }
        return y
    }

    /// 3–5 other utterances mixed in at 10–25 dB SNR.
    func babble(_ y: [Float], rng: inout SeededRandom, other: (inout SeededRandom) -> [Float]?) -> [Float] {
        var babble = [Float](repeating: 0, count: y.count)
        for _ in 0 ..< 3 + Int(rng.next() % 3) {
            guard let voice = other(&rng), !voice.isEmpty else { continue }
            let shift = Int(rng.next() % UInt64(voice.count))
            for i in 0 ..< babble.count { babble[i] += voice[(i + shift) % voice.count] }
        }
        return Augmentation.addNoise(y, babble, snr: 10 + 15 * Double(rng.nextUnitFloat()))
    }

    /// SpecAugment masks on normalised features (frames, bands): masked values become 0 (the mean).
    public func mask(_ features: inout [Float], bands: Int, rng: inout SeededRandom) {
        guard enabled, bands > 0 else { return }
        let frames = features.count / bands
        for _ in 0 ..< frequencyMasks {
            let width = Int(rng.next() % UInt64(frequencyMaskWidth + 1))
            guard width > 0, width < bands else { continue }
            let start = Int(rng.next() % UInt64(bands - width))
            for t in 0 ..< frames { for b in start ..< start + width { features[t * bands + b] = 0 } }
        }
        for _ in 0 ..< timeMasks {
            let limit = min(timeMaskWidth, frames / 5)
            guard limit > 0 else { continue }
            let width = Int(rng.next() % UInt64(limit + 1))
            guard width > 0 else { continue }
            let start = Int(rng.next() % UInt64(frames - width))
            for t in start ..< start + width { for b in 0 ..< bands { features[t * bands + b] = 0 } }
        }
    }
}
