import CFFTW
import Foundation
import Tensors

#if canImport(Glibc)
import Glibc
#endif

/// Signal-level augmentation and channel simulation, every random choice drawn from a
/// caller-supplied counter-based generator (so an example's augmentation is a pure function of
/// (seed, epoch, example)). Nothing is downloaded: noise and room responses are synthesised.
public enum Augmentation {
    /// Telephone channel: band-pass 300–3400 Hz (4th-order Butterworth-like cascade of biquads).
    public static func telephone(_ x: [Float], sampleRate: Int) -> [Float] {
        var y = Biquad.highPass(cutoff: 300, sampleRate: sampleRate).run(x)
        y = Biquad.highPass(cutoff: 300, sampleRate: sampleRate).run(y)
        y = Biquad.lowPass(cutoff: 3400, sampleRate: sampleRate).run(y)
        return Biquad.lowPass(cutoff: 3400, sampleRate: sampleRate).run(y)
    }

    /// Noise of spectral slope `colour`: 0 white, 1 pink (1/f), 2 brown (1/f²); unit RMS.
    public static func colouredNoise(count: Int, colour: Double, rng: inout SeededRandom) -> [Float] {
        guard count > 0 else { return [] }
        let white = (0 ..< count).map { _ in rng.nextGaussian() }
        guard colour > 0 else { return normalised(white) }
        // Shape the spectrum: |H(f)| = f^(−colour/2).
        let shaped = FFTConvolver.shapeSpectrum(white) { f in f == 0 ? 0 : Float(pow(Double(f), -colour / 2)) }
        return normalised(shaped)
    }

    /// Adds `noise` (repeated as needed) to `x` at the given signal-to-noise ratio in dB.
    public static func addNoise(_ x: [Float], _ noise: [Float], snr: Double) -> [Float] {
        guard !noise.isEmpty, !x.isEmpty else { return x }
        let signalPower = power(x), noisePower = power(noise)
        guard signalPower > 0, noisePower > 0 else { return x }
        let scale = Float((signalPower / noisePower / pow(10, snr / 10)).squareRoot())
        return x.enumerated().map { $0.element + scale * noise[$0.offset % noise.count] }
    }

    /// Room impulse response by the image method (Allen & Berkley, 1979) for a shoebox room,
    /// with the wall absorption that gives reverberation time `rt60` (Sabine), normalised to a
    /// unit direct path.
    public static func roomImpulseResponse(room: (Double, Double, Double), source: (Double, Double, Double),
                                           microphone: (Double, Double, Double), rt60: Double,
                                           sampleRate: Int, maxOrder: Int = 8) -> [Float] {
        let c = 343.0
        let volume = room.0 * room.1 * room.2
        let surface = 2 * (room.0 * room.1 + room.0 * room.2 + room.1 * room.2)
        let absorption = min(0.99, 0.161 * volume / (surface * max(rt60, 0.05)))
        let beta = (1 - absorption).squareRoot()  // pressure reflection coefficient
        let length = Int(rt60 * Double(sampleRate)) + 1
        var h = [Float](repeating: 0, count: length)
        let dims = [room.0, room.1, room.2], src = [source.0, source.1, source.2], mic = [microphone.0, microphone.1, microphone.2]
        let direct = sqrt(zip(src, mic).map { ($0 - $1) * ($0 - $1) }.reduce(0, +))
        for nx in -maxOrder ... maxOrder {
            for ny in -maxOrder ... maxOrder {
                for nz in -maxOrder ... maxOrder {
                    for px in 0 ... 1 { for py in 0 ... 1 { for pz in 0 ... 1 {
                        let n = [nx, ny, nz], p = [px, py, pz]
                        var d2 = 0.0
                        var reflections = 0
                        for k in 0 ..< 3 {
                            let image = Double(1 - 2 * p[k]) * src[k] + 2 * Double(n[k]) * dims[k]
                            d2 += (image - mic[k]) * (image - mic[k])
                            reflections += abs(n[k] - p[k]) + abs(n[k])
                        }
                        let d = sqrt(d2)
                        let delay = Int((d / c * Double(sampleRate)).rounded())
                        guard delay < length else { continue }
                        h[delay] += Float(pow(beta, Double(reflections)) * direct / max(d, 1e-3))
                    } } }
                }
            }
        }
        return h
    }

    /// A random plausible room: 3–8 m × 3–6 m × 2.5–3.5 m, RT60 0.2–0.6 s.
    public static func randomRoomResponse(sampleRate: Int, rng: inout SeededRandom) -> [Float] {
        let room = (3 + 5 * Double(rng.nextUnitFloat()), 3 + 3 * Double(rng.nextUnitFloat()), 2.5 + Double(rng.nextUnitFloat()))
        func inside(_ extent: Double) -> Double { 0.5 + (extent - 1) * Double(rng.nextUnitFloat()) }
        let source = (inside(room.0), inside(room.1), 1.2 + 0.6 * Double(rng.nextUnitFloat()))
        let mic = (inside(room.0), inside(room.1), 0.8 + 0.8 * Double(rng.nextUnitFloat()))
        let rt60 = 0.2 + 0.4 * Double(rng.nextUnitFloat())
        return roomImpulseResponse(room: room, source: source, microphone: mic, rt60: rt60, sampleRate: sampleRate, maxOrder: 6)
    }

    /// Convolves with a room response and restores the input's level.
    public static func reverberate(_ x: [Float], impulse: [Float]) -> [Float] {
        let wet = Array(FFTConvolver.convolve(x, impulse).prefix(x.count))
        let gain = Float((power(x) / max(power(wet), 1e-12)).squareRoot())
        return wet.map { $0 * gain }
    }

    public static func gain(_ x: [Float], decibels: Double) -> [Float] {
        let g = Float(pow(10, decibels / 20))
        return x.map { $0 * g }
    }

    /// Speed perturbation: the signal played `factor` times faster (pitch moves with it), by
    /// band-limited resampling.
    public static func speed(_ x: [Float], factor: Double, sampleRate: Int) throws -> [Float] {
        guard abs(factor - 1) > 1e-6 else { return x }
        let asIf = Audio(samples: x, sampleRate: Int((Double(sampleRate) * factor).rounded()))
        return try Resampler.resample(asIf, to: sampleRate).samples
    }

    /// The documented channel-degradation recipe for the held-out "channel" copy:
    /// room reverberation (image method, RT60 0.2–0.6 s), telephone band 300–3400 Hz,
    /// gain −6…+3 dB, then white noise at 10–20 dB SNR. All drawn from `rng`.
    public static func degradeChannel(_ x: [Float], sampleRate: Int, rng: inout SeededRandom) -> [Float] {
        var y = reverberate(x, impulse: randomRoomResponse(sampleRate: sampleRate, rng: &rng))
        y = telephone(y, sampleRate: sampleRate)
        y = gain(y, decibels: -6 + 9 * Double(rng.nextUnitFloat()))
        let noise = colouredNoise(count: y.count, colour: 0, rng: &rng)
        return addNoise(y, noise, snr: 10 + 10 * Double(rng.nextUnitFloat()))
    }

    static func power(_ x: [Float]) -> Double {
        x.isEmpty ? 0 : x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(x.count)
    }

    static func normalised(_ x: [Float]) -> [Float] {
        let rms = Float(power(x).squareRoot())
        return rms > 0 ? x.map { $0 / rms } : x
    }
}

/// A second-order IIR section (RBJ audio-EQ cookbook), direct form I.
public struct Biquad: Sendable {
    let b0, b1, b2, a1, a2: Double

    public static func lowPass(cutoff: Double, sampleRate: Int, q: Double = 0.7071) -> Biquad {
        let w = 2 * Double.pi * cutoff / Double(sampleRate), alpha = sin(w) / (2 * q), c = cos(w), a0 = 1 + alpha
        return Biquad(b0: (1 - c) / 2 / a0, b1: (1 - c) / a0, b2: (1 - c) / 2 / a0, a1: -2 * c / a0, a2: (1 - alpha) / a0)
    }

    public static func highPass(cutoff: Double, sampleRate: Int, q: Double = 0.7071) -> Biquad {
        let w = 2 * Double.pi * cutoff / Double(sampleRate), alpha = sin(w) / (2 * q), c = cos(w), a0 = 1 + alpha
        return Biquad(b0: (1 + c) / 2 / a0, b1: -(1 + c) / a0, b2: (1 + c) / 2 / a0, a1: -2 * c / a0, a2: (1 - alpha) / a0)
    }

    public func run(_ x: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        var x1 = 0.0, x2 = 0.0, y1 = 0.0, y2 = 0.0
        for i in 0 ..< x.count {
            let xi = Double(x[i])
            let yi = b0 * xi + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x2 = x1; x1 = xi; y2 = y1; y1 = yi
            y[i] = Float(yi)
        }
        return y
    }
}

/// FFT-based convolution and spectral shaping with FFTW.
public enum FFTConvolver {
    private static var planLock: NSLock { LogMelExtractor.planLock }

    /// Full linear convolution (length a + b − 1).
    public static func convolve(_ a: [Float], _ b: [Float]) -> [Float] {
        guard !a.isEmpty, !b.isEmpty else { return [] }
        let n = a.count + b.count - 1
        var size = 1
        while size < n { size <<= 1 }
        let fa = forward(a, size: size), fb = forward(b, size: size)
        var product = [Float](repeating: 0, count: fa.count)
        for k in 0 ..< fa.count / 2 {
            let (ar, ai, br, bi) = (fa[2 * k], fa[2 * k + 1], fb[2 * k], fb[2 * k + 1])
            product[2 * k] = ar * br - ai * bi
            product[2 * k + 1] = ar * bi + ai * br
        }
        return Array(inverse(product, size: size).prefix(n))
    }

    /// Multiplies the spectrum of x by gain(k / size) and transforms back (same length).
    static func shapeSpectrum(_ x: [Float], gain: (Float) -> Float) -> [Float] {
        var size = 1
        while size < x.count { size <<= 1 }
        var spectrum = forward(x, size: size)
        for k in 0 ..< spectrum.count / 2 {
            let g = gain(Float(k) / Float(size))
            spectrum[2 * k] *= g
            spectrum[2 * k + 1] *= g
        }
        return Array(inverse(spectrum, size: size).prefix(x.count))
    }

    /// Interleaved (re, im) of the size/2 + 1 bins of the zero-padded real signal.
    static func forward(_ x: [Float], size: Int) -> [Float] {
        let input = fftwf_alloc_real(size)!, output = fftwf_alloc_complex(size / 2 + 1)!
        defer { fftwf_free(input); fftwf_free(output) }
        for i in 0 ..< size { input[i] = i < x.count ? x[i] : 0 }
        planLock.lock()
        let plan = fftwf_plan_dft_r2c_1d(Int32(size), input, output, UInt32(FFTW_ESTIMATE))
        planLock.unlock()
        fftwf_execute(plan)
        planLock.lock()
        fftwf_destroy_plan(plan)
        planLock.unlock()
        let raw = UnsafeMutableRawPointer(output).assumingMemoryBound(to: Float.self)
        return Array(UnsafeBufferPointer(start: raw, count: 2 * (size / 2 + 1)))
    }

    static func inverse(_ spectrum: [Float], size: Int) -> [Float] {
        let input = fftwf_alloc_complex(size / 2 + 1)!, output = fftwf_alloc_real(size)!
        defer { fftwf_free(input); fftwf_free(output) }
        let raw = UnsafeMutableRawPointer(input).assumingMemoryBound(to: Float.self)
        for i in 0 ..< 2 * (size / 2 + 1) { raw[i] = spectrum[i] }
        planLock.lock()
        let plan = fftwf_plan_dft_c2r_1d(Int32(size), input, output, UInt32(FFTW_ESTIMATE))
        planLock.unlock()
        fftwf_execute(plan)
        planLock.lock()
        fftwf_destroy_plan(plan)
        planLock.unlock()
        return (0 ..< size).map { output[$0] / Float(size) }
    }
}
