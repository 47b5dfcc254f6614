//! Rates and durations as operators write them (`50/s burst 200`, `12h`): app records carry a
//! [`Rate`], and the gateway's limiters are built from it.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// A rate as operators write it: `50/s`, `3000/min`, `10/h`, optionally with a burst
/// (`50/s burst 200`). Without one, the burst is the count: a full period's worth at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
    pub burst: NonZeroU32,
}

impl Rate {
    pub fn per_second(count: NonZeroU32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
            burst: count,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Rate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Rate> {
        let bad = || {
            Error::InvalidRequest(format!(
                "rate {s:?}: expected COUNT/UNIT (s, min, h, d), e.g. 50/s or 50/s burst 200"
            ))
        };
        let mut words = s.split_whitespace();
        let head = words.next().ok_or_else(bad)?;
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some("burst"), Some(n), None) => Some(n.parse::<NonZeroU32>().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        let (count, unit) = head.split_once('/').ok_or_else(bad)?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        Ok(Rate {
            count,
            per,
            burst: burst.unwrap_or(count),
        })
    }
}

/// A duration as operators write it: `30s`, `15m`, `12h`, `7d`, or `0`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || Error::InvalidRequest(format!("{s:?}: use a number with s, m, h or d"));
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_secs(secs))
}
