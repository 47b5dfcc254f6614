//! Refusals a flood can cause (rate limits, unknown or revoked keys, missing grants) are not
//! logged one by one — an attacker could otherwise fill the log and slow every decision — but
//! counted per (limiter key or client IP, reason, minute) and logged as one `limited` event
//! per bucket once its minute is over. Counts of the current minute are lost in a crash; that is
//! the price of not writing per refusal.

use std::collections::HashMap;

use parking_lot::Mutex;
use time::OffsetDateTime;

use super::event::{AuditEvent, EventKind, Limited, format_time};

/// Most distinct buckets held; past it, new keys share one overflow bucket per reason so that
/// memory stays bounded under a flood of distinct IPs.
pub const MAX_BUCKETS: usize = 10_000;
const OVERFLOW_KEY: &str = "*overflow*";

#[derive(Debug, Default)]
pub struct Aggregator {
    buckets: Mutex<HashMap<(String, String, i64), u64>>,
}

fn minute_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(60)
}

impl Aggregator {
    pub fn note(&self, key: &str, reason: &str, now: OffsetDateTime) {
        let minute = minute_of(now);
        let mut b = self.buckets.lock();
        let k = (key.to_owned(), reason.to_owned(), minute);
        if b.len() >= MAX_BUCKETS && !b.contains_key(&k) {
            *b.entry((OVERFLOW_KEY.to_owned(), reason.to_owned(), minute))
                .or_insert(0) += 1;
            return;
        }
        *b.entry(k).or_insert(0) += 1;
    }

    /// Takes the buckets whose minute is over (all of them when `all`), as events, oldest
    /// minute first.
    pub fn drain(&self, now: OffsetDateTime, all: bool) -> Vec<AuditEvent> {
        let current = minute_of(now);
        let mut taken: Vec<((String, String, i64), u64)> = {
            let mut b = self.buckets.lock();
            let keys: Vec<_> = b
                .keys()
                .filter(|(_, _, m)| all || *m < current)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| b.remove(&k).map(|n| (k, n)))
                .collect()
        };
        taken.sort();
        taken
            .into_iter()
            .map(|((key, reason, minute), count)| {
                let start = OffsetDateTime::from_unix_timestamp(minute.saturating_mul(60))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let mut e =
                    AuditEvent::new(EventKind::Limited, now, uuid::Uuid::now_v7().to_string());
                e.limited = Some(Limited {
                    key,
                    reason,
                    minute: format_time(start),
                    count: count.to_string(),
                });
                e
            })
            .collect()
    }

    /// Puts counts back after their events could not be written, so that the next flush
    /// retries them.
    pub fn restore(&self, events: &[AuditEvent]) {
        let mut b = self.buckets.lock();
        for e in events {
            let Some(l) = &e.limited else { continue };
            let Ok(t) = super::event::parse_time(&l.minute) else {
                continue;
            };
            let n: u64 = l.count.parse().unwrap_or(0);
            *b.entry((l.key.clone(), l.reason.clone(), minute_of(t)))
                .or_insert(0) += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_reason_and_minute_and_emits_closed_minutes() {
        let a = Aggregator::default();
        let t0 = time::macros::datetime!(2026-11-25 09:00:10 UTC);
        for _ in 0..5 {
            a.note("10.0.0.1", "unauthorized", t0);
        }
        a.note("10.0.0.2", "unauthorized", t0);
        a.note("10.0.0.1", "unauthorized", t0 + time::Duration::minutes(1));
        assert!(a.drain(t0, false).is_empty());
        let out = a.drain(t0 + time::Duration::minutes(1), false);
        assert_eq!(out.len(), 2);
        let l = out[0].limited.as_ref().unwrap();
        assert_eq!((l.key.as_str(), l.count.as_str()), ("10.0.0.1", "5"));
        assert_eq!(l.minute, "2026-11-25T09:00:00.000000Z");
        a.restore(&out);
        let all = a.drain(t0 + time::Duration::minutes(1), true);
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn memory_is_bounded() {
        let a = Aggregator::default();
        let t0 = time::macros::datetime!(2026-11-25 09:00:10 UTC);
        for i in 0..(MAX_BUCKETS + 50) {
            a.note(&format!("ip{i}"), "rate_limited", t0);
        }
        let out = a.drain(t0, true);
        assert_eq!(out.len(), MAX_BUCKETS + 1);
    }
}
