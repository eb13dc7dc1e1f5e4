//! Which database a store URL names: a SQLite file or a PostgreSQL server.
//!
//! Accepted: `sqlite:///absolute/path.db`, `sqlite://relative/path.db`,
//! `sqlite:path.db`, a plain file path (SQLite), and `postgres://…` /
//! `postgresql://…` (anything libpq-style URLs accept, as sqlx parses them).
//! Passwords never appear in errors or logs: [`redact`].

use std::path::PathBuf;

use super::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

pub fn parse(url: &str) -> Result<Target, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    if url.trim().is_empty() {
        return Err(invalid(
            "it is empty; use sqlite:///path/to/jobs.db, a file path, or postgres://user@host/db",
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_owned()));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.contains(":memory:") || path.contains("mode=memory") {
            return Err(invalid(
                "an in-memory SQLite database is not durable; give a file path",
            ));
        }
        if path.contains('?') {
            return Err(invalid(
                "query parameters are not supported; curfew sets WAL, synchronous=NORMAL and busy_timeout itself",
            ));
        }
        if path.is_empty() {
            return Err(invalid("it names no file; use sqlite:///path/to/jobs.db"));
        }
        path
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(invalid(&format!(
            "unsupported scheme {scheme:?}; use sqlite:///path/to/jobs.db, a file path, or postgres://user@host/db"
        )));
    } else {
        url
    };
    if path.ends_with('/') {
        return Err(invalid("it names a directory, not a database file"));
    }
    let path = PathBuf::from(path);
    if path.file_name().is_none() {
        return Err(invalid("it names a directory, not a database file"));
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.is_dir()
    {
        return Err(invalid(&format!(
            "directory {} does not exist",
            parent.display()
        )));
    }
    Ok(Target::Sqlite(path))
}

/// The URL with any password replaced by `***`, fit for errors and logs.
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    // user:password@ in the authority.
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = authority_start + colon + 1;
                out.replace_range(start..authority_start + at, "***");
            }
        }
    }
    // password=… in the query string.
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(target) => panic!("{url} parsed as {target:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(
            parse("sqlite:///tmp/jobs.db").ok(),
            Some(Target::Sqlite("/tmp/jobs.db".into()))
        );
        assert_eq!(
            parse("sqlite://jobs.db").ok(),
            Some(Target::Sqlite("jobs.db".into()))
        );
        assert_eq!(
            parse("sqlite:jobs.db").ok(),
            Some(Target::Sqlite("jobs.db".into()))
        );
        assert_eq!(
            parse("jobs.db").ok(),
            Some(Target::Sqlite("jobs.db".into()))
        );
        assert_eq!(
            parse("/tmp/jobs.db").ok(),
            Some(Target::Sqlite("/tmp/jobs.db".into()))
        );
    }

    #[test]
    fn postgres_forms() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u:p@h:5432/db?sslmode=disable",
        ] {
            assert_eq!(parse(url).ok(), Some(Target::Postgres(url.into())));
        }
    }

    #[test]
    fn errors_name_the_url_and_the_fix() {
        let e = err("mysql://u@h/db");
        assert!(
            e.contains("mysql://u@h/db") && e.contains("unsupported scheme"),
            "{e}"
        );
        assert!(err("").contains("empty"));
        assert!(err("sqlite://").contains("names no file"));
        assert!(err("sqlite::memory:").contains("not durable"));
        assert!(err("sqlite://x.db?mode=rwc").contains("query parameters"));
        let e = err("/no/such/dir/jobs.db");
        assert!(
            e.contains("/no/such/dir/jobs.db") && e.contains("does not exist"),
            "{e}"
        );
        assert!(err("/tmp/").contains("directory"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
