//! A processor's boot id: the second half of its lease owner (`node/boot`),
//! new at every start. It names the process it runs in (pid and start
//! time, then a random part), so a curfew starting on a host can tell a
//! previous boot of its node that is gone — whose runs it takes back at
//! once — from one that still runs there: another curfew sharing the
//! node's name (the default name is the host's, so every curfew on one
//! host shares it unless `jobs.node` is set), whose leases are valid and
//! whose runs must not be taken.

use crate::supervisor::procfs;

/// `<pid>.<start ticks>.<random>`.
pub fn new_boot() -> String {
    let pid = std::process::id();
    let start = own_start_ticks().unwrap_or(0);
    format!("{pid}.{start}.{}", uuid::Uuid::new_v4().simple())
}

/// Whether `boot` names a process other than this one that runs on this
/// host now: same pid, same start time. A boot id of an older curfew (a
/// bare random id), or one whose process is gone or whose pid now belongs
/// to another process, is not running.
pub fn runs_elsewhere_here(boot: &str) -> bool {
    let Some((pid, start)) = parse(boot) else {
        return false;
    };
    if pid == std::process::id() {
        // This process: a previous boot in a recycled pid namespace (a
        // container's restart) had this pid; it is gone.
        return false;
    }
    start_ticks_of(pid).is_some_and(|s| s == start)
}

fn parse(boot: &str) -> Option<(u32, u64)> {
    let mut parts = boot.splitn(3, '.');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((pid, start))
}

fn own_start_ticks() -> Option<u64> {
    start_ticks_of(std::process::id())
}

fn start_ticks_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let p = procfs::parse(i32::try_from(pid).ok()?, &stat)?;
    // A zombie is gone: it only waits for its parent.
    (p.state != 'Z').then_some(p.start_ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_names_its_process() {
        let boot = new_boot();
        let (pid, start) = parse(&boot).expect("parses");
        assert_eq!(pid, std::process::id());
        assert_eq!(Some(start), own_start_ticks());
        // This process is not "elsewhere".
        assert!(!runs_elsewhere_here(&boot));
    }

    #[test]
    fn another_live_process_runs_and_a_gone_or_reused_pid_does_not() {
        // No reaper test may reap this child meanwhile.
        let _children = crate::supervisor::reaper::TEST_CHILDREN.blocking_lock();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let start = start_ticks_of(pid).expect("its start");
        assert!(runs_elsewhere_here(&format!("{pid}.{start}.abc")));
        // The same pid with another start: a reused pid.
        assert!(!runs_elsewhere_here(&format!("{pid}.{}.abc", start + 1)));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!runs_elsewhere_here(&format!("{pid}.{start}.abc")));
        // An older curfew's boot id (random only) and garbage.
        for boot in ["0123456789abcdef0123456789abcdef", "", "1.2", "x.y.z"] {
            assert!(!runs_elsewhere_here(boot), "{boot:?}");
        }
    }
}
