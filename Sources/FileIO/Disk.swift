#if canImport(Glibc)
import Glibc
#endif

/// The file system a path lives on: its mount point, type and source (from
/// /proc/self/mountinfo) and its free space (statvfs), so that an error can name the disk.
public struct Disk: Sendable, Equatable, CustomStringConvertible {
    /// Where it is mounted, e.g. "/", "/mnt/runs".
    public let mountPoint: String
    /// e.g. "ext4", "tmpfs", "nfs4".
    public let type: String
    /// e.g. "/dev/nvme0n1p2", "tmpfs", "server:/export".
    public let source: String
    /// Bytes an unprivileged writer may still use (f_bavail × f_frsize).
    public let freeBytes: UInt64
    public let totalBytes: UInt64
    public let readOnly: Bool

    /// The file system holding `path`, or its nearest existing parent folder; nil when none can
    /// be examined.
    public init?(containing path: String) {
        guard let existing = Self.nearestExisting(path), let resolved = realpath(existing, nil) else { return nil }
        let real = String(cString: resolved)
        free(resolved)
        var stats = statvfs()
        guard statvfs(real, &stats) == 0 else { return nil }
        freeBytes = UInt64(stats.f_bavail) * UInt64(stats.f_frsize)
        totalBytes = UInt64(stats.f_blocks) * UInt64(stats.f_frsize)
        readOnly = stats.f_flag & UInt(ST_RDONLY) != 0
        let mount = Self.mount(containing: real)
        mountPoint = mount?.point ?? "?"
        type = mount?.type ?? "?"
        source = mount?.source ?? "?"
    }

    public var description: String {
        "\(mountPoint) (\(type) from \(source)\(readOnly ? ", read-only" : ""), \(Self.bytes(freeBytes)) free of \(Self.bytes(totalBytes)))"
    }

    /// 0 B, 512 B, 64 KiB, 1.5 GiB.
    public static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        if unit == 0 { return "\(n) B" }
        let rounded = (value * 10).rounded() / 10
        return (rounded == rounded.rounded() ? "\(Int(rounded))" : "\(rounded)") + " " + units[unit]
    }

    static func nearestExisting(_ path: String) -> String? {
        var candidate = path.isEmpty ? "." : path
        while true {
            if access(candidate, F_OK) == 0 { return candidate }
            guard let slash = candidate.lastIndex(of: "/") else { return "." }
            if slash == candidate.startIndex { return "/" }
            candidate = String(candidate[..<slash])
        }
    }

    /// The mount whose mount point is the longest prefix of `path` (a resolved absolute path);
    /// of mounts stacked on one point, the last (topmost) one.
    static func mount(containing path: String) -> (point: String, type: String, source: String)? {
        guard let table = try? FileReader.read("/proc/self/mountinfo") else { return nil }
        var best: (point: String, type: String, source: String)?
        for line in String(decoding: table, as: UTF8.self).split(separator: "\n") {
            // id parent major:minor root mount-point options [optional fields] - type source super-options
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { continue }
            let point = unescape(fields[4])
            let inside = point == "/" || path == point || path.hasPrefix(point + "/")
            if inside, point.count >= (best?.point.count ?? 0) {
                best = (point, String(fields[dash + 1]), unescape(fields[dash + 2]))
            }
        }
        return best
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        let raw = Array(field.utf8)
        var i = 0
        while i < raw.count {
            if raw[i] == UInt8(ascii: "\\"), i + 3 < raw.count,
               let code = UInt8(String(decoding: raw[(i + 1) ... (i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(code)
                i += 4
            } else {
                bytes.append(raw[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
