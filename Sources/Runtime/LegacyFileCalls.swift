import FileIO
import Foundation

// The non-throwing forms CoordinatorCore calls today. They no longer trap: a line the disk
// refuses is held in the writer's backlog and written with a later line. But they hide the
// error from the run's policy (`checkpoint.on_write_failure`). Delete this file once the
// coordinator calls the throwing forms (issue 11).

extension MetricsWriter {
    /// The file is opened now when it can be; otherwise by the first line that can be written.
    @available(*, deprecated, message: "use init(file:truncate:) and handle its FileError")
    convenience init(url: URL, truncate: Bool = true) {
        self.init(unopened: url)
        if truncate { _ = try? FileAppender(path: url.path, truncate: true) }
    }

    @available(*, deprecated, message: "use write(_:), whose LineWriteError says that the line is held and why")
    func append(_ record: some Encodable) {
        try? write(record)
    }
}

extension LedgerFiles {
    @available(*, deprecated, message: "use syncFile(epoch:), which says when the epoch's file is incomplete or not durable")
    func sync(epoch: Int) {
        try? syncFile(epoch: epoch)
    }
}
