//! Hostile and broken clients against the real binary and two sync test
//! workers: each abuse gets its answer (400/405/408/413/431) from curfew,
//! nothing is smuggled or spoofed to a worker, and no worker is charged for
//! a client's fault (no WARN/ERROR line, no abort, no restart).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Two sync workers with a short `timeout`: a worker held by a client past
/// it would be aborted as hung.
fn two_sync_workers(extra: &[&str]) -> Curfew {
    let mut args = vec!["-w", "2", "--timeout", "1s"];
    args.extend_from_slice(extra);
    Curfew::start(Opts::testworker(&args, &[]))
}

/// Send raw bytes on a new connection; the status of the first answer
/// (`None`: the connection closed without one) and its body.
fn raw(port: u16, bytes: &[u8]) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer (and close) before reading it all.
    let _ = s.write_all(bytes);
    match read_response(&mut BufReader::new(s)) {
        Ok(r) => (Some(r.status), r.body),
        Err(e) => (None, e.to_string()),
    }
}

/// The worker processes were neither replaced nor faulted, and curfew wrote
/// no WARN/ERROR line.
fn assert_workers_untouched(c: &Curfew) {
    assert_eq!(
        c.worker_pids().len(),
        2,
        "no worker restarted\n{}",
        c.log_text()
    );
    assert!(c.faults().is_empty(), "no WARN/ERROR: {:?}", c.faults());
    assert_eq!(c.count_log("event=\"worker_aborted\""), 0);
    assert_eq!(c.count_log("event=\"worker_exited\""), 0);
}

#[test]
fn smuggling_vectors_are_refused_by_curfew() {
    let c = two_sync_workers(&[]);
    // Each would, if a worker parsed it differently from curfew, deliver
    // `GET /crash` as a second request: a crashed worker would show.
    let smuggled = "GET /crash HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL.TE",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ),
        (
            "duplicate Content-Length",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc{smuggled}"
            ),
        ),
        (
            "bad chunk size",
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
        ),
        (
            "obs-fold",
            "GET /headers HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_owned(),
        ),
        (
            "space in a header name",
            "GET /headers HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n".to_owned(),
        ),
    ];
    for (name, req) in &cases {
        let (status, text) = raw(c.port, req.as_bytes());
        let status = status.unwrap_or_else(|| panic!("{name}: no answer"));
        // Both Content-Length and Transfer-Encoding: framed by
        // Transfer-Encoding alone (RFC 9112 §6.1) and re-framed for the
        // worker with a Content-Length of what was read, so the worker
        // reads exactly what curfew did: the smuggled text, if anything,
        // arrives as body bytes, never as a request (no crash below).
        let both = name.starts_with("CL.TE") || name.starts_with("TE.CL");
        assert!(
            status == 400 || (both && status == 200),
            "{name}: got {status}\n{text}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_workers_untouched(&c);
    assert_eq!(get(c.port, "/").status, 200);
}

#[test]
fn oversized_heads_get_431_whatever_the_worker() {
    let c = two_sync_workers(&["--max-header-size", "16KiB"]);
    let big = "a".repeat(20 * 1024);
    let (status, _) = raw(
        c.port,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, Some(431));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = raw(
        c.port,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(status, Some(431), "more than 100 header fields");
    // Just under the limit passes.
    let fits = "a".repeat(12 * 1024);
    let r = http(c.port, "GET", "/headers", &[("X-Fits", &fits)], b"").expect("request");
    assert_eq!(r.status, 200);
    assert_workers_untouched(&c);
}

#[test]
fn http10_without_host_and_connect() {
    let c = two_sync_workers(&[]);
    let (status, body) = raw(c.port, b"GET /headers HTTP/1.0\r\n\r\n");
    assert_eq!(status, Some(200), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["headers"]["host"][0],
        format!("127.0.0.1:{}", c.port),
        "curfew supplies the address the client connected to"
    );
    let (status, text) = raw(
        c.port,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(status, Some(405), "{text}");
    assert_workers_untouched(&c);
}

#[test]
fn untrusted_peers_cannot_spoof_forwarding_headers_or_the_job_token() {
    // 127.0.0.1 is not trusted here: the test plays an internet client.
    let c = two_sync_workers(&["--forwarded-allow-ips", "10.0.0.0/8"]);
    let r = http(
        c.port,
        "GET",
        "/headers",
        &[
            ("x_forwarded_proto", "https"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6;proto=https"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Port", "443"),
            // gunicorn's default secure_scheme_headers, and other proxies'
            // scheme fields: each would make the app believe in TLS.
            ("X-Forwarded-Protocol", "ssl"),
            ("X-Forwarded-Ssl", "on"),
            ("X-Forwarded-Scheme", "https"),
            ("X-Scheme", "https"),
            ("X-Url-Scheme", "https"),
            ("Front-End-Https", "on"),
            ("X-Client-IP", "6.6.6.6"),
            ("x_curfew_job_token", "guess"),
            ("X-Curfew-Job-Token", "guess"),
            ("x_custom", "kept"),
        ],
        b"",
    )
    .expect("request");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let h = v["headers"].as_object().expect("headers");
    let names: Vec<&String> = h.keys().collect();
    for gone in [
        "x_forwarded_proto",
        "x_forwarded_for",
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-protocol",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
        "x-client-ip",
        "x_curfew_job_token",
        "x-curfew-job-token",
    ] {
        assert!(
            !h.contains_key(gone),
            "{gone} reached the worker: {names:?}"
        );
    }
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
    assert!(
        !h.contains_key("x_custom"),
        "underscore headers are dropped by default: {names:?}"
    );
}

/// gunicorn takes `SCRIPT_NAME` (and `PATH_INFO`) from a header sent by a
/// proxy it trusts — curfew, on loopback — so by default every header with
/// a `_` is dropped, from every peer, as nginx does; `underscore_headers =
/// "keep"` lets the others through (never the forwarding or token ones).
#[test]
fn underscore_headers_are_dropped_unless_kept() {
    let send = |c: &Curfew| {
        let r = http(
            c.port,
            "GET",
            "/headers",
            &[
                ("SCRIPT_NAME", "/evil"),
                ("x_custom", "v"),
                ("x_forwarded_proto", "https"),
                ("X-Normal", "n"),
            ],
            b"",
        )
        .expect("request");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        v["headers"].as_object().expect("headers").clone()
    };
    let c = two_sync_workers(&[]);
    let h = send(&c);
    assert!(
        !h.contains_key("script_name") && !h.contains_key("x_custom"),
        "{h:?}"
    );
    assert_eq!(h["x-normal"][0], "n");
    let c = two_sync_workers(&["--underscore-headers", "keep"]);
    let h = send(&c);
    assert_eq!(h["script_name"][0], "/evil", "{h:?}");
    assert_eq!(h["x_custom"][0], "v");
    assert!(!h.contains_key("x_forwarded_proto"), "{h:?}");
}

/// A POST whose body trickles in: `Content-Length: len`, one byte every
/// `every`, then the answer's status.
fn trickle(port: u16, len: usize, every: Duration, stop_after: Option<usize>) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).expect("head");
    for i in 0..len {
        if stop_after == Some(i) {
            break;
        }
        if s.write_all(b"x").is_err() {
            break; // answered (and closed) early
        }
        std::thread::sleep(every);
    }
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn slow_uploaders_cost_no_worker() {
    // timeout 1s: a worker held by one of these uploads would be aborted.
    let c = two_sync_workers(&["--client-body-timeout", "1s"]);
    let port = c.port;
    // Ten uploads, each 2.4 s of trickling: five times what two workers
    // could hold past the timeout.
    let uploads: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || trickle(port, 24, Duration::from_millis(100), None)))
        .collect();
    // Two stall half-way: 408 after client_body_timeout.
    let stalls: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || trickle(port, 24, Duration::from_millis(50), Some(12))))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let t = Instant::now();
        assert_eq!(get(port, "/").status, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "normal requests waited {worst:?} behind slow uploads"
    );
    for u in uploads {
        assert_eq!(
            u.join().expect("join"),
            Some(200),
            "a complete upload is served"
        );
    }
    for s in stalls {
        assert_eq!(s.join().expect("join"), Some(408));
    }
    assert_workers_untouched(&c);
}

#[test]
fn streamed_slow_upload_is_served_and_never_a_hung_worker() {
    let c = two_sync_workers(&[
        "--request-buffering",
        "false",
        "--client-body-timeout",
        "1s",
    ]);
    // Streaming: the upload holds a worker, but its 3 s of sending are the
    // client's time, not the worker's (`timeout` 1 s counts from the end
    // of the body): served, and no worker is judged hung.
    let status = trickle(c.port, 30, Duration::from_millis(100), None);
    assert_eq!(status, Some(200));
    // One that stops sending: the client's 408 at client_body_timeout.
    let status = trickle(c.port, 30, Duration::from_millis(50), Some(10));
    assert_eq!(status, Some(408));
    std::thread::sleep(Duration::from_millis(300));
    assert_workers_untouched(&c);
}

/// With client_body_timeout off, a streamed upload that stops is still
/// the client's 408 once it has sent nothing for `timeout` (1 s) in one
/// wait: the worker's deadline, which moves while the worker waits on the
/// client, does not move for ever and hold the worker's slot until a drain.
#[test]
fn a_stalled_streamed_upload_is_cut_without_client_body_timeout() {
    let c = two_sync_workers(&["--request-buffering", "false", "--client-body-timeout", "0"]);
    let t = Instant::now();
    let status = trickle(c.port, 30, Duration::from_millis(50), Some(10));
    let took = t.elapsed();
    assert_eq!(status, Some(408));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "408 after {took:?}: 0.5 s of sending, then 1 s of nothing"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_workers_untouched(&c);
}

#[test]
fn bad_chunk_flood_is_answered_to_the_clients() {
    let c = two_sync_workers(&[]);
    let port = c.port;
    let flood: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let bad = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n";
                (0..50).map(|_| raw(port, bad).0).collect::<Vec<_>>()
            })
        })
        .collect();
    let t = Instant::now();
    let mut n = 0;
    while !flood.iter().all(|f| f.is_finished()) && n < 500 {
        assert_eq!(get(port, "/").status, 200);
        n += 1;
    }
    for f in flood {
        let statuses = f.join().expect("join");
        assert!(
            statuses.iter().all(|s| *s == Some(400)),
            "every bad chunk is the client's 400: {statuses:?}"
        );
    }
    assert!(
        n > 0,
        "normal requests ran during the flood ({:?})",
        t.elapsed()
    );
    assert_workers_untouched(&c);
}

#[test]
fn bodies_over_max_request_body_get_413_and_large_ones_arrive_whole() {
    let c = two_sync_workers(&["--max-request-body", "4MiB"]);
    // Declared too large: refused before it is read.
    let (status, _) = raw(
        c.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nabc",
    );
    assert_eq!(status, Some(413));
    // Chunked, growing past the limit.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..5 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw(c.port, &req);
    assert_eq!(status, Some(413));
    // 3 MiB: past the in-memory part, spilled to a file, sent whole.
    let body: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let r = http(c.port, "POST", "/echo", &[], &body).expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(
        r.body.as_bytes() == body.as_slice(),
        "the spilled body arrives byte for byte"
    );
    assert_workers_untouched(&c);
}

#[test]
fn slowloris_heads_are_cut_at_header_timeout() {
    let c = two_sync_workers(&["--header-timeout", "1s"]);
    let start = Instant::now();
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("partial head");
            s
        })
        .collect();
    // Meanwhile normal requests are served at once.
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(c.port, "/").status, 200);
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        // Closed by curfew (EOF or reset), never answered by a worker.
        let n = std::io::Read::read(s, &mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut at header_timeout, took {took:?}"
    );
    assert_workers_untouched(&c);
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect("comm").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

#[test]
fn at_the_open_file_limit_curfew_backs_off_logs_once_and_recovers() {
    let mut opts = Opts::testworker(&["-w", "1"], &[]);
    opts.nofile = Some((64, 64));
    let c = Curfew::start(opts);
    // Idle connections until accepts fail (EMFILE): the rest wait in the
    // kernel's queue.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", c.port)).expect("connect"))
        .collect();
    c.wait_log("Accepting connections fails", Duration::from_secs(5));
    let cpu = cpu_time(c.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(c.pid()) - cpu;
    assert!(
        spent < Duration::from_millis(300),
        "no spin at EMFILE: {spent:?} of CPU in 2 s"
    );
    assert_eq!(
        c.count_log("Accepting connections fails"),
        1,
        "one line per period"
    );
    // A request sent at the limit waits in the kernel's queue; once
    // descriptors free up it is served (even if curfew's connect to the
    // worker meets the limit again on the way: that is not the worker's
    // fault, and the request must not end in 504).
    let port = c.port;
    let waiting = std::thread::spawn(move || http(port, "GET", "/", &[], b""));
    std::thread::sleep(Duration::from_millis(200));
    drop(idle);
    let r = waiting.join().expect("join").expect("answered");
    assert_eq!(r.status, 200, "{}", r.body);
    // Free descriptors: accepting resumes, and new requests are served.
    wait_until("served again", Duration::from_secs(10), || {
        http(c.port, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200)
    });
    c.wait_log("Accepting connections again.", Duration::from_secs(5));
}

/// Ask for `mb` MiB streamed by the worker; the connection, unread.
fn big_response(port: u16, mb: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let chunks = mb * 16; // 64 KiB each
    let req = format!(
        "GET /stream?chunks={chunks}&ms=0&size=65536 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("request");
    s
}

/// Read to the end: the body bytes after the head.
fn read_all(s: TcpStream) -> usize {
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r).expect("response");
    resp.body.len()
}

#[test]
fn slow_readers_do_not_hold_workers() {
    let c = two_sync_workers(&[]);
    // Three clients ask for 24 MiB each and read nothing: far more than
    // the kernel's socket buffers hold, so without a spool each would keep
    // a worker writing (and two of them would take both workers).
    let slow: Vec<TcpStream> = (0..3).map(|_| big_response(c.port, 24)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(c.port, "/").status, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "normal requests waited {worst:?}"
    );
    // The slow clients still get every byte.
    for s in slow {
        assert_eq!(read_all(s), 24 << 20);
    }
    assert_workers_untouched(&c);
}

#[test]
fn a_client_that_stops_reading_is_cut_at_send_timeout() {
    let c = two_sync_workers(&["--send-timeout", "1s"]);
    let s = big_response(c.port, 24);
    std::thread::sleep(Duration::from_millis(2500));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    let got = match read_response(&mut r) {
        Ok(resp) => resp.body.len(),
        Err(_) => 0,
    };
    assert!(got < 24 << 20, "cut before the end ({got} bytes)");
    // Nothing of this was the worker's doing.
    assert_eq!(get(c.port, "/").status, 200);
    assert_workers_untouched(&c);
}

/// `response_buffering = false`: the worker waits for the client, so a
/// client that reads nothing is cut at `send_timeout` and the worker
/// freed (it held the only worker until the drain before).
#[test]
fn unbuffered_a_client_that_stops_reading_is_cut_at_send_timeout() {
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--worker-concurrency",
            "1",
            "--timeout",
            "5s",
            "--response-buffering",
            "false",
            "--send-timeout",
            "1s",
        ],
        &[],
    ));
    let s = big_response(c.port, 24);
    std::thread::sleep(Duration::from_millis(300));
    // The only worker is busy writing to the client that does not read;
    // once send_timeout has passed it is free again.
    let t = Instant::now();
    let r = http(c.port, "GET", "/", &[], b"").expect("request");
    let waited = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        waited < Duration::from_millis(2500),
        "the worker was held {waited:?} by a client reading nothing"
    );
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let got = match read_response(&mut BufReader::new(s)) {
        Ok(resp) => resp.body.len(),
        Err(_) => 0,
    };
    assert!(got < 24 << 20, "cut before the end ({got} bytes)");
    assert!(c.faults().is_empty(), "{:?}", c.faults());
    assert_eq!(c.count_log(WORKER_ABORTED), 0);
}

#[test]
fn streamed_responses_still_stream_through_the_spool() {
    let c = two_sync_workers(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.write_all(b"GET /stream?chunks=4&ms=300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let t = Instant::now();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Head, then the first chunk, long before the last is written.
    loop {
        line.clear();
        r.read_line(&mut line).expect("read");
        if line.contains("chunk 0") {
            break;
        }
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "first chunk after {:?}",
        t.elapsed()
    );
}

#[test]
fn past_max_connections_clients_wait_in_the_kernel_queue() {
    let c = two_sync_workers(&["--max-connections", "5"]);
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", c.port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The sixth connects (the kernel accepts it) but is not served...
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(
        std::io::Read::read(&mut s, &mut buf).is_err(),
        "no answer while at the cap"
    );
    c.wait_log("At max_connections", Duration::from_secs(2));
    // ...until a slot frees: then it is, without a retry by the client.
    drop(idle);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = read_response(&mut BufReader::new(s)).expect("answered once a slot freed");
    assert_eq!(r.status, 200);
    assert_eq!(c.count_log("At max_connections"), 1, "one line per period");
}

/// An upgraded connection (WebSocket) still counts toward
/// `max_connections` until its tunnel closes.
#[test]
fn upgraded_connections_count_toward_max_connections() {
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--worker-concurrency",
            "4",
            "--max-connections",
            "2",
        ],
        &[],
    ));
    let open = || {
        let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .expect("send");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        assert_eq!(read_response(&mut r).expect("101").status, 101);
        (s, r)
    };
    let first = open();
    let _second = open();
    std::thread::sleep(Duration::from_millis(200));
    // At the cap: a third client waits in the kernel's queue...
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(
        std::io::Read::read(&mut s, &mut buf).is_err(),
        "no answer while two tunnels are open"
    );
    // ...until a tunnel closes.
    drop(first);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = read_response(&mut BufReader::new(s)).expect("answered once a tunnel closed");
    assert_eq!(r.status, 200);
}

/// An abandoned upgraded connection (WebSocket) holds a worker slot; with
/// `tunnel_idle_timeout` it is closed after that long without a byte either
/// way — and a tunnel that keeps talking is not.
#[test]
fn an_idle_tunnel_is_closed_and_its_worker_freed() {
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "1",
            "--worker-concurrency",
            "1",
            "--tunnel-idle-timeout",
            "1s",
        ],
        &[],
    ));
    let open = |c: &Curfew| {
        let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .expect("send");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        assert_eq!(read_response(&mut r).expect("101").status, 101);
        (s, r)
    };
    // A talking tunnel outlives the timeout several times over.
    let (mut s, mut r) = open(&c);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).expect("echo while talking");
    }
    drop((s, r));
    // A silent one is closed after about a second, and the only worker is
    // free again for a normal request.
    let (_s, mut r) = open(&c);
    let t0 = Instant::now();
    let mut buf = [0u8; 1];
    let n = r.read(&mut buf).unwrap_or(0);
    let closed_after = t0.elapsed();
    assert_eq!(n, 0, "the idle tunnel was closed (EOF)");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
    assert_eq!(get(c.port, "/").status, 200);
    assert!(c.faults().is_empty(), "{:?}", c.faults());
}
