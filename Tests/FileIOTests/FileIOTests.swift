import Foundation
import Testing
@testable import FileIO

/// The pieces that need no disk of their own. A full disk: RuntimeTests/FullDiskTests.
struct FileIOTests {
    func scratchFolder() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("csptrain-fileio-\(UInt64.random(in: 0 ... .max))").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func errorsCarryTheErrnoTextAndThePath() throws {
        let missing = scratchFolder() + "/nowhere/file"
        let error = #expect(throws: FileError.self) { try FileAppender(path: missing) }
        #expect(error?.code == ENOENT)
        #expect(error?.description == "cannot open \(missing): No such file or directory (errno 2)")
        let read = #expect(throws: FileError.self) { try FileReader.read(missing) }
        #expect(read?.operation == "open" && read?.reason == "No such file or directory")
    }

    @Test func aClosedPipeIsAnErrorNotASignal() throws {
        StandardOutput.ignoreBrokenPipeSignal()
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        close(ends[0])
        defer { close(ends[1]) }
        let error = #expect(throws: FileError.self) { try Descriptor.write(ends[1], Array("hello\n".utf8), path: "the pipe") }
        #expect(error?.code == EPIPE && error?.description.contains("Broken pipe") == true)
    }

    /// The backlog without a full disk: lines for a folder that does not exist yet are held,
    /// and written in order once it does.
    @Test func heldLinesGoOutInOrderOnceTheFileCanBeWritten() throws {
        let folder = scratchFolder() + "/later"
        let writer = LineWriter()
        for i in 1 ... 5 {
            let error = #expect(throws: LineWriteError.self) { try writer.append(Array("line \(i)\n".utf8), to: folder + "/a.txt") }
            #expect(error?.cause.code == ENOENT && error?.backlog.heldLines == i)
        }
        #expect(writer.holds(folder + "/a.txt"))
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try writer.append(Array("line 6\n".utf8), to: folder + "/a.txt")
        #expect(try String(contentsOfFile: folder + "/a.txt", encoding: .utf8) == (1 ... 6).map { "line \($0)\n" }.joined())
        #expect(writer.backlog == BacklogStatus())
    }

    @Test func theBacklogIsBoundedDroppingTheOldestAndCountingThem() throws {
        let folder = scratchFolder() + "/later"
        let writer = LineWriter(limits: BacklogLimits(maxLines: 3, maxBytes: 1 << 20))
        for i in 1 ... 5 { _ = try? writer.append(Array("\(i)\n".utf8), to: folder + "/a.txt") }
        #expect(writer.backlog.heldLines == 3 && writer.backlog.droppedLines == 2)
        let error = #expect(throws: LineWriteError.self) { try writer.flushBacklog() }
        #expect(error?.description.contains("3 lines (6 B) held in memory") == true)
        #expect(error?.description.contains("2 older lines dropped") == true)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try writer.flushBacklog()
        #expect(try String(contentsOfFile: folder + "/a.txt", encoding: .utf8) == "3\n4\n5\n")
        #expect(writer.backlog.heldLines == 0 && writer.backlog.droppedLines == 2)

        let bytes = LineWriter(limits: BacklogLimits(maxLines: 100, maxBytes: 10))
        for i in 1 ... 4 { _ = try? bytes.append(Array("abcd\(i)\n".utf8), to: folder + "/missing/b.txt") }
        #expect(bytes.backlog.heldLines == 1 && bytes.backlog.heldBytes == 6 && bytes.backlog.droppedLines == 3)
    }

    @Test func linesKeepTheirOrderAcrossFiles() throws {
        let folder = scratchFolder()
        let writer = LineWriter(createsFolders: true)
        try writer.append(Array("a1\n".utf8), to: folder + "/x/a")
        try writer.append(Array("b1\n".utf8), to: folder + "/x/b")
        #expect(try String(contentsOfFile: folder + "/x/a", encoding: .utf8) == "a1\n")
        #expect(try String(contentsOfFile: folder + "/x/b", encoding: .utf8) == "b1\n")
    }

    @Test func atomicWritesSetTheModeWhateverTheUmask() throws {
        let path = scratchFolder() + "/token"
        let old = umask(0o077)
        defer { umask(old) }
        try AtomicFile.write("secret\n", to: path, mode: 0o600)
        try AtomicFile.write("secret 2\n", to: path, mode: 0o600)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try FileReader.readText(path) == "secret 2\n")
        #expect(!FileManager.default.fileExists(atPath: path + ".tmp"))
    }

    @Test func foldersAreMadeWithTheirParentsAndReported() throws {
        let root = scratchFolder()
        #expect(try Folder.create(root + "/a/b/c") == [root + "/a", root + "/a/b", root + "/a/b/c"])
        #expect(try Folder.create(root + "/a/b/c") == [])
        try Folder.removeTree(root + "/a")
        #expect(!FileManager.default.fileExists(atPath: root + "/a"))
    }

    @Test func theDiskIsNamedByItsMountPoint() throws {
        let proc = try #require(Disk(containing: "/proc/self/status"))
        #expect(proc.mountPoint == "/proc" && proc.type == "proc")
        let root = try #require(Disk(containing: "/no/such/folder/file"))
        #expect(root.mountPoint == Disk(containing: "/")?.mountPoint)
        #expect(Disk.bytes(0) == "0 B" && Disk.bytes(65536) == "64 KiB" && Disk.bytes(1536 << 20) == "1.5 GiB")
        #expect(Disk.unescape("/mnt/my\\040runs") == "/mnt/my runs")
    }
}
