//! Filters and cursor pagination over the log.

use serde::Deserialize;

use super::event::{format_time, parse_time, policy_id_needle};
use crate::error::{Error, Result};

/// Filters as callers give them (query string or CLI flags); all optional, all combined with AND.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Inclusive lower bound, RFC 3339.
    pub from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    pub to: Option<String>,
    pub app: Option<String>,
    pub wallet: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    /// A determining policy's `@id`.
    pub policy_id: Option<String>,
    pub digest: Option<String>,
    pub request_id: Option<String>,
}

/// A [`Filter`] checked and put in the form the columns hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BoundFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub app: Option<String>,
    pub wallet: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub kind: Option<String>,
    pub policy_needle: Option<String>,
    pub digest: Option<String>,
    pub request_id: Option<String>,
}

impl Filter {
    pub(crate) fn bind(&self) -> Result<BoundFilter> {
        let time = |s: &Option<String>| -> Result<Option<String>> {
            s.as_deref()
                .map(|s| parse_time(s).map(format_time))
                .transpose()
        };
        let clean = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
        Ok(BoundFilter {
            from: time(&self.from)?,
            to: time(&self.to)?,
            app: clean(&self.app),
            wallet: clean(&self.wallet).map(|w| w.to_ascii_lowercase()),
            action: clean(&self.action),
            decision: clean(&self.decision),
            kind: clean(&self.kind),
            policy_needle: clean(&self.policy_id).map(|p| policy_id_needle(&p)),
            digest: clean(&self.digest).map(|d| d.to_ascii_lowercase()),
            request_id: clean(&self.request_id),
        })
    }
}

/// Most rows one page returns.
pub const MAX_PAGE: u32 = 1000;

/// An opaque position in the log: the last sequence number a page returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn parse(s: &str) -> Result<Cursor> {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Cursor)
            .ok_or_else(|| Error::InvalidRequest("invalid cursor".to_owned()))
    }
    pub fn encode(self) -> String {
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_normalise_and_refuse_bad_times() {
        let f = Filter {
            from: Some("2026-11-25T10:00:00+01:00".into()),
            wallet: Some("0xABC".into()),
            app: Some(String::new()),
            ..Filter::default()
        };
        let b = f.bind().unwrap();
        assert_eq!(b.from.as_deref(), Some("2026-11-25T09:00:00.000000Z"));
        assert_eq!(b.wallet.as_deref(), Some("0xabc"));
        assert_eq!(b.app, None);
        let bad = Filter {
            to: Some("yesterday".into()),
            ..Filter::default()
        };
        assert!(bad.bind().is_err());
        assert!(Cursor::parse("-1").is_err());
        assert_eq!(Cursor::parse("42").unwrap(), Cursor(42));
    }
}
