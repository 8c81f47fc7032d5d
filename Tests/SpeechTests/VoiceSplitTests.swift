import Foundation
import Testing
@testable import Speech
@testable import Tensors

/// Recipe 2's voice split and draws, with no synthesizer: properties over many seeds.
struct VoiceSplitTests {
    /// espeak-ng 1.51's English accents and a hundred variant names ("" is the voice's own).
    static let accents = ["en-029", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc"]
    static let variants = [""] + (0 ..< 96).map { "v\($0)" }

    func recipe(seed: UInt64, mix: EngineMix = .standard) throws -> MultiEngineRecipe {
        try MultiEngineRecipe(voices: VoiceSplit(accents: Self.accents, variants: Self.variants, flite: FliteSplit(), seed: seed),
                              mix: mix, ranges: StyleRanges())
    }

    func draws(_ recipe: MultiEngineRecipe, _ split: CorpusSplit, makeTest: Bool, seed: UInt64, count: Int) -> [Rendering] {
        (0 ..< count).map { i in
            var r = SeededRandom(seed, 77, UInt64(i))
            return recipe.draw(split, makeTest: makeTest, rng: &r)
        }
    }

    @Test func noHeldOutVoiceIsEverHeardInTraining() throws {
        for seed in UInt64(1) ... 40 {
            let recipe = try recipe(seed: seed)
            let own = recipe.voices.own
            // The splits' own voices partition the voices.
            #expect(Set(own.values.flatMap(\.accents)) == Set(Self.accents) && own.values.map(\.accents.count).reduce(0, +) == Self.accents.count)
            #expect(Set(own.values.flatMap(\.variants)) == Set(Self.variants) && own.values.map(\.variants.count).reduce(0, +) == Self.variants.count)
            #expect(own[.valid]!.accents.count == 1 && own[.test]!.accents.count == 1 && own[.valid]!.variants.count == 10)
            #expect(VoiceSplit.baseAccents.isSubset(of: own[.train]!.accents))
            #expect(own[.train]!.flite == ["kal16", "awb"] && own[.valid]!.flite == ["rms"] && own[.test]!.flite == ["slt"])

            let train = draws(recipe, .train, makeTest: true, seed: seed, count: 400)
            for makeTest in [true, false] {
                for split in makeTest ? [CorpusSplit.valid, .test] : [.valid] {
                    let heldOut = draws(recipe, split, makeTest: makeTest, seed: seed &+ 1000, count: 200)
                    let pool = recipe.voices.pool(split, makeTest: makeTest)
                    // Every held-out speaker is new: its variant or flite voice is the split's own.
                    for r in heldOut {
                        if r.engine == .flite { #expect(pool.flite.contains(r.voice) && !own[.train]!.flite.contains(r.voice)) }
                        else { #expect(pool.variants.contains(r.variant) && !own[.train]!.variants.contains(r.variant)) }
                    }
                    let heldOutVoices = Set(pool.variants.map { "v:" + $0 } + pool.flite + pool.accents.filter { !own[.train]!.accents.contains($0) })
                    for r in train {
                        #expect(!heldOutVoices.contains(r.engine == .flite ? r.voice : "v:" + r.variant) && !heldOutVoices.contains(r.voice),
                                "seed \(seed): \(r.speaker) of a held-out split in training")
                    }
                    // Validation never hears test's own voices when there is a test split.
                    if makeTest && split == .valid {
                        let testOwn = Set(own[.test]!.variants.map { "v:" + $0 } + own[.test]!.flite + own[.test]!.accents)
                        #expect(heldOut.allSatisfy { !testOwn.contains($0.engine == .flite ? $0.voice : "v:" + $0.variant) && !testOwn.contains($0.voice) })
                    }
                }
            }
            // Some held-out utterances speak an accent training never heard.
            let valid = draws(recipe, .valid, makeTest: true, seed: seed, count: 400)
            #expect(valid.contains { own[.valid]!.accents.contains($0.voice) })
        }
    }

    @Test func trainingDoesNotDependOnWhetherThereIsATestSplit() throws {
        for seed in UInt64(1) ... 20 {
            let recipe = try recipe(seed: seed)
            #expect(recipe.voices.pool(.train, makeTest: true) == recipe.voices.pool(.train, makeTest: false))
            // Without a test split validation takes the test voices too.
            #expect(Set(recipe.voices.pool(.valid, makeTest: false).flite) == ["rms", "slt"])
        }
    }

    @Test func reportedOwnVoicesAreWhatEachSplitHears() throws {
        let split = try recipe(seed: 4).voices
        let withTest = CorpusSynth.ownVoices(split, makeTest: true, engines: .standard)
        #expect(withTest["valid"]!.contains("flite:rms") && !withTest["valid"]!.contains("flite:slt") && withTest["test"]!.contains("flite:slt"))
        let validOnly = CorpusSynth.ownVoices(split, makeTest: false, engines: .standard)
        #expect(validOnly["test"] == nil && Set(validOnly["valid"]!) == Set(withTest["valid"]! + withTest["test"]!))
        #expect(try CorpusSynth.ownVoices(split, makeTest: true, engines: EngineMix(parsing: "flite"))["train"] == ["flite:kal16", "flite:awb"])
    }

    @Test func engineSharesAreRespected() throws {
        let n = 3000
        let mixes = [EngineMix.standard, EngineMix(weights: [.espeakNG: 1, .flite: 3]), try EngineMix(parsing: "flite")]
        for (seed, mix) in zip(UInt64(1)..., mixes) {
            for split in CorpusSplit.allCases {
                let flite = Double(draws(try recipe(seed: seed, mix: mix), split, makeTest: true, seed: seed, count: n).filter { $0.engine == .flite }.count) / Double(n)
                let p = mix.fraction(.flite)
                // Four standard deviations of a binomial share (exact when p is 0 or 1).
                #expect(abs(flite - p) <= 4 * (p * (1 - p) / Double(n)).squareRoot(), "\(split): flite share \(flite), asked \(p)")
            }
        }
    }

    @Test func stylesAreContinuousInsideTheirRangesAndHeldOutOnesReachBeyond() throws {
        let recipe = try recipe(seed: 5)
        let ranges = StyleRanges(), wide = ranges.widened(by: recipe.heldOutWidening)
        let train = draws(recipe, .train, makeTest: true, seed: 5, count: 2000)
        let test = draws(recipe, .test, makeTest: true, seed: 5, count: 2000)
        func check(_ rs: [Rendering], _ r: StyleRanges) {
            for x in rs {
                if x.engine == .espeakNG {
                    #expect(r.espeakSpeed.contains(x.speed) && r.espeakPitch.contains(x.pitch) && x.speed == x.speed.rounded())
                } else {
                    let base = MultiEngineRecipe.fliteMeanF0[x.voice]!
                    #expect(r.fliteStretch.lowerBound - 0.001 ... r.fliteStretch.upperBound + 0.001 ~= x.speed)
                    #expect(base * r.fliteF0Factor.lowerBound - 0.1 ... base * r.fliteF0Factor.upperBound + 0.1 ~= x.pitch)
                }
                if let t = x.tempo, let c = x.cents {
                    #expect(r.soxTempo.lowerBound - 0.001 ... r.soxTempo.upperBound + 0.001 ~= t && r.soxCents.contains(c))
                }
            }
        }
        check(train, ranges)
        check(test, wide)
        // Far more than five values each (the grid recipe's), and held-out styles beyond training's.
        #expect(Set(train.filter { $0.engine == .espeakNG }.map(\.speed)).count > 50)
        #expect(Set(train.filter { $0.engine == .flite }.map(\.speed)).count > 100)
        #expect(test.contains { $0.engine == .espeakNG && !ranges.espeakSpeed.contains($0.speed) })
        #expect(test.contains { $0.engine == .flite && !ranges.fliteStretch.contains($0.speed) })
        // Half go through sox.
        let sox = Double(train.filter { $0.tempo != nil }.count) / Double(train.count)
        #expect(abs(sox - ranges.soxProbability) < 4 * (0.25 / Double(train.count)).squareRoot())
    }

    /// valid_seen hears training's voices only, in training's style ranges, and all of them.
    @Test func seenValidationSpeaksWithTrainingVoicesAndStyles() throws {
        for seed in UInt64(1) ... 20 {
            let recipe = try recipe(seed: seed)
            let train = recipe.voices.own[.train]!
            let seen = draws(recipe, .validSeen, makeTest: seed % 2 == 0, seed: seed, count: 400)
            for r in seen {
                if r.engine == .flite { #expect(train.flite.contains(r.voice), "seed \(seed): \(r.speaker)") }
                else { #expect(train.accents.contains(r.voice) && train.variants.contains(r.variant), "seed \(seed): \(r.speaker)") }
            }
            let ranges = StyleRanges()
            for r in seen where r.engine == .espeakNG { #expect(ranges.espeakSpeed.contains(r.speed) && ranges.espeakPitch.contains(r.pitch)) }
            for r in seen { if let t = r.tempo { #expect(ranges.soxTempo.lowerBound - 0.001 ... ranges.soxTempo.upperBound + 0.001 ~= t) } }
            #expect(Set(seen.filter { $0.engine == .flite }.map(\.voice)) == Set(train.flite))
        }
    }

    @Test func anotherSeedHoldsOutOtherVoices() throws {
        let splits = try (UInt64(1) ... 10).map { try recipe(seed: $0).voices.own[.valid]!.variants }
        #expect(Set(splits).count > 5)
        #expect(try recipe(seed: 3).voices == recipe(seed: 3).voices)
    }

    @Test func engineMixParsesAndRefusesNonsense() throws {
        let mix = try EngineMix(parsing: "espeak-ng=3,flite=1")
        #expect(abs(mix.fraction(.espeakNG) - 0.75) < 1e-12 && mix.engines == [.espeakNG, .flite])
        #expect(try EngineMix(parsing: "espeak-ng").engines == [.espeakNG])
        for bad in ["festival=1", "flite=-1", "flite=0", "flite=x", "flite=1,flite=2"] {
            #expect(throws: DatasetError.self, "\(bad)") { try EngineMix(parsing: bad) }
        }
    }

    @Test func tooFewVariantsOrSharedFliteVoicesAreRefused() {
        #expect(throws: DatasetError.self) { try VoiceSplit(accents: Self.accents, variants: ["", "a"], flite: FliteSplit(), seed: 1) }
        var shared = FliteSplit()
        shared.test = ["awb"]
        #expect(throws: DatasetError.self) { try VoiceSplit(accents: Self.accents, variants: Self.variants, flite: shared, seed: 1) }
    }
}
