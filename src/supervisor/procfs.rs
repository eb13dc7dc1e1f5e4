//! The few facts curfew reads from `/proc/<pid>/stat`: every process's state,
//! parent, process group, start and resident size. One parser for the reaper's
//! "children left?" sweep, the RSS of a worker's process group, and the
//! tests' process checks.

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `Z` for a zombie, `R`, `S`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// When it started, in clock ticks after the machine booted: with the
    /// pid, names one process (a reused pid has another start).
    pub start_ticks: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Page size assumed for `rss_pages` (the default on x86_64 and aarch64 Linux).
pub const PAGE: u64 = 4096;

/// Parse the text of `/proc/<pid>/stat`.
pub fn parse(pid: i32, stat: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may contain spaces or ')':
    // the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) pgrp(2) ... starttime(19) rss(21)
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
        rss_pages: f.get(21)?.parse().ok()?,
    })
}

/// Every process visible in /proc (those that vanish while reading are skipped).
pub fn all() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|pid| {
            parse(
                pid,
                &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_with_spaces_and_parens() {
        let line = "123 (my (odd) cmd) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 50 1000 250 18446744073709551615";
        let s = parse(123, line).expect("parses");
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.start_ticks, s.rss_pages),
            ('S', 1, 123, 50, 250)
        );
        assert_eq!(parse(1, "garbage"), None);
    }

    #[test]
    fn finds_this_process() {
        let me = std::process::id() as i32;
        let s = all()
            .into_iter()
            .find(|p| p.pid == me)
            .expect("self in /proc");
        assert!(s.rss_pages > 0);
    }
}
