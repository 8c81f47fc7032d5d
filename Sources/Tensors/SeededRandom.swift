/// Counter-based random numbers: every value is a pure function of (key, counter).
///
/// Randomness that depends on which worker computed what breaks reproducibility, so csptrain
/// never keeps per-process generator state for training randomness: it derives a key from
/// (seed, purpose, epoch, example, ...) with ``key(_:)`` and draws values from that key's stream.
/// The mixing function is SplitMix64's finaliser (Steele, Lea & Flood, 2014).
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private let key: UInt64
    private var counter: UInt64 = 0

    public init(key: UInt64) { self.key = key }

    /// A stream keyed by several words (seed first, then a purpose tag and indices).
    public init(_ words: UInt64...) { self.init(key: Self.key(words)) }

    public static func key(_ words: [UInt64]) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3
        for w in words { h = mix(h ^ mix(w &+ 0x9E37_79B9_7F4A_7C15)) }
        return h
    }

    @inline(__always)
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        counter &+= 1
        return Self.mix(key &+ counter &* 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal (Box–Muller).
    public mutating func nextGaussian() -> Float {
        let u1 = max(Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0), 1e-300)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }
}

// Foundation-free log/cos so that Tensors stays dependency-light.
#if canImport(Glibc)
import Glibc
@inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) private func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
