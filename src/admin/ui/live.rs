//! The live region of the status page: the overview, workers, queues,
//! running jobs and recent failures. Rendered for the page and again for
//! each poll (`/ui/live`), so the page reads the same with or without the
//! script, and there is one renderer and one place that escapes.

use std::fmt::Write as _;

use curfew_store::{Job, JobState};

use super::render::{age, button_form, esc, mib, truncate};
use super::view::{Recent, View};
use crate::protocol::jobs::JobsReport;

/// Characters of a job's error shown in the table; the rest is counted.
pub const ERROR_CHARS: usize = 300;
/// Running jobs listed (the count is always shown).
const RUNNING_SHOWN: usize = 20;

/// The live region's HTML.
pub fn render(view: &View) -> String {
    let mut out = String::new();
    overview(&mut out, view);
    workers(&mut out, view);
    if let Some(jobs) = &view.status.jobs {
        queues(&mut out, jobs, view.csrf.as_deref());
        running(&mut out, jobs);
    }
    recent(&mut out, view);
    out
}

fn overview(out: &mut String, view: &View) {
    let s = &view.status;
    let ready = s.workers.len();
    // The chart's inputs, read by the script at each poll.
    let _ = write!(
        out,
        "<section id=\"overview\" data-requests=\"{}\" data-latency-sum-s=\"{:.6}\">\n<dl class=\"numbers\">",
        view.http.requests, view.http.latency_sum_s
    );
    let items: [(&str, String, &str); 8] = [
        ("Phase", s.phase.clone(), "phase"),
        ("Uptime", age(s.uptime_s), ""),
        ("Generation", s.generation.to_string(), ""),
        (
            "Workers",
            format!("{ready} / {}", s.workers_wanted),
            if ready < s.workers_wanted { "warn" } else { "" },
        ),
        ("In flight", s.requests_in_flight.to_string(), ""),
        (
            "Waiting for a worker",
            s.requests_queued.to_string(),
            if s.requests_queued > 0 { "warn" } else { "" },
        ),
        ("Answered", view.http.requests.to_string(), ""),
        ("curfew pid", s.pid.to_string(), ""),
    ];
    for (label, value, class) in items {
        let class = if class == "phase" {
            format!("phase phase-{}", esc(&value))
        } else {
            class.to_owned()
        };
        let class = if class.is_empty() {
            String::new()
        } else {
            format!(" class=\"{class}\"")
        };
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd{class}>{}</dd></div>",
            esc(&value)
        );
    }
    out.push_str("</dl>\n</section>\n");
}

fn workers(out: &mut String, view: &View) {
    let s = &view.status;
    let _ = writeln!(
        out,
        "<section><h2>Workers <small>{} of {} ready</small></h2>",
        s.workers.len(),
        s.workers_wanted
    );
    if s.workers.is_empty() {
        out.push_str("<p class=\"muted\">No worker is ready.</p></section>\n");
        return;
    }
    out.push_str(
        "<table id=\"workers\"><thead><tr><th>Slot</th><th>PID</th><th>Gen</th><th>State</th><th>Age</th><th class=\"n\">Requests</th><th class=\"n\">In flight</th><th class=\"n\">RSS</th><th class=\"n\">Restarts</th></tr></thead><tbody>\n",
    );
    for w in &s.workers {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"pid\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td></tr>",
            w.id,
            w.pid,
            w.generation,
            esc(&w.state),
            age(w.age_s),
            w.requests_served,
            w.in_flight,
            mib(w.rss_bytes),
            if w.restarts > 0 { " warn" } else { "" },
            w.restarts
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn queues(out: &mut String, jobs: &JobsReport, csrf: Option<&str>) {
    let _ = writeln!(
        out,
        "<section><h2>Queues <small>store {}{}</small></h2>",
        esc(&jobs.store),
        if jobs.store_up {
            ""
        } else {
            " — <strong class=\"bad\">unreachable</strong>"
        }
    );
    if jobs.queues.is_empty() {
        out.push_str("<p class=\"muted\">No queue.</p></section>\n");
        return;
    }
    out.push_str(
        "<table id=\"queues\"><thead><tr><th>Queue</th><th class=\"n\">Queued</th><th class=\"n\">Scheduled</th><th class=\"n\">Running</th><th class=\"n\">Failed</th><th class=\"n\">Dead</th><th>Oldest queued</th><th class=\"n\">Here</th><th>State</th><th></th></tr></thead><tbody>\n",
    );
    for q in &jobs.queues {
        let n = |f: fn(&curfew_store::QueueStats) -> i64| {
            q.store
                .as_ref()
                .map_or("?".to_owned(), |s| f(s).to_string())
        };
        let oldest = q
            .store
            .as_ref()
            .and_then(|s| s.oldest_queued_age_ms)
            .map_or("–".to_owned(), |ms| {
                age(u64::try_from(ms / 1000).unwrap_or(0))
            });
        let dead = q.store.as_ref().is_some_and(|s| s.dead > 0);
        let (state, action) = if q.paused {
            ("<strong class=\"warn\">paused</strong>", "resume")
        } else {
            ("active", "pause")
        };
        let form = csrf.map_or(String::new(), |csrf| {
            button_form(
                &format!("/ui/queues/{}/{action}", q.queue),
                csrf,
                if q.paused { "Resume" } else { "Pause" },
                "quiet",
            )
        });
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{state}</td><td>{form}</td></tr>",
            esc(&q.queue),
            n(|s| s.queued),
            n(|s| s.scheduled),
            n(|s| s.running),
            n(|s| s.failed),
            if dead { " bad" } else { "" },
            n(|s| s.dead),
            oldest,
            q.running_here,
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn running(out: &mut String, jobs: &JobsReport) {
    let _ = writeln!(
        out,
        "<section><h2>Running here <small>{}</small></h2>",
        jobs.running.len()
    );
    if jobs.running.is_empty() {
        out.push_str("<p class=\"muted\">No job is running in this curfew.</p></section>\n");
        return;
    }
    out.push_str("<table id=\"running\"><thead><tr><th>ID</th><th>Queue</th><th>Kind</th><th class=\"n\">Attempt</th><th>Running for</th></tr></thead><tbody>\n");
    for r in jobs.running.iter().take(RUNNING_SHOWN) {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            r.id,
            esc(&r.queue),
            esc(&r.kind),
            r.attempt,
            age(r.age_ms / 1000)
        );
    }
    out.push_str("</tbody></table>");
    if jobs.running.len() > RUNNING_SHOWN {
        let _ = write!(
            out,
            "<p class=\"muted\">And {} more (<code>curfew status</code> lists them all).</p>",
            jobs.running.len() - RUNNING_SHOWN
        );
    }
    out.push_str("</section>\n");
}

fn recent(out: &mut String, view: &View) {
    let jobs = match &view.recent {
        Recent::NoProcessor => return,
        Recent::Hidden => {
            out.push_str("<section><h2>Recent failures</h2><p class=\"muted\">Not shown: this admin address is reachable from other hosts and has no <code>admin_token</code>. Set one to see jobs and act on them here.</p></section>\n");
            return;
        }
        Recent::Unavailable(why) => {
            let _ = writeln!(
                out,
                "<section><h2>Recent failures</h2><p class=\"bad\">Cannot list them: {}</p></section>",
                esc(why)
            );
            return;
        }
        Recent::Jobs(jobs) => jobs,
    };
    let _ = writeln!(
        out,
        "<section><h2>Recent failures <small>newest {} failed (to be retried) or dead</small></h2>",
        super::view::RECENT
    );
    if jobs.is_empty() {
        out.push_str("<p class=\"muted\">None.</p></section>\n");
        return;
    }
    out.push_str("<table id=\"failures\"><thead><tr><th>ID</th><th>Queue</th><th>Kind</th><th>State</th><th class=\"n\">Attempt</th><th>Changed</th><th>Error</th><th></th></tr></thead><tbody>\n");
    let now = curfew_store::now_ms();
    for job in jobs {
        failure_row(out, job, now, view.csrf.as_deref());
    }
    out.push_str("</tbody></table></section>\n");
}

fn failure_row(out: &mut String, job: &Job, now_ms: i64, csrf: Option<&str>) {
    let error = job.last_error.as_deref().unwrap_or("");
    let (shown, left) = truncate(error, ERROR_CHARS);
    let more = if left > 0 {
        format!(
            "<span class=\"muted\"> … {left} more characters (<code>curfew jobs show {}</code>)</span>",
            job.id
        )
    } else {
        String::new()
    };
    let mut actions = String::new();
    if let Some(csrf) = csrf {
        // What the store allows: retry a failed or dead job, cancel a
        // failed one (a dead one is finished already).
        actions.push_str(&button_form(
            &format!("/ui/jobs/{}/retry", job.id),
            csrf,
            "Retry",
            "",
        ));
        if job.state == JobState::Failed {
            actions.push_str(&button_form(
                &format!("/ui/jobs/{}/cancel", job.id),
                csrf,
                "Cancel",
                "quiet",
            ));
        }
    }
    let changed = age(u64::try_from((now_ms - job.updated_at) / 1000).unwrap_or(0));
    let _ = writeln!(
        out,
        "<tr id=\"job-{id}\" class=\"state-{state}\"><td>{id}</td><td>{}</td><td>{}</td><td>{state}</td><td class=\"n\">{} / {}</td><td>{changed} ago</td><td class=\"error-text\">{}{more}</td><td>{actions}</td></tr>",
        esc(&job.queue),
        esc(&job.kind),
        job.attempt,
        job.max_attempts,
        esc(shown),
        id = job.id,
        state = job.state.as_str(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::ui::view::HttpTotals;
    use crate::protocol::status::{Status, WorkerReport};

    fn view(recent: Recent, csrf: Option<&str>) -> View {
        View {
            status: Status {
                phase: "serving".into(),
                pid: 7,
                uptime_s: 61,
                generation: 2,
                workers_wanted: 2,
                workers: vec![WorkerReport {
                    id: 0,
                    pid: 4242,
                    generation: 2,
                    state: "serving".into(),
                    age_s: 5,
                    requests_served: 9,
                    in_flight: 1,
                    rss_bytes: 30 << 20,
                    restarts: 1,
                }],
                ..Status::default()
            },
            http: HttpTotals {
                requests: 12,
                latency_sum_s: 0.5,
            },
            recent,
            csrf: csrf.map(str::to_owned),
        }
    }

    /// A job as the job API reads it (through JSON, so this test does not
    /// list every field of the store's type).
    fn job(id: i64, state: &str, error: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": id, "queue": "default", "kind": "send_email", "payload": null,
            "priority": 0, "run_at": 0, "attempt": 3, "max_attempts": 3,
            "state": state, "lease_owner": null, "lease_expires_at": null,
            "crashes": 0, "releases": 0, "last_error": error,
            "idempotency_key": null, "created_at": 0,
            "updated_at": curfew_store::now_ms() - 5000,
            "started_at": null, "finished_at": null
        }))
        .expect("a job")
    }

    #[test]
    fn a_job_error_cannot_inject_markup() {
        let evil =
            "HTTP 500: <script>alert(document.cookie)</script><img src=x onerror=alert(1)>\"'";
        let html = render(&view(Recent::Jobs(vec![job(5, "dead", evil)]), Some("tok")));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(document.cookie)&lt;/script&gt;"));
        assert!(html.contains("action=\"/ui/jobs/5/retry\""));
        assert!(
            !html.contains("/ui/jobs/5/cancel"),
            "a dead job cannot be cancelled"
        );
    }

    #[test]
    fn long_errors_are_cut_and_counted() {
        let long = "x".repeat(ERROR_CHARS + 700);
        let html = render(&view(
            Recent::Jobs(vec![job(6, "failed", &long)]),
            Some("t"),
        ));
        assert!(!html.contains(&"x".repeat(ERROR_CHARS + 1)));
        assert!(html.contains(&"x".repeat(ERROR_CHARS)));
        assert!(html.contains("700 more characters"));
        assert!(html.contains("/ui/jobs/6/cancel"), "a failed job can be");
    }

    #[test]
    fn the_page_shows_the_workers_and_the_chart_inputs() {
        let html = render(&view(Recent::NoProcessor, None));
        assert!(html.contains("<td class=\"pid\">4242</td>"));
        assert!(html.contains("data-requests=\"12\""));
        assert!(html.contains("30.0 MiB"));
        assert!(html.contains("1m 1s"), "uptime");
        assert!(!html.contains("Recent failures"), "no job processor");
    }

    #[test]
    fn read_only_viewers_get_no_forms_and_no_jobs() {
        let html = render(&view(Recent::Hidden, None));
        assert!(!html.contains("<form"));
        assert!(html.contains("admin_token"));
        let html = render(&view(Recent::Jobs(vec![job(5, "dead", "e")]), None));
        assert!(!html.contains("<form"), "no CSRF token, no forms");
    }
}
