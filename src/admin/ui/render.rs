//! The status page's HTML around the live region: the page frame, the
//! login page, the answers to actions, and the escaping and formatting every
//! part uses. Every string that is not a literal of this module goes
//! through [`esc`] (text and attribute values alike).

use std::fmt::Write as _;

use super::live;
use super::view::View;

/// `text` for HTML text or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text` (on a character boundary), and how
/// many characters were left out.
pub fn truncate(text: &str, max: usize) -> (&str, usize) {
    match text.char_indices().nth(max) {
        None => (text, 0),
        Some((cut, _)) => (&text[..cut], text[cut..].chars().count()),
    }
}

/// A duration in whole seconds, as its two largest units (`3m 20s`).
pub fn age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A complete page: `title` (escaped here) and `body` (HTML).
fn frame(title: &str, header_extra: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<link rel=\"stylesheet\" href=\"/ui/static/ui.css\">\n\
         <script src=\"/ui/static/ui.js\" defer></script>\n</head>\n<body>\n\
         <header><h1><a href=\"/ui\">curfew</a></h1>{header_extra}</header>\n{body}\n</body>\n</html>\n",
        esc(title)
    )
}

/// A form that POSTs to `action` with the CSRF token: one button.
pub fn button_form(action: &str, csrf: &str, label: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\"{}>{}</button></form>",
        esc(action),
        esc(csrf),
        if class.is_empty() {
            String::new()
        } else {
            format!(" class=\"{}\"", esc(class))
        },
        esc(label)
    )
}

/// The status page: the header, a message after an action, the chart
/// (drawn by the script from successive polls) and the live region (which
/// the script replaces with `/ui/live` every 2 s).
pub fn status_page(view: &View, flash: Option<&str>, can_logout: bool) -> String {
    let mut header =
        String::from("<span id=\"poll\" class=\"muted\">A snapshot: reload to update.</span>");
    if let (true, Some(csrf)) = (can_logout, &view.csrf) {
        header.push_str(&button_form("/ui/logout", csrf, "Log out", "quiet"));
    }
    let mut body = String::new();
    if let Some(msg) = flash {
        let _ = writeln!(body, "<p class=\"flash\" role=\"status\">{}</p>", esc(msg));
    }
    body.push_str(CHART);
    let _ = write!(
        body,
        "<main id=\"live\" aria-live=\"polite\">{}</main>",
        live::render(view)
    );
    frame(&format!("curfew · {}", view.status.phase), &header, &body)
}

/// The chart's frame: two sparklines, filled in by the script (hidden
/// without it: `html.js` is set by the script).
const CHART: &str = "<section id=\"chart\" class=\"needs-js\" aria-label=\"Request rate and latency, last 2 minutes\">\n\
<figure><figcaption>Requests/s <b id=\"rate-now\">–</b></figcaption>\
<svg id=\"rate-chart\" viewBox=\"0 0 240 48\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"requests per second\"><polyline points=\"\"></polyline></svg></figure>\n\
<figure><figcaption>Mean latency <b id=\"latency-now\">–</b></figcaption>\
<svg id=\"latency-chart\" viewBox=\"0 0 240 48\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"mean latency in milliseconds\"><polyline points=\"\"></polyline></svg></figure>\n\
</section>\n";

/// The login form; `wrong` after a refused token.
pub fn login_page(wrong: bool) -> String {
    let note = if wrong {
        "<p class=\"error\" role=\"alert\">Wrong token.</p>\n"
    } else {
        ""
    };
    let body = format!(
        "<main class=\"narrow\">\n<h2>Log in</h2>\n{note}\
         <form method=\"post\" action=\"/ui/login\">\n\
         <label for=\"token\">Admin token (<code>admin_token</code> in curfew.toml)</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <button type=\"submit\">Log in</button>\n</form>\n\
         <p class=\"muted\">The session lasts 12 hours, in a cookie for this page only.</p>\n</main>"
    );
    frame("curfew · log in", "", &body)
}

/// An action's refusal or failure: the message (escaped here) and a way
/// back.
pub fn error_page(message: &str) -> String {
    let body = format!(
        "<main class=\"narrow\"><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/ui\">Back to the status page</a></p></main>",
        esc(message)
    );
    frame("curfew · error", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("abc", 5), ("abc", 0));
        assert_eq!(truncate("ééééé", 2), ("éé", 3));
        assert_eq!(truncate("", 0), ("", 0));
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(200), "3m 20s");
        assert_eq!(age(7500), "2h 5m");
        assert_eq!(age(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(mib(3 << 20), "3.0 MiB");
    }

    #[test]
    fn forms_and_pages_escape_what_they_are_given() {
        let f = button_form("/ui/x\"><b>", "t\"", "<i>", "c");
        assert!(!f.contains("<b>") && !f.contains("<i>"), "{f}");
        assert!(f.contains("value=\"t&quot;\""), "{f}");
        let e = error_page("<script>alert(1)</script>");
        assert!(!e.contains("<script>alert"));
        assert!(e.contains("&lt;script&gt;"));
        assert!(login_page(true).contains("Wrong token"));
        assert!(!login_page(false).contains("Wrong token"));
    }
}
