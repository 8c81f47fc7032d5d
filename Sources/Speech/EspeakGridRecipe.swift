import Foundation
import Tensors

/// Recipe 1 (``CorpusRecipe/espeakGrid``), kept as it was so that its corpora stay reproducible:
/// espeak-ng's English voices × variants × `speeds` × `pitches`. A style is held out when a hash
/// of it falls in the held-out fraction, the lower half of that band for validation and the upper
/// for test. Every voice, variant, speed and pitch a held-out style uses also occurs in training:
/// only the combination is new.
extension CorpusSynth {
    func gridJobs(sentences: [CorpusSplit: [String]], voices: [String], variants: [String]) throws -> [Job] {
        let seed = options.seed, fraction = options.validationFraction, makeTest = options.testUtterances > 0
        func styleSplit(_ s: SpeakerStyle) -> CorpusSplit {
            var h: UInt64 = seed
            for byte in "\(s.voice)|\(s.variant)|\(s.speed)|\(s.pitch)".utf8 { h = SeededRandom.mix(h ^ UInt64(byte)) }
            let u = Double(h % 10_000) / 10_000
            if u >= fraction { return .train }
            return makeTest && u >= fraction / 2 ? .test : .valid
        }
        let variantChoices = [""] + variants
        func drawStyle(split: CorpusSplit, rng: inout SeededRandom) throws -> SpeakerStyle {
            for _ in 0 ..< 100_000 {
                let s = SpeakerStyle(voice: voices[Int(rng.next() % UInt64(voices.count))],
                                     variant: variantChoices[Int(rng.next() % UInt64(variantChoices.count))],
                                     speed: options.speeds[Int(rng.next() % UInt64(options.speeds.count))],
                                     pitch: options.pitches[Int(rng.next() % UInt64(options.pitches.count))])
                if styleSplit(s) == split { return s }
            }
            throw DatasetError(file: options.domainFile, line: nil,
                               message: "no \(split.rawValue) speaker style exists with \(voices.count) voices and \(variantChoices.count) variants: add voices, speeds or pitches")
        }
        var jobs: [Job] = []
        for i in 0 ..< options.utterances + options.testUtterances {
            let split = split(of: i)
            var r = SeededRandom(options.seed, 0x5554, UInt64(i))
            let pool = sentences[split]!
            let text = pool[Int(r.next() % UInt64(pool.count))]
            let style = try drawStyle(split: split, rng: &r)
            jobs.append(Job(index: i, split: split, text: text,
                            rendering: Rendering(engine: .espeakNG, voice: style.voice, variant: style.variant,
                                                 speed: Double(style.speed), pitch: Double(style.pitch))))
        }
        return jobs
    }
}
