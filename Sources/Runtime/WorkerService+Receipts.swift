import Coordination
import Transport
import Wire

/// Tells the coordinator that a task's weights arrived (Proto: WeightsReceipt), beside the work:
/// the coordinator copies a model into only a few replies at once and counts each copy until
/// then. One receipt at a time on a context of its own; the next one, or the end of the attempt,
/// cancels one still unanswered (an unanswered receipt is only a copy the coordinator counts a
/// little longer, until the worker's first chunk names the version).
actor ReceiptSender {
    private let context: Context
    private let runID: String
    private let session: WorkerService.Session
    private var inFlight: Task<Void, Never>?

    init(context: Context, session: WorkerService.Session) throws {
        try context.setResendTime(.seconds(session.resendSeconds))
        self.context = context
        runID = session.runID
        self.session = session
    }

    /// Sends the receipt for `version` and returns without waiting for its answer.
    func send(_ version: UInt64) async throws {
        await stop()
        var request = Request()
        request.header = Csptrain_V1_Header.make(runID: runID, session: session.id)
        request.receipt = Csptrain_V1_WeightsReceipt.with { $0.weightsVersion = version }
        let message = try Message(request.serializedBytes() as [UInt8])
        let context = self.context, timeout = Duration.seconds(session.requestTimeoutSeconds)
        inFlight = Task { _ = try? await context.request(message, timeout: timeout) }
    }

    /// Cancels the receipt in flight, if any, and waits until its request has ended.
    func stop() async {
        guard let last = inFlight else { return }
        inFlight = nil
        last.cancel()
        await last.value
    }
}
