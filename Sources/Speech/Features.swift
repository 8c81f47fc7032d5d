import CFFTW
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Log-mel filterbank settings, composed into the run configuration and stored in checkpoints.
public struct FeatureSettings: Sendable, Equatable {
    public var sampleRate = 16_000
    /// Mel bands.
    public var bands = 80
    /// Analysis window in samples (25 ms at 16 kHz).
    public var windowLength = 400
    /// Hop between frames in samples (10 ms at 16 kHz).
    public var hopLength = 160
    /// FFT size (the window is zero-padded to it).
    public var fftSize = 512
    public var lowHz = 0.0
    public var highHz = 8_000.0
    public init() {}
}

/// 80-band log-mel features: periodic Hann window, |FFT|² (FFTW), triangular HTK-mel filters,
/// natural log floored at 1e-10. Frames: 1 + ⌊(N − window) / hop⌋ for N ≥ window samples, no
/// centring or padding. The recipe is reproduced in numpy by
/// Tests/SpeechTests/Fixtures/make_logmel_fixture.py.
///
/// An extractor owns FFTW buffers and a plan: use one per task, not concurrently.
public final class LogMelExtractor {
    public let settings: FeatureSettings
    /// (bands, fftSize/2 + 1) row-major triangular filter weights.
    public let filters: [Float]
    private let window: [Float]
    /// The bins where each triangle is non-zero (a few of the 257), so a frame costs
    /// about 2 · bins multiply-adds instead of bands · bins.
    private let support: [Range<Int>]
    private let input: UnsafeMutablePointer<Float>
    private let output: OpaquePointer   // fftwf_complex*
    private let plan: fftwf_plan

    /// FFTW's planner is not thread-safe: every plan in this module is made and destroyed
    /// under this one lock.
    static let planLock = NSLock()

    public init(settings: FeatureSettings = FeatureSettings()) {
        self.settings = settings
        let n = settings.fftSize, bins = n / 2 + 1
        window = (0 ..< settings.windowLength).map { 0.5 - 0.5 * cos(2 * Float.pi * Float($0) / Float(settings.windowLength)) }
        filters = Self.melFilters(settings)
        support = (0 ..< settings.bands).map { [filters] m in
            let row = filters[m * bins ..< (m + 1) * bins]
            guard let first = row.firstIndex(where: { $0 != 0 }), let last = row.lastIndex(where: { $0 != 0 }) else { return 0 ..< 0 }
            return (first - m * bins) ..< (last - m * bins + 1)
        }
        let real = fftwf_alloc_real(n)!
        let complex = fftwf_alloc_complex(bins)!
        input = real
        output = OpaquePointer(complex)
        plan = Self.makePlan(size: n, real: real, complex: complex)
    }

    private static func makePlan(size: Int, real: UnsafeMutablePointer<Float>, complex: UnsafeMutablePointer<fftwf_complex>) -> fftwf_plan {
        planLock.lock()
        defer { planLock.unlock() }
        return fftwf_plan_dft_r2c_1d(Int32(size), real, complex, UInt32(FFTW_ESTIMATE))
    }

    deinit {
        Self.planLock.lock()
        fftwf_destroy_plan(plan)
        Self.planLock.unlock()
        fftwf_free(input)
        fftwf_free(UnsafeMutableRawPointer(output))
    }

    public func frameCount(samples: Int) -> Int {
        samples < settings.windowLength ? 0 : 1 + (samples - settings.windowLength) / settings.hopLength
    }

    /// (frames, bands) row-major.
    public func features(_ samples: [Float]) -> [Float] {
        let frames = frameCount(samples: samples.count), n = settings.fftSize, bins = n / 2 + 1, bands = settings.bands
        var out = [Float](repeating: 0, count: frames * bands)
        var power = [Float](repeating: 0, count: bins)
        let complex = UnsafeMutablePointer<Float>(output)  // interleaved re, im
        for f in 0 ..< frames {
            let start = f * settings.hopLength
            for i in 0 ..< settings.windowLength { input[i] = samples[start + i] * window[i] }
            for i in settings.windowLength ..< n { input[i] = 0 }
            fftwf_execute(plan)
            for k in 0 ..< bins {
                let re = complex[2 * k], im = complex[2 * k + 1]
                power[k] = re * re + im * im
            }
            for m in 0 ..< bands {
                var e: Float = 0
                for k in support[m] { e += filters[m * bins + k] * power[k] }
                out[f * bands + m] = logf(max(e, 1e-10))
            }
        }
        return out
    }

    static func hzToMel(_ f: Double) -> Double { 2595 * log10(1 + f / 700) }
    static func melToHz(_ m: Double) -> Double { 700 * (pow(10, m / 2595) - 1) }

    /// Triangles between bands+2 points equally spaced on the mel scale, evaluated at the FFT
    /// bin frequencies k · rate / n, unnormalised (peak 1).
    static func melFilters(_ s: FeatureSettings) -> [Float] {
        let bins = s.fftSize / 2 + 1
        let lo = hzToMel(s.lowHz), hi = hzToMel(s.highHz)
        let points = (0 ..< s.bands + 2).map { melToHz(lo + (hi - lo) * Double($0) / Double(s.bands + 1)) }
        var weights = [Float](repeating: 0, count: s.bands * bins)
        for m in 0 ..< s.bands {
            let left = points[m], centre = points[m + 1], right = points[m + 2]
            for k in 0 ..< bins {
                let f = Double(k) * Double(s.sampleRate) / Double(s.fftSize)
                let w = max(0, min((f - left) / (centre - left), (right - f) / (right - centre)))
                weights[m * bins + k] = Float(w)
            }
        }
        return weights
    }
}
