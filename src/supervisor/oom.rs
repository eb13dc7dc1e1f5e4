//! Reading the kernel's count of OOM kills in curfew's memory cgroup, so a
//! worker killed by SIGKILL can be reported as killed by the OOM killer when
//! the count rose, not just "probably". cgroup v2 (`memory.events`,
//! `oom_kill N`) and v1 (`memory.oom_control`, `oom_kill N`) are read; where
//! neither is readable the count is unknown and the report says "likely".

use std::path::PathBuf;

/// The OOM-kill counter file of this process's memory cgroup, if any.
fn counter_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return out;
    };
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2 unified hierarchy.
            out.push(
                PathBuf::from("/sys/fs/cgroup")
                    .join(rel)
                    .join("memory.events"),
            );
            out.push(PathBuf::from("/sys/fs/cgroup/memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            out.push(
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.oom_control"),
            );
            // Inside a container the cgroup is usually mounted at the root.
            out.push(PathBuf::from("/sys/fs/cgroup/memory/memory.oom_control"));
        }
    }
    out
}

/// OOM kills so far in curfew's memory cgroup (`None` if unknown).
pub fn oom_kills() -> Option<u64> {
    counter_files()
        .into_iter()
        .find_map(|f| parse(&std::fs::read_to_string(f).ok()?))
}

fn parse(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_both_formats() {
        assert_eq!(
            super::parse("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            super::parse("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"),
            Some(7)
        );
        assert_eq!(super::parse("nothing\n"), None);
    }

    #[test]
    fn reads_something_on_linux() {
        // On this machine either cgroup version exposes the counter; where it
        // does not, None is the honest answer and must not panic.
        let _ = super::oom_kills();
    }
}
