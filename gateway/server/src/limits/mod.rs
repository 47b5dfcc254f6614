//! Rate limits (docs/architecture.md §1): a per-client-IP limiter that runs before any key lookup,
//! then keyed limiters per app (each app's own `--rate`) and per wallet that run before decoding
//! and Cedar, so a refused request costs a hash-map probe and nothing else.
//!
//! Keyed state is swept: a key whose bucket has refilled is indistinguishable from a fresh one
//! and is dropped, so memory follows the number of keys seen in the last refill period, not
//! since start. IPv6 clients are keyed by their /64, the block one subscriber typically holds,
//! so rotating addresses inside it does not reset the limit.

pub mod quotas;
pub mod replicas;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;

use crate::error::{Error, Result};

pub use parapet_decide::rate::{Rate, parse_duration};

/// A [`Rate`] as a governor quota: the period between cells, and the burst.
pub(crate) trait RateQuota {
    fn quota(&self) -> Quota;
}

impl RateQuota for Rate {
    fn quota(&self) -> Quota {
        let replenish = self.per / self.count.get();
        Quota::with_period(replenish.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.burst)
    }
}

/// Which limiter refused, and when the caller may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub limiter: &'static str,
    pub retry_after: Duration,
}

impl Refusal {
    /// Whole seconds for `Retry-After`, rounded up and never 0 (0 invites an immediate retry).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    pub fn into_error(self) -> Error {
        Error::RateLimited {
            limiter: self.limiter,
            retry_after_secs: self.retry_after_secs(),
        }
    }
}

/// The key a client IP is limited under: the address itself for IPv4, its /64 for IPv6.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[derive(Debug)]
struct AppLimiter {
    rate: Rate,
    limiter: DefaultDirectRateLimiter,
}

/// Rates the limiters start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub ip: Rate,
    pub wallet: Rate,
    /// For apps created without `--rate` (and the development default app).
    pub app_default: Rate,
    /// Per user, for requests acting with a user's session.
    pub user: Rate,
}

/// Every limiter of one process. The app, wallet and user limits are global: each of the N
/// live replicas on one database enforces 1/N of the configured rate and burst
/// ([`replicas`], docs/adr/0003-global-rate-limits.md), so N replicas behind a balancer that
/// spreads load admit the configured rate, not N times it. The IP limit stays per replica: it
/// protects each process's own resources.
pub struct Limits {
    settings: LimitSettings,
    clock: DefaultClock,
    ip: DefaultKeyedRateLimiter<IpAddr>,
    shared: arc_swap::ArcSwap<Shares>,
}

/// The limiters whose rates are divided among the replicas.
struct Shares {
    /// How many live replicas the rates are divided by.
    replicas: u32,
    wallet: DefaultKeyedRateLimiter<[u8; 20]>,
    user: DefaultKeyedRateLimiter<uuid::Uuid>,
    apps: RwLock<HashMap<String, Arc<AppLimiter>>>,
}

impl Shares {
    fn new(settings: &LimitSettings, replicas: u32) -> Shares {
        Shares {
            replicas,
            wallet: RateLimiter::keyed(share(settings.wallet, replicas).quota()),
            user: RateLimiter::keyed(share(settings.user, replicas).quota()),
            apps: RwLock::new(HashMap::new()),
        }
    }
}

/// One replica's share of `rate` when `replicas` are alive: the same count over a period
/// `replicas` times as long, and the burst divided (rounded up, at least 1).
pub fn share(rate: Rate, replicas: u32) -> Rate {
    let n = replicas.max(1);
    Rate {
        count: rate.count,
        per: rate.per.saturating_mul(n),
        burst: std::num::NonZeroU32::new(rate.burst.get().div_ceil(n))
            .unwrap_or(std::num::NonZeroU32::MIN),
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared.load();
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .field("replicas", &shared.replicas)
            .field("ip_keys", &self.ip.len())
            .field("wallet_keys", &shared.wallet.len())
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            settings,
            clock: DefaultClock::default(),
            ip: RateLimiter::keyed(settings.ip.quota()),
            shared: arc_swap::ArcSwap::from_pointee(Shares::new(&settings, 1)),
        }
    }

    /// Divides the global limits among `replicas` live replicas. A change starts every shared
    /// bucket afresh (full to the new burst); membership changes are rare (a replica starts,
    /// stops or dies), so that costs one burst per change.
    pub fn set_replicas(&self, replicas: u32) {
        let replicas = replicas.max(1);
        if self.shared.load().replicas != replicas {
            tracing::info!(replicas, "rate limits divided among the live replicas");
            self.shared
                .store(Arc::new(Shares::new(&self.settings, replicas)));
        }
    }

    /// How many live replicas the global limits are divided among.
    pub fn replicas(&self) -> u32 {
        self.shared.load().replicas
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    fn refusal(
        &self,
        limiter: &'static str,
        not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> Refusal {
        Refusal {
            limiter,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }

    /// The first limiter: before authentication, so floods of bad keys are cut here too.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.ip
            .check_key(&ip_key(ip))
            .map_err(|n| self.refusal("ip", &n))
    }

    /// Per app, at the app's own rate (`None`: the configured default). A changed rate takes
    /// effect with a fresh bucket the first time the app is seen with it.
    pub fn check_app(&self, app_id: &str, rate: Option<Rate>) -> Result<(), Refusal> {
        let shared = self.shared.load();
        let rate = share(rate.unwrap_or(self.settings.app_default), shared.replicas);
        let existing = shared.apps.read().get(app_id).cloned();
        let limiter = match existing {
            Some(l) if l.rate == rate => l,
            _ => {
                let fresh = Arc::new(AppLimiter {
                    rate,
                    limiter: RateLimiter::direct(rate.quota()),
                });
                let mut apps = shared.apps.write();
                let entry = apps
                    .entry(app_id.to_owned())
                    .or_insert_with(|| fresh.clone());
                if entry.rate != rate {
                    *entry = fresh;
                }
                entry.clone()
            }
        };
        limiter.limiter.check().map_err(|n| self.refusal("app", &n))
    }

    /// Per wallet address, before any decoding.
    pub fn check_wallet(&self, wallet: [u8; 20]) -> Result<(), Refusal> {
        self.shared
            .load()
            .wallet
            .check_key(&wallet)
            .map_err(|n| self.refusal("wallet", &n))
    }

    /// Per user, after the session is resolved and before decoding.
    pub fn check_user(&self, user: uuid::Uuid) -> Result<(), Refusal> {
        self.shared
            .load()
            .user
            .check_key(&user)
            .map_err(|n| self.refusal("user", &n))
    }

    /// Forgets every key whose bucket has refilled, and gives the memory back.
    pub fn sweep(&self) {
        let shared = self.shared.load();
        shared.user.retain_recent();
        shared.user.shrink_to_fit();
        self.ip.retain_recent();
        self.ip.shrink_to_fit();
        shared.wallet.retain_recent();
        shared.wallet.shrink_to_fit();
    }

    /// Keys currently held by the keyed limiters (IP, wallet).
    pub fn tracked_keys(&self) -> (usize, usize) {
        (self.ip.len(), self.shared.load().wallet.len())
    }

    /// Sweeps every `every` for as long as the limits are alive.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        every_while_alive(self, every, Limits::sweep);
    }
}

/// Failed attempts per key in a fixed window (logins: per client IP, and per person for failures
/// that prove who they are about): a key with `max` failures in its window is refused until the
/// window ends. Successes cost nothing.
///
/// Runs `work` on `target` every `every` while anything else holds `target`: the task holds it
/// only weakly, so a table that is dropped stops being swept instead of being kept alive.
pub fn every_while_alive<T: Send + Sync + 'static>(target: &Arc<T>, every: Duration, work: fn(&T)) {
    let weak = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(target) = weak.upgrade() else { break };
            work(&target);
        }
    });
}

/// Bounded at [`FailureWindow::MAX_KEYS`] keys, and never emptied to make room: an attacker who
/// can fail under many keys could otherwise wipe everyone's count, their own included. Room is
/// made by dropping expired windows first, then the keys with the fewest failures (oldest first
/// among equals), so a key at its limit is the last to go: pushing one out takes a table full
/// of keys that each failed as often, which the per-IP count makes expensive.
#[derive(Debug)]
pub struct FailureWindow {
    max: u32,
    window: Duration,
    max_keys: usize,
    keys: parking_lot::Mutex<HashMap<String, (time::OffsetDateTime, u32)>>,
}

impl FailureWindow {
    pub const MAX_KEYS: usize = 10_000;

    pub fn new(max: u32, window: Duration) -> FailureWindow {
        FailureWindow::bounded(max, window, Self::MAX_KEYS)
    }

    /// [`FailureWindow::new`] holding at most `max_keys` keys (at least one).
    pub fn bounded(max: u32, window: Duration, max_keys: usize) -> FailureWindow {
        FailureWindow {
            max,
            window,
            max_keys: max_keys.max(1),
            keys: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may try now.
    pub fn check(&self, key: &str, now: time::OffsetDateTime) -> Result<(), Refusal> {
        let keys = self.keys.lock();
        match keys.get(key) {
            Some((start, n)) if *n >= self.max && now < *start + self.window => Err(Refusal {
                limiter: "login",
                retry_after: (*start + self.window - now)
                    .try_into()
                    .unwrap_or(self.window),
            }),
            _ => Ok(()),
        }
    }

    /// Counts one failure of `key`.
    pub fn fail(&self, key: &str, now: time::OffsetDateTime) {
        let mut keys = self.keys.lock();
        if keys.len() >= self.max_keys && !keys.contains_key(key) {
            self.make_room(&mut keys, now);
        }
        let entry = keys.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Checks and counts one attempt of `key` in one step, for work that costs before it can
    /// tell success from failure (hashing a recovery secret): concurrent attempts cannot all pass
    /// the check before any of them is counted. A success gives its count back
    /// ([`FailureWindow::refund`]).
    pub fn take(&self, key: &str, now: time::OffsetDateTime) -> Result<(), Refusal> {
        let mut keys = self.keys.lock();
        if let Some((start, n)) = keys.get(key)
            && *n >= self.max
            && now < *start + self.window
        {
            return Err(Refusal {
                limiter: "login",
                retry_after: (*start + self.window - now)
                    .try_into()
                    .unwrap_or(self.window),
            });
        }
        if keys.len() >= self.max_keys && !keys.contains_key(key) {
            self.make_room(&mut keys, now);
        }
        let entry = keys.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        Ok(())
    }

    /// Gives back one attempt [`FailureWindow::take`] counted, once it turned out a success.
    pub fn refund(&self, key: &str) {
        if let Some(entry) = self.keys.lock().get_mut(key) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired windows; if that is not enough, the least-failed sixteenth of the table
    /// (oldest first among equals), so that the next inserts do not each pay for a full scan.
    fn make_room(
        &self,
        keys: &mut HashMap<String, (time::OffsetDateTime, u32)>,
        now: time::OffsetDateTime,
    ) {
        let window = self.window;
        keys.retain(|_, (start, _)| now < *start + window);
        if keys.len() < self.max_keys {
            return;
        }
        let evict = (self.max_keys / 16).max(1);
        let mut ranked: Vec<(u32, time::OffsetDateTime, String)> = keys
            .iter()
            .map(|(k, (start, n))| (*n, *start, k.clone()))
            .collect();
        if evict < ranked.len() {
            ranked.select_nth_unstable(evict);
            ranked.truncate(evict);
        }
        for (_, _, k) in ranked {
            keys.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_share_divides_the_rate_and_the_burst() {
        let rate: Rate = "500/s burst 600".parse().unwrap();
        let third = share(rate, 3);
        assert_eq!(third.count, rate.count);
        assert_eq!(third.per, Duration::from_secs(3));
        assert_eq!(third.burst.get(), 200);
        assert_eq!(share(rate, 1), rate);
        assert_eq!(share(rate, 0), rate, "no replica counted is one");
        let tiny: Rate = "1/s burst 1".parse().unwrap();
        assert_eq!(
            share(tiny, 7).burst.get(),
            1,
            "a burst never rounds to nothing"
        );
    }
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    fn limits(ip: &str, wallet: &str, app: &str) -> Limits {
        Limits::new(LimitSettings {
            ip: rate(ip),
            wallet: rate(wallet),
            app_default: rate(app),
            user: rate("100/s"),
        })
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "h", "12", "12x", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(rate("50/s").to_string(), "50/s");
        assert_eq!(rate("3000/min").per, Duration::from_secs(60));
        assert_eq!(rate("10/h burst 2").to_string(), "10/h burst 2");
        assert_eq!(rate(" 5/sec ").count.get(), 5);
        for bad in [
            "",
            "50",
            "0/s",
            "-1/s",
            "5/fortnight",
            "5/s burst",
            "5/s burst 0",
            "5/s x 2",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ip_limit_refuses_past_the_burst_with_a_retry_after() {
        let l = limits("3/min", "100/s", "100/s");
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        for _ in 0..3 {
            assert!(l.check_ip(ip).is_ok());
        }
        let refused = l.check_ip(ip).unwrap_err();
        assert_eq!(refused.limiter, "ip");
        // One cell every 20 s.
        assert!(
            (15..=20).contains(&refused.retry_after_secs()),
            "{refused:?}"
        );
        // Another address has its own bucket.
        assert!(l.check_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))).is_ok());
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_bucket() {
        let l = limits("2/min", "100/s", "100/s");
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.check_ip(a.into()).is_ok());
        assert!(l.check_ip(b.into()).is_ok());
        assert!(l.check_ip(a.into()).is_err());
        assert!(l.check_ip(other.into()).is_ok());
        let mapped: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            ip_key(mapped.into()),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
        );
    }

    #[test]
    fn each_app_has_its_own_rate_and_a_change_takes_effect() {
        let l = limits("100/s", "100/s", "1/min");
        assert!(l.check_app("app_a", None).is_ok());
        assert_eq!(l.check_app("app_a", None).unwrap_err().limiter, "app");
        // Another app is not affected; an app with its own rate gets it.
        assert!(l.check_app("app_b", Some(rate("2/min"))).is_ok());
        assert!(l.check_app("app_b", Some(rate("2/min"))).is_ok());
        assert!(l.check_app("app_b", Some(rate("2/min"))).is_err());
        // Raising app_a's rate gives it a fresh bucket at the new rate.
        assert!(l.check_app("app_a", Some(rate("5/min"))).is_ok());
    }

    #[test]
    fn wallets_are_limited_separately() {
        let l = limits("100/s", "1/min", "100/s");
        assert!(l.check_wallet([1; 20]).is_ok());
        assert_eq!(l.check_wallet([1; 20]).unwrap_err().limiter, "wallet");
        assert!(l.check_wallet([2; 20]).is_ok());
    }

    #[test]
    fn users_are_limited_separately() {
        let l = Limits::new(LimitSettings {
            user: rate("1/min"),
            ..limits("100/s", "100/s", "100/s").settings()
        });
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        assert!(l.check_user(a).is_ok());
        assert_eq!(l.check_user(a).unwrap_err().limiter, "user");
        assert!(l.check_user(b).is_ok());
    }

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_passes() {
        let f = FailureWindow::new(3, Duration::from_secs(60));
        let t0 = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        assert!(f.check("k", t0).is_ok());
        for _ in 0..3 {
            f.fail("k", t0);
        }
        let refused = f.check("k", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(refused.limiter, "login");
        assert!(f.check("other", t0).is_ok());
        assert!(f.check("k", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn a_full_failure_table_evicts_and_never_resets_a_counted_key() {
        let f = FailureWindow::new(3, Duration::from_secs(60));
        let t0 = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        for _ in 0..3 {
            f.fail("victim", t0);
        }
        // Twice the bound of fresh keys, each failing once, later in the same window.
        for i in 0..(2 * FailureWindow::MAX_KEYS) {
            f.fail(&format!("filler-{i}"), t0 + Duration::from_secs(1));
        }
        assert!(f.len() <= FailureWindow::MAX_KEYS, "{}", f.len());
        assert!(
            f.check("victim", t0 + Duration::from_secs(2)).is_err(),
            "filling the table reset a counted key"
        );
        // The newest keys are still counted too.
        let last = format!("filler-{}", 2 * FailureWindow::MAX_KEYS - 1);
        f.fail(&last, t0 + Duration::from_secs(2));
        f.fail(&last, t0 + Duration::from_secs(2));
        assert!(f.check(&last, t0 + Duration::from_secs(2)).is_err());
    }

    #[test]
    fn a_full_failure_table_drops_expired_windows_first() {
        let f = FailureWindow::bounded(2, Duration::from_secs(60), 4);
        let t0 = time::macros::datetime!(2026-11-25 10:00:00 UTC);
        f.fail("old", t0);
        f.fail("old", t0);
        for k in ["a", "b", "c"] {
            f.fail(k, t0 + Duration::from_secs(30));
            f.fail(k, t0 + Duration::from_secs(30));
        }
        // "old" expired: it makes room, every counted key stays refused.
        let t1 = t0 + Duration::from_secs(61);
        f.fail("d", t1);
        assert_eq!(f.len(), 4);
        for k in ["a", "b", "c"] {
            assert!(f.check(k, t1).is_err(), "{k}");
        }
        // Full of live windows: the one with the fewest failures goes, not the limited ones.
        f.fail("e", t1);
        assert_eq!(f.len(), 4);
        for k in ["a", "b", "c"] {
            assert!(f.check(k, t1).is_err(), "{k}");
        }
    }

    #[test]
    fn sweeping_forgets_refilled_keys_and_keeps_busy_ones() {
        // 1,000 per second: a used bucket is refilled within a millisecond or so.
        let l = limits("1000/s", "1/h", "100/s");
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.check_ip(ip).is_ok());
        }
        assert!(l.check_wallet([7; 20]).is_ok());
        assert_eq!(l.tracked_keys(), (20_000, 1));
        std::thread::sleep(Duration::from_millis(50));
        l.sweep();
        // Every IP bucket refilled; the wallet's (one cell per hour) did not, so it stays and
        // its limit still holds.
        assert_eq!(l.tracked_keys(), (0, 1));
        assert!(l.check_wallet([7; 20]).is_err());
    }
}
