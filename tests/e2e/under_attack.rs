//! Every slow and hostile client of the abuse suite at once, against two
//! sync workers: 1,000 slowloris connections, 50 slow uploaders, 50 slow
//! readers over HTTP/1 and 50 HTTP/2 (h2c) streams that never open their
//! flow-control window, and a bad-chunk flood. Meanwhile normal requests
//! keep their latency, no worker is aborted or suspended, curfew logs no
//! WARN/ERROR and its memory stays bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// The p99 of `n` sequential normal requests (each on a new connection).
fn p99(port: u16, n: usize) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            assert_eq!(get(port, "/").status, 200);
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[(n * 99 / 100).min(n - 1)]
}

/// `n` h2c streams (prior knowledge) asking for 1 MiB each with a zero
/// stream window: the server can send the head, never a byte of the body.
/// Held until `stop`; returns how many got their response head.
fn h2_zero_window(port: u16, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let (mut tx, conn) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .initial_stream_window_size(0)
                    .initial_connection_window_size(65_535)
                    .handshake::<_, http_body_util::Empty<bytes::Bytes>>(
                        hyper_util::rt::TokioIo::new(tcp),
                    )
                    .await
                    .expect("h2c handshake");
            tokio::spawn(conn);
            let mut held = Vec::new();
            for _ in 0..n {
                let req = http::Request::get(format!(
                    "http://127.0.0.1:{port}/stream?chunks=16&ms=0&size=65536"
                ))
                .body(http_body_util::Empty::new())
                .expect("request");
                tx.ready().await.expect("ready");
                let fut = tx.send_request(req);
                held.push(tokio::spawn(fut));
            }
            let mut heads = 0;
            let mut bodies = Vec::new();
            for h in held {
                if let Ok(Ok(resp)) = h.await {
                    assert_eq!(resp.status(), 200);
                    heads += 1;
                    bodies.push(resp); // never read: the window stays shut
                }
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(bodies);
            heads
        })
    })
}

#[test]
fn normal_traffic_is_unhurt_while_every_attack_runs_at_once() {
    let c = Curfew::start(Opts::testworker(
        &[
            "-w",
            "2",
            "--header-timeout",
            "20s",
            "--client-body-timeout",
            "5s",
        ],
        &[],
    ));
    let port = c.port;
    // Warm up, then the unloaded p99.
    p99(port, 50);
    let calm = p99(port, 300);
    let rss_calm = rss_kib(c.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // 1,000 slowloris connections: half a request head each, then nothing.
    let loris: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("partial head");
            s
        })
        .collect();
    // 50 slow uploaders: 30 bytes at 10 per second.
    let uploaders: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("timeout");
                s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n")
                    .expect("head");
                for _ in 0..30 {
                    s.write_all(b"x").expect("byte");
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line).expect("status line");
                line
            })
        })
        .collect();
    // 50 slow readers over HTTP/1: 1 MiB each, not read until the end.
    let readers: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(
                b"GET /stream?chunks=16&ms=0&size=65536 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .expect("request");
            s
        })
        .collect();
    // 50 HTTP/2 streams with a shut window.
    let h2 = h2_zero_window(port, 50, stop.clone());
    // A bad-chunk flood from 3 clients.
    let flood: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let bad = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n";
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                    let _ = s.write_all(bad);
                    let mut line = String::new();
                    let _ = BufReader::new(s).read_line(&mut line);
                    answers.push(line);
                    std::thread::sleep(Duration::from_millis(20));
                }
                answers
            })
        })
        .collect();

    // Everything is in place (the workers have written the big answers
    // into curfew's spools): normal requests now.
    std::thread::sleep(Duration::from_millis(2000));
    let pid = c.pid();
    let rss_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), rss_peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let attacked = p99(port, 300);
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let attack_secs = started.elapsed().as_secs_f64();

    for u in uploaders {
        let line = u.join().expect("uploader");
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "a slow upload is served: {line:?}"
        );
    }
    for s in readers {
        let mut r = BufReader::new(s);
        let resp = read_response(&mut r).expect("the slow reader's response");
        assert_eq!(resp.body.len(), 1 << 20, "a slow reader gets every byte");
    }
    assert_eq!(
        h2.join().expect("h2 client"),
        50,
        "every h2 stream got its head"
    );
    for f in flood {
        let answers = f.join().expect("flood");
        assert!(!answers.is_empty());
        assert!(
            answers.iter().all(|l| l.starts_with("HTTP/1.1 400")),
            "every bad chunk is the client's 400: {:?}",
            answers.iter().find(|l| !l.starts_with("HTTP/1.1 400"))
        );
    }
    drop(loris);

    let peak_mib = rss_peak.load(Ordering::Relaxed) / 1024;
    eprintln!(
        "unloaded p99 {calm:?}, under attack {attacked:?} ({attack_secs:.1} s of attack); curfew RSS {} MiB calm, {peak_mib} MiB peak",
        rss_calm / 1024
    );
    // 2x the unloaded p99, with a floor of 100 ms: on a 2-core machine
    // running other tests beside this one (nextest runs two at once), a
    // sub-millisecond p99 moves by tens of milliseconds for reasons of its
    // own. The failure this guards against — a worker pinned by a client —
    // costs seconds (504 at `timeout`), far past the floor. The numbers are
    // printed; bench/ measures them on an idle machine.
    let bound = (calm * 2).max(Duration::from_millis(100));
    assert!(
        attacked <= bound,
        "normal p99 {attacked:?} under attack, {calm:?} unloaded"
    );
    assert!(
        peak_mib < 160,
        "curfew's RSS peaked at {peak_mib} MiB under attack"
    );
    // No worker aborted, suspended or replaced; no WARN/ERROR.
    assert_eq!(c.count_log(WORKER_READY), 2, "{}", c.log_text());
    assert!(c.faults().is_empty(), "{:#?}", c.faults());
}
