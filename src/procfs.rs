//! What the kernel says of processes and of this machine (`/proc`): whether a pid is still the
//! process that was recorded (its start time), which boot and PID namespace this is.

use std::fs;

/// What /proc/PID/stat says of a process.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// R, S, D, Z (zombie), X (dead), ...
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// When it started, in clock ticks since boot: with the pid, it names one process for good.
    pub start: u64,
}

/// /proc/PID/stat of `pid`, or `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22 of stat is the start time; `rest` begins at field 3.
        start: fields.get(19)?.parse().ok()?,
    })
}

/// A process's start time, in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// Whether `pid` is the process that started at `start` and has not ended (a zombie has).
pub fn is_running(pid: i32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && s.state != 'Z' && s.state != 'X')
}

/// Names the pid space this process lives in: the kernel's boot id and the PID namespace. Two
/// processes with the same value can check each other's pids; others cannot.
pub fn pid_space() -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-boot".into());
    let namespace = fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{boot}/{namespace}")
}

/// This machine's host name, for people to read.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_stat() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!("RSD".contains(s.state), "{s:?}");
        assert_eq!(s.ppid, unsafe { libc::getppid() });
        assert!(s.start > 0);
        assert!(is_running(me, s.start));
        assert!(!is_running(me, s.start + 1));
    }

    #[test]
    fn a_reaped_child_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid);
        child.wait().unwrap();
        assert!(start.is_none_or(|s| !is_running(pid, s)));
        assert!(pid_space().contains("pid:["), "{}", pid_space());
    }
}
