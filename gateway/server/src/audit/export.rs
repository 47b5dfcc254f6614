//! Export formats. NDJSON is the auditor's format (docs/architecture.md §7): one object per line
//! with the decimal `seq`, hex `prev_hash` and `hash`, and the `canonical` text as a string —
//! enough to recompute the chain with nothing but SHA-256 — plus convenience fields read from the
//! event. CSV is for spreadsheets and carries the filter columns and hashes, not the full event.

use serde::Serialize;

use super::chain::StoredEvent;
use super::event::IndexColumns;
use super::query::{BoundFilter, Filter, MAX_PAGE};
use super::store::Store;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    seq: String,
    prev_hash: String,
    hash: String,
    canonical: &'a str,
    time: Option<&'a str>,
    kind: Option<&'a str>,
    decision: Option<&'a str>,
}

/// One NDJSON line, newline included.
pub fn ndjson_line(e: &StoredEvent) -> String {
    let cols = IndexColumns::from_canonical(&e.canonical);
    let line = Line {
        seq: e.seq.to_string(),
        prev_hash: hex::encode(&e.prev_hash),
        hash: hex::encode(&e.hash),
        canonical: &e.canonical,
        time: cols.as_ref().map(|c| c.time.as_str()),
        kind: cols.as_ref().map(|c| c.kind.as_str()),
        decision: cols.as_ref().and_then(|c| c.decision.as_deref()),
    };
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

pub const CSV_HEADER: &str = "seq,time,request_id,kind,app,wallet,action,decision,policy_ids,digest,policy_version,prev_hash,hash\n";

fn csv_field(out: &mut String, s: &str) {
    // A leading = + - @ would make a spreadsheet evaluate the cell; prefix a quote.
    let guarded = matches!(s.chars().next(), Some('=' | '+' | '-' | '@'));
    if guarded || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if guarded {
            out.push('\'');
        }
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// One CSV record, newline included.
pub fn csv_line(e: &StoredEvent) -> String {
    let c = IndexColumns::from_canonical(&e.canonical).unwrap_or_default();
    let ids: Vec<&str> = c
        .policy_ids
        .split(super::event::POLICY_ID_SEPARATOR)
        .filter(|s| !s.is_empty())
        .collect();
    let fields = [
        e.seq.to_string(),
        c.time,
        c.request_id,
        c.kind,
        c.app.unwrap_or_default(),
        c.wallet.unwrap_or_default(),
        c.action.unwrap_or_default(),
        c.decision.unwrap_or_default(),
        ids.join(" "),
        c.digest.unwrap_or_default(),
        c.policy_version.unwrap_or_default(),
        hex::encode(&e.prev_hash),
        hex::encode(&e.hash),
    ];
    let mut out = String::with_capacity(256);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f);
    }
    out.push('\n');
    out
}

/// Pages through the events matching a filter in `seq` order, holding one page in memory at a
/// time, so that exports of any size stream.
#[derive(Debug)]
pub struct Pager {
    store: Store,
    filter: BoundFilter,
    unfiltered: bool,
    after: i64,
    limit: Option<u64>,
    done: bool,
}

impl Pager {
    pub fn new(store: Store, filter: &Filter, after: i64, limit: Option<u64>) -> Result<Pager> {
        let bound = filter.bind()?;
        Ok(Pager {
            unfiltered: bound == BoundFilter::default(),
            store,
            filter: bound,
            after,
            limit,
            done: false,
        })
    }

    /// The next page, empty at the end.
    pub async fn next_page(&mut self) -> Result<Vec<StoredEvent>> {
        if self.done {
            return Ok(Vec::new());
        }
        let want = match self.limit {
            Some(0) => {
                self.done = true;
                return Ok(Vec::new());
            }
            Some(n) => u32::try_from(n.min(u64::from(MAX_PAGE))).unwrap_or(MAX_PAGE),
            None => MAX_PAGE,
        };
        let page = if self.unfiltered {
            self.store.range(self.after, want).await?
        } else {
            self.store.filtered(&self.filter, self.after, want).await?
        };
        if let Some(last) = page.last() {
            self.after = last.seq;
        }
        if let Some(n) = self.limit.as_mut() {
            *n = n.saturating_sub(page.len() as u64);
        }
        if (page.len() as u64) < u64::from(want) {
            self.done = true;
        }
        Ok(page)
    }

    /// Where the next page would start.
    pub fn cursor(&self) -> i64 {
        self.after
    }
}

/// Renders a page in `format`.
pub fn render(format: Format, page: &[StoredEvent]) -> String {
    let mut out = String::with_capacity(page.len() * 1024);
    for e in page {
        out.push_str(&match format {
            Format::Ndjson => ndjson_line(e),
            Format::Csv => csv_line(e),
        });
    }
    out
}

/// Writes a whole export to `w` (the CLI's path); HTTP streams the same pages.
pub async fn write_all(
    store: Store,
    filter: &Filter,
    format: Format,
    w: &mut (dyn std::io::Write + Send),
) -> Result<u64> {
    let mut pager = Pager::new(store, filter, 0, None)?;
    let mut n = 0u64;
    if format == Format::Csv {
        w.write_all(CSV_HEADER.as_bytes())
            .map_err(|e| crate::error::Error::Internal(format!("writing the export: {e}")))?;
    }
    loop {
        let page = pager.next_page().await?;
        if page.is_empty() {
            break;
        }
        n += page.len() as u64;
        w.write_all(render(format, &page).as_bytes())
            .map_err(|e| crate::error::Error::Internal(format!("writing the export: {e}")))?;
    }
    w.flush()
        .map_err(|e| crate::error::Error::Internal(format!("writing the export: {e}")))?;
    Ok(n)
}

/// Reads an NDJSON export (an archive) back into rows.
pub fn parse_ndjson(text: &str) -> std::result::Result<Vec<StoredEvent>, String> {
    #[derive(serde::Deserialize)]
    struct In {
        seq: String,
        prev_hash: String,
        hash: String,
        canonical: String,
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: In = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(StoredEvent {
            seq: r
                .seq
                .parse()
                .map_err(|_| format!("line {}: bad seq", n + 1))?,
            prev_hash: hex::decode(&r.prev_hash)
                .map_err(|_| format!("line {}: bad prev_hash", n + 1))?,
            hash: hex::decode(&r.hash).map_err(|_| format!("line {}: bad hash", n + 1))?,
            canonical: r.canonical,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_guards_formulas() {
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"");
        s.push('|');
        csv_field(&mut s, "=cmd()");
        assert_eq!(s, "\"a,\"\"b\"\"\"|\"'=cmd()\"");
    }

    #[test]
    fn ndjson_round_trips() {
        let e = StoredEvent {
            seq: 3,
            prev_hash: vec![1; 32],
            hash: vec![2; 32],
            canonical: "{\"a\":\"\\u0001é\"}".into(),
        };
        let line = ndjson_line(&e);
        assert_eq!(parse_ndjson(&line).unwrap(), vec![e]);
    }
}
