import Checkpoints
import Configuration
import Foundation
import Logging

/// The one way a coordinator starts, for `launch` and `coordinator` alike: create and lock the
/// run folder, decide where the run starts (fresh or a checkpoint), settle the token, build the
/// service and listen. A start that fails removes only what it created (a token that existed
/// before stays), while the folder's lock is still held.
///
/// The token: `--token-file` or `CSPTRAIN_TOKEN` when given; otherwise the run folder's `token`
/// whenever one exists (fresh start, `--resume`, `--resume auto` alike: workers that outlived a
/// coordinator, or were started with that file, rejoin); a new one only when there is none.
public struct CoordinatorStartup: Sendable {
    public struct Request: Sendable {
        public var folder: RunFolder
        public var config: RunConfiguration
        public var resume = ResumeRequest.no
        public var allowChangedSettings = false
        public var listen: String
        /// `--token-file`; nil: CSPTRAIN_TOKEN, else the run folder's token.
        public var tokenFile: String?
        public var progress: @Sendable (ProgressEvent) -> Void = { _ in }
        public init(folder: RunFolder, config: RunConfiguration, listen: String) {
            self.folder = folder
            self.config = config
            self.listen = listen
        }
    }

    public let service: CoordinatorService
    /// The address workers dial.
    public let url: String
    /// The token's file, when the token came from one (workers on this machine use it).
    public let tokenFile: String?
    let attempt: StartAttempt
    let lock: RunLock

    /// Starts serving nothing yet: call ``commit()`` once the run is under way (after workers
    /// were spawned), or ``abandon()`` if what follows fails.
    public static func start(_ r: Request, logger: Logger) async throws -> CoordinatorStartup {
        let folder = r.folder
        let attempt = folder.beginStart()
        try folder.create()
        let lock: RunLock
        do { lock = try folder.lock() } catch {
            attempt.rollback()
            throw error
        }
        do {
            let start = try CoordinatorSetup.start(folder: folder, config: r.config, resume: r.resume,
                                                   allowChangedSettings: r.allowChangedSettings, logger: logger)
            var tokenFile = r.tokenFile
            if tokenFile == nil, ProcessInfo.processInfo.environment[RunToken.environmentVariable] == nil {
                if FileManager.default.fileExists(atPath: folder.tokenFile.path) {
                    tokenFile = folder.tokenFile.path
                    logger.info("using the run folder's token (workers started with it rejoin)", metadata: ["token_file": "\(folder.tokenFile.path)"])
                } else {
                    tokenFile = try folder.writeNewToken().path
                    logger.notice("wrote a new run token; workers need --token-file \(tokenFile!)")
                }
            }
            let token = try RunToken.load(file: tokenFile)
            let service = try CoordinatorService(config: r.config, runID: start.runID ?? CoordinatorSetup.newRunID(), token: token,
                                                 folder: folder, logger: logger, start: start, progress: r.progress)
            let url = try service.listen(r.listen)
            do { try await service.openRunFolder() } catch {
                service.close()
                throw error
            }
            return CoordinatorStartup(service: service, url: url, tokenFile: tokenFile, attempt: attempt, lock: lock)
        } catch {
            let undone = attempt.rollback()
            logger.debug("start failed; removed what it created: \(undone)")
            throw error
        }
    }

    /// The run is under way: what the start created is the run's now.
    public func commit() { attempt.commit() }

    /// What followed the start failed before the run got going: remove what the start created.
    public func abandon() {
        service.close()
        attempt.rollback()
    }

    /// Keeps the run folder locked until the caller is done.
    public func hold() { withExtendedLifetime(lock) {} }
}
