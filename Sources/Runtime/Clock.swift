import Foundation

/// Monotonic seconds since the process started: for deadlines, never for wall time.
enum Monotonic {
    private static let origin = ContinuousClock.now
    static var now: Double {
        let d = ContinuousClock.now - origin
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}

func randomBytes(_ n: Int) -> Data {
    var g = SystemRandomNumberGenerator()
    return Data((0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &g) })
}
