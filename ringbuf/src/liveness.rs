//! Who is attached and whether they are still alive.
//!
//! A process is identified by its pid plus its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot), so a recycled pid is not
//! mistaken for the original process. A zombie (killed but not yet reaped)
//! counts as dead.

/// A process identity: pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot, from `/proc/PID/stat`; 0 if unknown.
    pub start_time: u64,
}

/// What is known about a process recorded in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process exists, is not a zombie, and its start time matches.
    Alive,
    /// The process is gone, is a zombie, or the pid now belongs to another process.
    Dead,
}

impl ProcessId {
    /// The calling process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId { pid, start_time: stat_of(pid).map(|s| s.1).unwrap_or(0) }
    }

    /// Whether this process is still running.
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 {
            return Liveness::Dead;
        }
        match stat_of(self.pid) {
            Some((state, start)) => {
                let zombie = state == b'Z' || state == b'X' || state == b'x';
                let same = self.start_time == 0 || start == self.start_time;
                if zombie || !same { Liveness::Dead } else { Liveness::Alive }
            }
            None => Liveness::Dead,
        }
    }

    /// Shorthand for `liveness() == Liveness::Alive`.
    pub fn is_alive(&self) -> bool {
        self.liveness() == Liveness::Alive
    }
}

/// State letter and start time of `pid`, or `None` if there is no such process.
fn stat_of(pid: u32) -> Option<(u8, u64)> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or
    // parentheses; fields after the last ')' are plain.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.as_bytes().first().copied()?;
    // `state` is field 3; start time is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_has_a_start_time() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert!(me.is_alive());
    }

    #[test]
    fn wrong_start_time_is_dead() {
        let mut me = ProcessId::current();
        me.start_time += 1;
        assert_eq!(me.liveness(), Liveness::Dead);
    }

    #[test]
    fn reaped_and_zombie_children_are_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId { pid: child.id(), start_time: 0 };
        // Wait until it has exited but is not reaped: a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while id.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(id.liveness(), Liveness::Dead, "zombie must count as dead");
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Dead);
    }
}
