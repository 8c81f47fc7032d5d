import FileIO
import Foundation
import Testing
@testable import Runtime

/// A run folder on a read-only disk is reported with the real errno (not the "No such file or
/// directory" an overwritten errno gave).
@Suite(.enabled(if: ScratchDisk.available, ScratchDisk.skipReason))
struct ReadOnlyRunFolderTests {
    @Test func theLockAndEveryFileNameTheRealError() throws {
        let disk = try ScratchDisk(bytes: 64 << 10)
        try FileManager.default.createDirectory(atPath: disk.path + "/run", withIntermediateDirectories: false)
        try disk.remountReadOnly()
        let folder = RunFolder(disk.path + "/run")
        try folder.create()   // it exists: nothing to make

        let lock = #expect(throws: RunFolderError.self) { try folder.lock() }
        #expect(lock?.file?.code == EROFS)
        #expect(lock?.description.hasPrefix("cannot open the lock file \(folder.lockFile.path): Read-only file system (errno 30)") == true)
        #expect(lock?.description.contains("read-only") == true && lock?.description.contains("No such file") == false)

        let token = #expect(throws: RunFolderError.self) { try folder.writeNewToken() }
        #expect(token?.file?.code == EROFS && token?.description.contains("Read-only file system") == true)
        let config = #expect(throws: RunFolderError.self) { try folder.write("seed: 1\n", to: folder.configFile) }
        #expect(config?.file?.code == EROFS)
        let create = #expect(throws: RunFolderError.self) { try RunFolder(disk.path + "/other/run").create() }
        #expect(create?.file?.code == EROFS && create?.description.contains("\(disk.path)/other") == true)
        let metrics = #expect(throws: FileError.self) { try MetricsWriter(file: folder.metricsFile, truncate: true) }
        #expect(metrics?.code == EROFS)
    }
}

/// A failed start removes what it made and nothing else.
struct StartAttemptTests {
    func scratch() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-start-\(UInt64.random(in: 0 ... .max))").path
    }

    @Test func aFailedFirstStartLeavesNothingBehind() throws {
        let root = scratch()
        let folder = RunFolder(root + "/runs/a")
        let attempt = folder.beginStart()
        try folder.create()
        let lock = try folder.lock()
        _ = try folder.writeNewToken()
        try folder.write("seed: 1\n", to: folder.configFile)
        try LedgerFiles(folder: folder.ledgerFolder).append([.init(step: 1, epoch: 0, examples: [1, 2])])
        try MetricsWriter(file: folder.metricsFile, truncate: true).write(FullDiskTests.metrics(step: 1))
        let result = attempt.rollback()
        withExtendedLifetime(lock) {}
        #expect(result.failures.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: root), "\(result)")
        #expect(result.removed.contains(folder.tokenFile.path) && result.removed.contains(root))
    }

    @Test func aFailedStartInAnExistingFolderKeepsItsTokenAndFiles() throws {
        let root = scratch()
        let folder = RunFolder(root)
        try FileManager.default.createDirectory(atPath: root + "/checkpoints", withIntermediateDirectories: true)
        try "keep me\n".write(toFile: root + "/checkpoints/step-7.ckpt", atomically: true, encoding: .utf8)
        try "my notes\n".write(toFile: root + "/notes.txt", atomically: true, encoding: .utf8)
        try AtomicFile.write("old-token\n", to: folder.tokenFile.path, mode: 0o600)

        let attempt = folder.beginStart()
        try folder.create()
        let lock = try folder.lock()
        _ = try folder.writeNewToken()   // today's launch replaces it
        try folder.write("seed: 1\n", to: folder.configFile)
        try MetricsWriter(file: folder.metricsFile, truncate: true).write(FullDiskTests.metrics(step: 1))
        let result = attempt.rollback()
        withExtendedLifetime(lock) {}

        #expect(result.failures.isEmpty && result.restored == [folder.tokenFile.path])
        #expect(try FileReader.readText(folder.tokenFile.path) == "old-token\n")
        #expect((try FileManager.default.attributesOfItem(atPath: folder.tokenFile.path)[.posixPermissions] as? Int) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).sorted() == ["checkpoints", "notes.txt", "token"])
        #expect(try FileReader.readText(root + "/checkpoints/step-7.ckpt") == "keep me\n")
    }

    @Test func aCommittedStartIsNotRolledBack() throws {
        let root = scratch()
        let folder = RunFolder(root)
        let attempt = folder.beginStart()
        try folder.create()
        _ = try folder.writeNewToken()
        attempt.commit()
        #expect(attempt.rollback().removed.isEmpty)
        #expect(FileManager.default.fileExists(atPath: folder.tokenFile.path))
    }
}
