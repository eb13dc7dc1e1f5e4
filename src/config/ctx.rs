//! The checkers every validation group shares: counts in a range,
//! durations (positive, optional, at least a minimum), URL paths, choices
//! from a list, and errors that name the key, where its value came from,
//! the value and what is allowed.

use std::fmt;
use std::time::Duration;

use super::raw::RawDuration;
use super::{ConfigError, Origin, Origins, duration};

/// Checks values and builds errors that name the key and where it came from.
pub(crate) struct Ctx<'a> {
    pub(crate) origins: &'a Origins,
    /// Keys inside a table (`jobs.queues.mail.timeout`) came from wherever
    /// the table did: this top-level key's origin.
    section: Option<&'static str>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn top(origins: &'a Origins) -> Ctx<'a> {
        Ctx {
            origins,
            section: None,
        }
    }

    pub(crate) fn section(origins: &'a Origins, key: &'static str) -> Ctx<'a> {
        Ctx {
            origins,
            section: Some(key),
        }
    }

    pub(crate) fn err(
        &self,
        key: impl AsRef<str>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> ConfigError {
        let key = key.as_ref();
        let origin_key = self.section.unwrap_or(key);
        // Inside a section, the layer that set the section's own key
        // (`jobs.queues` for `jobs.queues.mail.timeout`), if recorded.
        let sub_key = self.section.and_then(|s| {
            let rest = key.strip_prefix(s)?.strip_prefix('.')?;
            Some(format!("{s}.{}", rest.split('.').next()?))
        });
        let origin = sub_key
            .and_then(|k| self.origins.get(k.as_str()))
            .or_else(|| self.origins.get(origin_key))
            .cloned()
            .unwrap_or(Origin::Default);
        ConfigError::Invalid {
            key: key.to_string(),
            origin,
            value: value.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn int(
        &self,
        key: &str,
        v: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if n < min || n > max => {
                Err(self.err(key, n, format!("must be between {min} and {max}")))
            }
            Some(n) => Ok(n),
        }
    }

    pub(crate) fn count(
        &self,
        key: &str,
        v: Option<i64>,
        default: usize,
        min: i64,
        max: i64,
    ) -> Result<usize, ConfigError> {
        // `default` fits: every default count is far below i64::MAX.
        self.int(key, v, default as i64, min, max)
            .map(|n| n as usize)
    }

    pub(crate) fn duration(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(raw) => duration::parse(&raw).map_err(|m| self.err(key, &raw, m)),
        }
    }

    /// [`Ctx::duration`], and at least `min` when given.
    pub(crate) fn duration_at_least(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, v, default)?;
        self.at_least(key, d, min)
    }

    /// `d`, or an error naming `key` when it is under `min`.
    fn at_least(&self, key: &str, d: Duration, min: Duration) -> Result<Duration, ConfigError> {
        if d < min {
            return Err(self.err(key, format!("{d:?}"), format!("must be at least {min:?}")));
        }
        Ok(d)
    }

    /// [`Ctx::duration`] that must not be zero.
    pub(crate) fn positive(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, v, default)?;
        if d.is_zero() {
            return Err(self.err(key, "0", "must be greater than zero"));
        }
        Ok(d)
    }

    /// [`Ctx::duration`] where `0` turns the feature off (`None`).
    pub(crate) fn optional(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        Ok(Some(self.duration(key, v, default)?).filter(|d| !d.is_zero()))
    }

    /// [`Ctx::optional`] that, when on, is at least `min` (a shorter
    /// timeout cuts every client or request before it can succeed).
    pub(crate) fn optional_at_least(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Result<Option<Duration>, ConfigError> {
        let d = self.optional(key, v, default)?;
        if let Some(d) = d
            && d < min
        {
            return Err(self.err(
                key,
                format!("{d:?}"),
                format!("must be 0 (off) or at least {min:?}"),
            ));
        }
        Ok(d)
    }

    /// [`Ctx::positive`] and at least `min`.
    pub(crate) fn positive_at_least(
        &self,
        key: &str,
        v: Option<RawDuration>,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.positive(key, v, default)?;
        self.at_least(key, d, min)
    }

    /// A URL path starting with `/`, if given.
    pub(crate) fn url_path(
        &self,
        key: &str,
        v: Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(p) if p.starts_with('/') && p.parse::<http::uri::PathAndQuery>().is_ok() => {
                Ok(Some(p))
            }
            Some(p) => Err(self.err(
                key,
                format!("{p:?}"),
                "must be a URL path starting with '/', e.g. \"/health\"",
            )),
        }
    }

    /// One of `allowed` (`default` when not given).
    pub(crate) fn one_of(
        &self,
        key: &str,
        v: Option<String>,
        default: &str,
        allowed: &[&str],
    ) -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| default.to_owned());
        if allowed.contains(&v.as_str()) {
            return Ok(v);
        }
        let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        let list = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(self.err(key, format!("{v:?}"), format!("must be {list}")))
    }
}
