import CNNG

/// An error returned by nng, with the name of the operation that failed.
///
/// Every nng call in this module goes through ``nngCall(_:_:)`` so that an error always says
/// which operation failed and why, in nng's own words.
public struct NNGError: Error, Equatable, CustomStringConvertible, Sendable {
    /// nng's error code (`NNG_ETIMEDOUT`, ...).
    public let code: Int32
    /// What we were doing, for example `dial tcp://10.0.0.2:5555`.
    public let operation: String

    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    public var description: String {
        "\(operation): \(String(cString: nng_strerror(code)))"
    }

    /// "Closed", "timed out" and "protocol error" for `operation`, raised by this process's own
    /// code rather than by nng (a byte stream's requests, answered by tag).
    public static func closed(_ operation: String) -> NNGError { NNGError(code: Int32(NNG_ECLOSED.rawValue), operation: operation) }
    public static func timedOut(_ operation: String) -> NNGError { NNGError(code: Int32(NNG_ETIMEDOUT.rawValue), operation: operation) }
    public static func protocolError(_ operation: String) -> NNGError { NNGError(code: Int32(NNG_EPROTO.rawValue), operation: operation) }

    public var isTimeout: Bool { code == Int32(NNG_ETIMEDOUT.rawValue) }
    public var isClosed: Bool { code == Int32(NNG_ECLOSED.rawValue) }
    public var isCancelled: Bool { code == Int32(NNG_ECANCELED.rawValue) }
    /// The peer sent a message larger than this socket's receive limit, or a send was too large.
    public var isMessageTooLarge: Bool { code == Int32(NNG_EMSGSIZE.rawValue) }
    /// A connection could not be made (nothing listening, or the address is unreachable).
    public var isConnectionRefused: Bool {
        code == Int32(NNG_ECONNREFUSED.rawValue) || code == Int32(NNG_EADDRINVAL.rawValue)
    }
    /// The listening address is taken by another process.
    public var isAddressInUse: Bool { code == Int32(NNG_EADDRINUSE.rawValue) }
}

/// The single error path of this module: turns nng's return code into a thrown ``NNGError``.
@inline(__always)
func nngCall(_ operation: @autoclosure () -> String, _ result: Int32) throws(NNGError) {
    if result != 0 { throw NNGError(code: result, operation: operation()) }
}
