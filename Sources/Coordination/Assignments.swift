/// Units of work (training micro-batches, evaluation batches) that are handed to members with a
/// deadline and taken back when the member fails or is late. One implementation for both rounds.
protocol Assignable {
    var status: StepRound.Status { get set }
}

extension Array where Element: Assignable {
    /// Hands the first pending unit to `session`; returns its index.
    mutating func assignFirstPending(to session: SessionID, deadline: Double) -> Int? {
        guard let i = firstIndex(where: { $0.status == .pending }) else { return nil }
        self[i].status = .assigned(to: session, deadline: deadline)
        return i
    }

    /// Returns every unfinished unit assigned to `session` to the pool.
    mutating func release(_ session: SessionID) -> [Int] {
        var released: [Int] = []
        for i in indices {
            if case .assigned(to: session, _) = self[i].status {
                self[i].status = .pending
                released.append(i)
            }
        }
        return released
    }

    /// Units past their deadline go back to the pool; returns who held them.
    mutating func expire(now: Double) -> [(session: SessionID, index: Int)] {
        var late: [(SessionID, Int)] = []
        for i in indices {
            if case let .assigned(to: session, deadline: deadline) = self[i].status, now > deadline {
                self[i].status = .pending
                late.append((session, i))
            }
        }
        return late
    }
}
