//! The status page's POSTs: log in, log out, and the job and queue actions
//! (retry, cancel, pause, resume), each answered with a 303 back to the
//! page (Post/Redirect/Get) or an error page. A POST is read only after its
//! origin checked out, and at most [`MAX_FORM`] bytes of it.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::render::error_page;
use super::{Access, html, redirect, session};
use crate::admin::AdminState;
use crate::protocol::jobs::JobsRequest;

/// Largest form body taken (a token or a CSRF token and little else).
const MAX_FORM: usize = 4096;

/// What a POST under `/ui/jobs/` or `/ui/queues/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Retry(i64),
    Cancel(i64),
    Pause(String),
    Resume(String),
}

impl Action {
    fn parse(path: &str) -> Option<Action> {
        let rest = path.strip_prefix("/ui/")?;
        let mut parts = rest.split('/');
        let (what, name, verb) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        match (what, verb) {
            ("jobs", "retry") => name.parse().ok().map(Action::Retry),
            ("jobs", "cancel") => name.parse().ok().map(Action::Cancel),
            ("queues", "pause") if queue_name(name) => Some(Action::Pause(name.to_owned())),
            ("queues", "resume") if queue_name(name) => Some(Action::Resume(name.to_owned())),
            _ => None,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Action::Retry(_) => "retry",
            Action::Cancel(_) => "cancel",
            Action::Pause(_) => "pause",
            Action::Resume(_) => "resume",
        }
    }

    fn request(&self) -> JobsRequest {
        match self {
            Action::Retry(id) => JobsRequest::Retry { id: *id },
            Action::Cancel(id) => JobsRequest::Cancel { id: *id },
            Action::Pause(q) => JobsRequest::Pause { queue: q.clone() },
            Action::Resume(q) => JobsRequest::Resume { queue: q.clone() },
        }
    }

    /// Where the browser goes next: the page, with what was done (only
    /// checked characters: digits and queue-name characters).
    fn done(&self) -> String {
        match self {
            Action::Retry(id) | Action::Cancel(id) => {
                format!("/ui?done={}&job={id}", self.verb())
            }
            Action::Pause(q) | Action::Resume(q) => {
                format!("/ui?done={}&queue={q}", self.verb())
            }
        }
    }
}

/// A queue name as the store allows it: 1 to 200 of letters, digits and
/// `_ . : -`.
fn queue_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The message for the page after an action (`?done=…`), from fixed
/// texts: a link cannot make the page say anything else.
pub fn flash(query: &str) -> Option<String> {
    let mut done = None;
    let mut job = None;
    let mut queue = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "done" => done = Some(v.into_owned()),
            "job" => job = v.parse::<i64>().ok(),
            "queue" if queue_name(&v) => queue = Some(v.into_owned()),
            _ => {}
        }
    }
    match (done?.as_str(), job, queue) {
        ("retry", Some(id), _) => Some(format!("Job {id} queued again.")),
        ("cancel", Some(id), _) => Some(format!("Job {id} cancelled.")),
        ("pause", _, Some(q)) => Some(format!(
            "Queue {q} paused: no curfew sharing the store claims from it; running jobs go on."
        )),
        ("resume", _, Some(q)) => Some(format!("Queue {q} resumed.")),
        _ => None,
    }
}

/// Reads a form body (at most [`MAX_FORM`] bytes) as name → value pairs.
async fn form(req: Request<Incoming>) -> Result<Vec<(String, String)>, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(b) => Ok(form_urlencoded::parse(&b.to_bytes()).into_owned().collect()),
        Err(_) => Err(html(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_page(&format!(
                "The form is over {MAX_FORM} bytes or could not be read."
            )),
        )),
    }
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn forbidden(message: &str) -> Response<Full<Bytes>> {
    html(StatusCode::FORBIDDEN, error_page(message))
}

/// The same-site and CSRF checks of a POST in a session, then its form.
async fn checked_form(
    state: &AdminState,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Vec<(String, String)>, Response<Full<Bytes>>> {
    let Access::Full { session, .. } = access else {
        return Err(forbidden(
            "Refused: this admin address is reachable from other hosts and has no admin_token, so the status page is read-only. Set admin_token to act here.",
        ));
    };
    session::same_origin(req.headers()).map_err(|e| forbidden(e.message()))?;
    let form = form(req).await?;
    let csrf = field(&form, "csrf").unwrap_or("");
    if !state.auth.ui_keys().csrf_ok(session, csrf) {
        return Err(forbidden(
            "Refused: the form's CSRF token is missing or is not this session's. Reload the status page and try again.",
        ));
    }
    Ok(form)
}

/// `POST /ui/jobs/<id>/<retry|cancel>`, `POST /ui/queues/<name>/<pause|resume>`.
pub async fn act(
    state: &AdminState,
    access: &Access,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(action) = Action::parse(req.uri().path()) else {
        return html(
            StatusCode::NOT_FOUND,
            error_page(
                "Not found: the actions are /ui/jobs/<id>/retry, /ui/jobs/<id>/cancel, /ui/queues/<name>/pause and /ui/queues/<name>/resume.",
            ),
        );
    };
    if let Err(refused) = checked_form(state, access, req).await {
        return refused;
    }
    let Some(jobs) = &state.jobs else {
        return html(
            StatusCode::NOT_FOUND,
            error_page("No job processor: add a [jobs] section to curfew.toml."),
        );
    };
    let done = async {
        let _turn = jobs.api_turn(false).await?;
        jobs.operate(action.request()).await
    };
    match done.await {
        Ok((message, _)) => {
            tracing::info!(action = action.verb(), "Status page action: {message}.");
            redirect(&action.done())
        }
        Err(e) => html(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_page(&e.message),
        ),
    }
}

/// `POST /ui/login` with `token=<admin_token>`.
pub async fn login(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !state.auth.has_token() {
        return redirect("/ui");
    }
    if let Err(e) = session::same_origin(req.headers()) {
        return forbidden(e.message());
    }
    let form = match form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = field(&form, "token").unwrap_or("").trim();
    if !state.auth.token_matches(token) {
        tracing::info!("Status page login refused: wrong admin token.");
        return html(StatusCode::UNAUTHORIZED, super::render::login_page(true));
    }
    let keys = state.auth.ui_keys();
    let session = keys.issue(session::now_s());
    let mut r = redirect("/ui");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&keys.cookie_value(&session))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /ui/logout`: the cookie removed (it was the session: nothing is
/// kept on the server; a copy taken before stays valid until it expires).
pub async fn logout(
    state: &AdminState,
    access: &Access,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Err(refused) = checked_form(state, access, req).await {
        return refused;
    }
    let mut r = redirect(if state.auth.has_token() {
        "/ui/login"
    } else {
        "/ui"
    });
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_paths_parse_strictly() {
        assert_eq!(Action::parse("/ui/jobs/5/retry"), Some(Action::Retry(5)));
        assert_eq!(Action::parse("/ui/jobs/5/cancel"), Some(Action::Cancel(5)));
        assert_eq!(
            Action::parse("/ui/queues/mail.eu:1/pause"),
            Some(Action::Pause("mail.eu:1".into()))
        );
        assert_eq!(
            Action::parse("/ui/queues/mail/resume"),
            Some(Action::Resume("mail".into()))
        );
        for bad in [
            "/ui/jobs/x/retry",
            "/ui/jobs/5/delete",
            "/ui/jobs/5/retry/again",
            "/ui/jobs/5",
            "/ui/queues/a%3Cb/pause",
            "/ui/queues//pause",
            "/ui/queues/mail/drop",
            "/jobs/5/retry",
        ] {
            assert_eq!(Action::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_message_after_an_action_is_one_of_the_fixed_texts() {
        assert_eq!(
            flash("done=retry&job=5").as_deref(),
            Some("Job 5 queued again.")
        );
        assert_eq!(
            flash("done=resume&queue=mail").as_deref(),
            Some("Queue mail resumed.")
        );
        assert_eq!(flash("done=retry&job=<b>"), None);
        assert_eq!(flash("done=pause&queue=%3Cscript%3E"), None);
        assert_eq!(flash("done=hacked&job=1"), None);
        assert_eq!(flash(""), None);
        for a in [
            Action::Retry(1),
            Action::Cancel(2),
            Action::Pause("q".into()),
            Action::Resume("q".into()),
        ] {
            let done = a.done();
            let query = done.split_once('?').expect("query").1;
            assert!(flash(query).is_some(), "{done}");
        }
    }
}
