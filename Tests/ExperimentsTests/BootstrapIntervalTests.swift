import Testing
@testable import Experiments

/// One system's WER interval: `experiment pruning` stores it per run for `csptrain plot`.
struct BootstrapIntervalTests {
    @Test func holdsTheEstimateAndNarrowsWithMoreUtterances() {
        let few = UtteranceScores(wordEdits: [0, 3, 1, 0, 2], words: [5, 6, 4, 5, 5])
        let i = BootstrapInterval(few, samples: 2000)
        #expect(i.wer == 6.0 / 25)
        #expect(i.low <= i.wer && i.wer <= i.high && i.low < i.high)
        #expect(i == BootstrapInterval(few, samples: 2000), "seeded: the same interval every time")
        // The same utterances ten times over: the resampled WER varies less.
        let many = UtteranceScores(wordEdits: Array(repeating: few.wordEdits, count: 10).flatMap { $0 },
                                   words: Array(repeating: few.words, count: 10).flatMap { $0 })
        let j = BootstrapInterval(many, samples: 2000)
        #expect(abs(j.wer - i.wer) < 1e-12)
        #expect(j.high - j.low < (i.high - i.low) / 2)
    }

    @Test func utterancesWithOneRateGiveAPoint() {
        let same = UtteranceScores(wordEdits: [1, 2, 3], words: [10, 20, 30])
        let i = BootstrapInterval(same, samples: 500)
        #expect(abs(i.low - 0.1) < 1e-12 && abs(i.high - 0.1) < 1e-12)
        #expect(BootstrapInterval(UtteranceScores(), samples: 10).low == 0)
    }
}
