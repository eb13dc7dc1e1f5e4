//! Build script: records the git commit the binary was built from, for
//! `curfew --version` (`0.1.0 (abc123def456)`).
//!
//! `CURFEW_BUILD_COMMIT` in the build's environment wins (a packager
//! building from a tarball without `.git`); without either the commit is
//! `unknown`. Cargo re-runs this only when HEAD or the branch it points at
//! moves, not on every build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CURFEW_BUILD_COMMIT");
    let commit = std::env::var("CURFEW_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Watch HEAD and, when it names a branch, that branch's ref file (or
    // packed-refs where the ref is packed). A path that does not exist would
    // make cargo re-run this on every build, so only existing ones are named.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &head_ref]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=BUILT_FROM_COMMIT={commit}");
}
