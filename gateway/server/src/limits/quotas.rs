//! Quotas on work whose cost outlives the request: a new account registered on the page (a user
//! row, a passkey and permanent audit events, for anyone who asks) and a key generation (about
//! 200 ms of gateway CPU, spent as soon as it starts, whether or not it finishes).
//!
//! * **Page registrations per client IP** (`registration_ip_rate`, default `5/h`): counted when
//!   a person who is not logged in starts one, in memory, keyed by [`crate::limits::ip_key`]
//!   (IPv6 by /64). A start is cheap to count and is what creates a ceremony row, so the rows one
//!   address can have waiting are bounded by the same count; and since each address spends only
//!   its own bucket, nobody can use it up for anyone else.
//! * **New self-registered accounts per day, gateway-wide** (`registrations_per_day`, default
//!   1000): counted from the database over the last 24 hours, on *completed* registrations (the
//!   `users.self_registered` rows). Counting starts instead would let one stranger close the page
//!   to everyone with bare `register/start` calls from enough addresses; a completion costs a
//!   passkey ceremony and a start that passed its address's quota. It is checked at start (so that
//!   nobody is made to create a passkey the gateway will refuse) and again right before the
//!   account is stored. Two completions racing at the cap may both pass: the cap bounds cost, it
//!   is no exact count.
//! * **Key generations per device and per person per hour** (`keygens_per_device_per_hour`,
//!   default 10; `keygens_per_person_per_hour`, default 20): counted from the `ceremonies` table,
//!   which records every key generation before its first protocol message, aborted ones
//!   included. Counting rows survives restarts and holds across replicas on one database; starts
//!   racing at the quota may overshoot it by the number running at once.
//!
//! A refusal is `429` with `Retry-After`: when the oldest counted use leaves the window.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use time::OffsetDateTime;

use crate::accounts::devices::Device;
use crate::audit::Store;
use crate::audit::event::{format_time, parse_time};
use crate::error::{Error, Quota, Result};
use crate::limits::RateQuota as _;
use crate::limits::{Rate, ip_key};
use crate::store::db::{RowLike, db, with_pool};

/// Default `registration_ip_rate`: a household or an office registers a few people an hour.
pub const DEFAULT_REGISTRATION_IP_RATE: &str = "5/h";
/// Default `registrations_per_day`.
pub const DEFAULT_REGISTRATIONS_PER_DAY: u32 = 1000;
/// Default `keygens_per_device_per_hour`: a person makes a wallet or two at a time; retries of
/// an interrupted generation fit too.
pub const DEFAULT_KEYGENS_PER_DEVICE: u32 = 10;
/// Default `keygens_per_person_per_hour`, across all of the person's devices.
pub const DEFAULT_KEYGENS_PER_PERSON: u32 = 20;

const FIVE: std::num::NonZeroU32 = std::num::NonZeroU32::MIN.saturating_add(4);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The quotas' settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    pub registration_ip: Rate,
    pub registrations_per_day: u32,
    pub keygens_per_device: u32,
    pub keygens_per_person: u32,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            registration_ip: Rate {
                count: FIVE,
                per: HOUR,
                burst: FIVE,
            },
            registrations_per_day: DEFAULT_REGISTRATIONS_PER_DAY,
            keygens_per_device: DEFAULT_KEYGENS_PER_DEVICE,
            keygens_per_person: DEFAULT_KEYGENS_PER_PERSON,
        }
    }
}

/// The quotas of one process: the per-IP registration bucket is in memory (per process, like
/// the other rate limits); everything else is counted in the database.
pub struct Quotas {
    settings: QuotaSettings,
    clock: DefaultClock,
    registration_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("settings", &self.settings)
            .field("registration_ip_keys", &self.registration_ip.len())
            .finish_non_exhaustive()
    }
}

/// `Retry-After` for a window of `window` whose limiting use was at `at`: whole seconds, at
/// least one.
fn retry_after(at: OffsetDateTime, window: Duration, now: OffsetDateTime) -> u64 {
    let left = (at + window - now).whole_seconds();
    u64::try_from(left).unwrap_or(0).max(1)
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Quotas {
        Quotas {
            settings,
            clock: DefaultClock::default(),
            registration_ip: RateLimiter::keyed(settings.registration_ip.quota()),
        }
    }

    pub fn settings(&self) -> QuotaSettings {
        self.settings
    }

    /// Spends one registration start of the client at `ip` (`None`, a caller not seen through
    /// a socket, shares one bucket with every other such caller).
    pub fn start_registration(&self, ip: Option<IpAddr>) -> Result<()> {
        let key = ip.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ip_key);
        self.registration_ip.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            Error::QuotaExceeded {
                quota: Quota::RegistrationIp,
                retry_after_secs: secs,
            }
        })
    }

    /// Refuses when the gateway-wide cap of completed self-registrations in the last 24 hours
    /// is reached.
    pub async fn check_registrations_today(
        &self,
        store: &Store,
        now: OffsetDateTime,
    ) -> Result<()> {
        const SQL: &str = "SELECT created_at AS t FROM users WHERE self_registered = $1 AND created_at >= $2 ORDER BY created_at DESC LIMIT 1 OFFSET $3";
        let since = format_time(now - DAY);
        let nth = with_pool!(store, pool => {
            let row = sqlx::query(SQL)
                .bind(true)
                .bind(since.as_str())
                .bind(i64::from(self.settings.registrations_per_day.saturating_sub(1)))
                .fetch_optional(pool)
                .await
                .map_err(db("counting registrations"))?;
            row.map(|r| r.text("t")).transpose().map_err(db("counting registrations"))?
        });
        refuse_if_full(nth, DAY, now, Quota::RegistrationDaily)
    }

    /// Refuses a key generation by `device` when it, or its person's devices together, started
    /// their quota in the last hour.
    pub async fn check_keygen(
        &self,
        store: &Store,
        device: &Device,
        now: OffsetDateTime,
    ) -> Result<()> {
        const BY_DEVICE: &str = "SELECT started_at AS t FROM ceremonies WHERE device_id = $1 AND kind = 'keygen' AND started_at >= $2 ORDER BY started_at DESC LIMIT 1 OFFSET $3";
        const BY_PERSON: &str = "SELECT c.started_at AS t FROM ceremonies c JOIN devices d ON d.id = c.device_id WHERE d.user_id = $1 AND c.kind = 'keygen' AND c.started_at >= $2 ORDER BY c.started_at DESC LIMIT 1 OFFSET $3";
        let since = format_time(now - HOUR);
        let person = device.user_id.to_string();
        for (sql, key, max, quota) in [
            (
                BY_DEVICE,
                device.device_id.as_str(),
                self.settings.keygens_per_device,
                Quota::KeygenDevice,
            ),
            (
                BY_PERSON,
                person.as_str(),
                self.settings.keygens_per_person,
                Quota::KeygenPerson,
            ),
        ] {
            let nth = with_pool!(store, pool => {
                let row = sqlx::query(sql)
                    .bind(key)
                    .bind(since.as_str())
                    .bind(i64::from(max.saturating_sub(1)))
                    .fetch_optional(pool)
                    .await
                    .map_err(db("counting key generations"))?;
                row.map(|r| r.text("t")).transpose().map_err(db("counting key generations"))?
            });
            if let Err(e) = refuse_if_full(nth, HOUR, now, quota) {
                tracing::info!(device = %device.device_id, user = %device.user_id, ?quota, "key generation refused by its quota");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Forgets addresses whose registration bucket has refilled.
    pub fn sweep(&self) {
        self.registration_ip.retain_recent();
        self.registration_ip.shrink_to_fit();
    }

    /// Sweeps every `every` for as long as the quotas are alive.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        crate::limits::every_while_alive(self, every, Quotas::sweep);
    }
}

/// `nth`: the time of the use that fills the quota, when that many are in the window.
fn refuse_if_full(
    nth: Option<String>,
    window: Duration,
    now: OffsetDateTime,
    quota: Quota,
) -> Result<()> {
    let Some(at) = nth else { return Ok(()) };
    let at = parse_time(&at).unwrap_or(now);
    Err(Error::QuotaExceeded {
        quota,
        retry_after_secs: retry_after(at, window, now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_registration_rate_is_the_documented_one() {
        assert_eq!(
            QuotaSettings::default().registration_ip,
            DEFAULT_REGISTRATION_IP_RATE.parse().unwrap()
        );
    }

    #[test]
    fn registration_starts_are_counted_per_address_and_ipv6_per_64() {
        let q = Quotas::new(QuotaSettings {
            registration_ip: "2/h".parse().unwrap(),
            ..QuotaSettings::default()
        });
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert!(q.start_registration(Some(a)).is_ok());
        assert!(q.start_registration(Some(b)).is_ok());
        let refused = q.start_registration(Some(a)).unwrap_err();
        assert_eq!(refused.code(), "registration_limited");
        // One start every 30 minutes refills.
        assert!(
            (1700..=1800).contains(&refused.retry_after_secs().unwrap()),
            "{refused:?}"
        );
        // Another address, and another /64, have their own.
        assert!(
            q.start_registration(Some("10.0.0.1".parse().unwrap()))
                .is_ok()
        );
        assert!(
            q.start_registration(Some("2001:db8:1:3::1".parse().unwrap()))
                .is_ok()
        );
    }

    #[test]
    fn retry_after_is_when_the_limiting_use_leaves_the_window() {
        let now = time::macros::datetime!(2026-11-25 12:00 UTC);
        let at = now - Duration::from_secs(3000);
        assert_eq!(retry_after(at, HOUR, now), 600);
        assert_eq!(retry_after(now - HOUR, HOUR, now), 1);
    }
}
