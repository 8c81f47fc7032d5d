import Coordination
import Foundation

/// What the chunk streams (``ChunkStreamServer``) ask of the shell: the port workers are told,
/// and which member a stream belongs to.
extension CoordinatorShell {
    /// Workers are told to send their chunks on the stream at `port` from now on (their welcome
    /// names it).
    func offerChunkStream(port: Int) { run.chunkStreamPort = port }

    /// The member (its connection and name) a chunk stream proves it belongs to, if any.
    func streamMember(session: Data, serverNonce: Data, mac: Data) -> (pipe: UInt32, name: String)? {
        machine.streamMember(session: SessionID(session), serverNonce: serverNonce, mac: mac).map { ($0.pipe, $0.name) }
    }

    /// A model went on a chunk stream instead of into a reply.
    func weightsWentOnStream() { streamWeights += 1 }

    /// Whether the member that joined on `pipe` is still one (its stream closes once it is not).
    func isMemberConnection(_ pipe: UInt32) -> Bool { machine.membership.members.values.contains { $0.pipe == pipe } }
}
