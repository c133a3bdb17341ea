//! What `/proc` says of the measured process, for the bench tools.

/// The process's resident memory (`VmRSS` of `/proc/PID/status`), kB; 0 when unreadable.
#[allow(dead_code)] // not every tool measures memory
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The process's CPU time so far (user + system, `/proc/PID/stat`), in clock ticks (USER_HZ).
#[allow(dead_code)] // not every tool measures CPU
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The machine's idle time so far (idle + iowait of `/proc/stat`'s `cpu` line, all cores), in
/// clock ticks; 0 when unreadable.
#[allow(dead_code)] // not every tool measures the machine
pub fn idle_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .strip_prefix("cpu ")?
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(f.get(3)? + f.get(4)?)
        })
        .unwrap_or(0)
}
