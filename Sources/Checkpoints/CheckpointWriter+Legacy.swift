import Foundation

// The completion-tuple form of `submit`, for the coordinator until it takes
// `CheckpointWriteReport`s (issue 11). Delete this file then.
extension CheckpointWriter {
    public typealias Completion = @Sendable (_ step: Int, _ result: Result<URL, CheckpointError>, _ seconds: Double, _ bytes: Int) -> Void

    @available(*, deprecated, message: "use submit(_:report:): its failures name the file, the errno and the disk")
    public func submit(_ checkpoint: Checkpoint, completion: @escaping Completion) {
        let store = self.store
        submit(checkpoint) { (report: CheckpointWriteReport) in
            switch report.outcome {
            case let .written(url):
                completion(report.step, .success(url), report.seconds, report.bytes)
            case let .failed(failure):
                completion(report.step, .failure(failure.error), report.seconds, report.bytes)
            case let .superseded(newer):
                completion(report.step, .failure(.io(store.path(forStep: report.step).path, "superseded by the checkpoint of step \(newer) before it was written")), 0, 0)
            }
        }
    }
}
