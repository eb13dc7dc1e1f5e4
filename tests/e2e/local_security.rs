//! Another local user cannot take over curfew's control socket, squat its
//! default directory, or talk to it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `curfew serve` with `XDG_RUNTIME_DIR=xdg` (so the default control
/// socket is `xdg/curfew/curfew.sock`): its exit code and stderr.
fn serve_with_xdg(xdg: &std::path::Path) -> (i32, String) {
    let out = Command::new(CURFEW)
        .args([
            "serve",
            "-w",
            "1",
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--")
        .arg(TESTWORKER)
        .env("XDG_RUNTIME_DIR", xdg)
        .env_remove("CURFEW_CONTROL_SOCKET")
        .output()
        .expect("run curfew");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_squatted_default_directory_or_file_is_refused() {
    let xdg = tempfile::tempdir().expect("tempdir");
    let dir = xdg.path().join("curfew");
    // Made by "someone else": reachable by every user.
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, err) = serve_with_xdg(xdg.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refusing control socket") && err.contains("mode 777"),
        "{err}"
    );
    assert!(!err.contains("Starting workers"), "nothing started: {err}");

    // A symlink in its place.
    std::fs::remove_dir(&dir).expect("rmdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), &dir).expect("symlink");
    let (code, err) = serve_with_xdg(xdg.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symlink"), "{err}");

    // A regular file where the socket goes is never unlinked.
    std::fs::remove_file(&dir).expect("rm link");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(dir.join("curfew.sock"), "data").expect("write");
    let (code, err) = serve_with_xdg(xdg.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("curfew.sock")).expect("kept"),
        "data"
    );
}

#[test]
fn the_default_directory_is_created_private() {
    let xdg = tempfile::tempdir().expect("tempdir");
    // The harness passes its own --control-socket; run one without it.
    let port = free_port();
    let mut child = Command::new(CURFEW)
        .args([
            "serve",
            "-w",
            "1",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--",
            TESTWORKER,
        ])
        .env("XDG_RUNTIME_DIR", xdg.path())
        .env_remove("CURFEW_CONTROL_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let sock = xdg.path().join("curfew").join("curfew.sock");
    wait_until("control socket", Duration::from_secs(20), || sock.exists());
    let mode = std::fs::metadata(xdg.path().join("curfew"))
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let out = Command::new(CURFEW)
        .args(["status"])
        .env("XDG_RUNTIME_DIR", xdg.path())
        .env_remove("CURFEW_CONTROL_SOCKET")
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Run `code` with the system's python3 as uid/gid 65534 (nobody); the
/// system one, as a user's pyenv shim is not readable by nobody.
fn as_nobody(code: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            code,
        ])
        .output()
        .expect("setpriv")
}

#[test]
fn another_user_cannot_command_curfew_even_through_a_loosened_socket() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let c = Curfew::start(Opts::testworker(&["-w", "1"], &[]));
    // Loosen what the file system protects: the peer check still holds.
    let dir = c.control_socket.parent().expect("dir").to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
    std::fs::set_permissions(&c.control_socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod sock");
    let out = as_nobody(&format!(
        "import socket; s=socket.socket(socket.AF_UNIX); s.connect({:?}); s.sendall(b'{{\"cmd\":\"stop\"}}\\n'); print(s.makefile().readline())",
        c.control_socket.display().to_string()
    ));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("permission denied"),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(c.port, "/").status, 200, "still serving");
    c.wait_log(
        "refused a request from another user",
        Duration::from_secs(2),
    );
}

#[test]
fn the_cli_does_not_talk_to_a_socket_another_user_owns() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sock = dir.path().join("impostor.sock");
    // nobody listens there, pretending to be curfew.
    let mut impostor = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket,time; s=socket.socket(socket.AF_UNIX); s.bind({:?}); s.listen(); time.sleep(20)",
            sock.display().to_string()
        ))
        .spawn()
        .expect("impostor");
    wait_until("impostor socket", Duration::from_secs(5), || sock.exists());
    let out = Command::new(CURFEW)
        .args(["stop", "--control-socket"])
        .arg(&sock)
        .output()
        .expect("curfew stop");
    let _ = impostor.kill();
    let _ = impostor.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("owned by uid 65534"), "{err}");
}

/// The app is told where to enqueue only where the job API answers it: an
/// admin address reachable from other hosts without admin_token refuses
/// the job API, so the workers get no `CURFEW_ADMIN_URL` (the SDK then
/// enqueues over the control socket) — they used to get one, and every
/// enqueue was a 403. With a token, or on loopback, they get it.
#[test]
fn workers_get_an_admin_url_only_where_the_job_api_answers_them() {
    let env_of = |c: &Curfew, name: &str| get(c.port, &format!("/env?name={name}"));
    let exposed = format!("0.0.0.0:{}", free_port());
    let c = Curfew::start(Opts::testworker(
        &["-w", "1", "--admin-bind", &exposed],
        &[],
    ));
    assert_eq!(env_of(&c, "CURFEW_ADMIN_URL").status, 404, "no admin URL");
    assert_eq!(env_of(&c, "CURFEW_CONTROL_SOCKET").status, 200);
    drop(c);

    let mut opts = Opts::testworker(&["-w", "1", "--admin-bind", &exposed], &[]);
    opts.env.push((
        "CURFEW_ADMIN_TOKEN".into(),
        "s3cret-token-for-the-test".into(),
    ));
    let c = Curfew::start(opts);
    let url = env_of(&c, "CURFEW_ADMIN_URL");
    assert_eq!(url.status, 200);
    assert!(url.body.starts_with("http://127.0.0.1:"), "{}", url.body);
    drop(c);

    let local = format!("127.0.0.1:{}", free_port());
    let c = Curfew::start(Opts::testworker(&["-w", "1", "--admin-bind", &local], &[]));
    assert_eq!(
        env_of(&c, "CURFEW_ADMIN_URL").body.trim(),
        format!("http://{local}")
    );
}
