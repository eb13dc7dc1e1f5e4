//! "Did you mean …?" for a misspelt config key or environment variable:
//! the closest known name by edit distance, when it is close enough to be
//! the likely intent (otherwise the caller lists the names).

/// The known name closest to `word` (Damerau–Levenshtein, case-insensitive),
/// if at most a third of `word`'s length (at least 1, at most 3) edits away.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .map(|k| {
            (
                strsim::damerau_levenshtein(&word_l, &k.to_ascii_lowercase()),
                k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// serde's "unknown field `x`, expected one of `a`, `b`, …" inside a TOML
/// error, rewritten as "unknown key `x`: did you mean `a`?" when one is
/// close, else "unknown key `x` (the keys here: a, b, …)". Any other message
/// is returned as it is.
pub fn unknown_key_message(message: &str) -> String {
    let Some(start) = message.find("unknown field `") else {
        return message.to_string();
    };
    let rest = &message[start + "unknown field `".len()..];
    let Some(end) = rest.find('`') else {
        return message.to_string();
    };
    let word = &rest[..end];
    let tail = &rest[end + 1..];
    let line_end = tail.find('\n').unwrap_or(tail.len());
    let expected = &tail[..line_end];
    // The names are the backquoted words after "expected".
    let known: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| !k.is_empty())
        .collect();
    let replacement = match closest(word, known.iter().copied()) {
        Some(k) => format!("unknown key `{word}`: did you mean `{k}`?"),
        None if known.is_empty() => format!("unknown key `{word}`"),
        None => format!("unknown key `{word}` (the keys here: {})", known.join(", ")),
    };
    format!("{}{replacement}{}", &message[..start], &tail[line_end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_name_is_suggested() {
        let keys = ["workers", "worker_concurrency", "graceful_timeout", "bind"];
        assert_eq!(closest("wokers", keys), Some("workers"));
        assert_eq!(closest("gracefull_timeout", keys), Some("graceful_timeout"));
        assert_eq!(closest("WORKERS", keys), Some("workers"));
        assert_eq!(closest("bnid", keys), Some("bind"));
    }

    #[test]
    fn a_far_name_is_not() {
        let keys = ["workers", "bind"];
        assert_eq!(closest("colour", keys), None);
        assert_eq!(closest("x", keys), None);
    }

    #[test]
    fn the_toml_message_suggests_instead_of_listing() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            workers: Option<u32>,
            worker_concurrency: Option<u32>,
            bind: Option<String>,
        }
        let e = toml::from_str::<T>("bind = \"x\"\nwokers = 3").expect_err("unknown");
        let m = unknown_key_message(&e.to_string());
        assert!(
            m.contains("unknown key `wokers`: did you mean `workers`?"),
            "{m}"
        );
        assert!(!m.contains("worker_concurrency"), "{m}");
        assert!(m.contains("line 2"), "the position is kept: {m}");

        let e = toml::from_str::<T>("colour = 3").expect_err("unknown");
        let m = unknown_key_message(&e.to_string());
        assert!(
            m.contains("unknown key `colour` (the keys here: workers, worker_concurrency, bind)"),
            "{m}"
        );
    }

    #[test]
    fn other_messages_pass_through() {
        assert_eq!(unknown_key_message("invalid type"), "invalid type");
    }
}
