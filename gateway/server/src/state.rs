//! What every handler shares: the policy engine, the store, the audit log, the limits, custody and
//! the settings a request needs, built once by `server` and handed to the router.

use std::sync::Arc;
use std::time::Duration;

use crate::accounts::apps::Identity;
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::http::page::session::PageSettings;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::Engine;
use crate::records::AppRecord;
use crate::service::pipeline::SharedLedger;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub engine: Engine,
    pub ledger: SharedLedger,
    pub clock: SharedClock,
    /// Every decision is committed here before it is answered.
    pub audit: Arc<AuditLog>,
    /// The database every table module reads and writes (the audit log's own statements go
    /// through `audit`).
    pub store: crate::store::Store,
    pub metrics: Metrics,
    /// SHA-256 of the static token: `serve`'s development default, not for production; `None`
    /// when it is turned off.
    pub token_hash: Option<[u8; 32]>,
    /// The app the static token acts as (the development default app).
    pub dev_app: AppRecord,
    /// API keys → apps, for every other caller.
    pub identity: Identity,
    /// Users, their sessions and OIDC logins.
    pub users: Arc<crate::accounts::users::Users>,
    /// IP, app and wallet rate limits.
    pub limits: Arc<Limits>,
    /// Page registrations per client IP and per day, key generations per device and person.
    pub quotas: Arc<crate::limits::quotas::Quotas>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Seals and opens gateway shares (the HSM in production, the development keystore by
    /// default); ceremonies open a share only for their own duration.
    pub custody: Arc<dyn parapet_custody::Custody>,
    /// The personal data key, opened at start (OIDC claims, webhook and TOTP secrets).
    pub personal_data: Arc<crate::custody::sealing::PersonalDataKey>,
    /// The WebAuthn relying party (passkeys belong to the gateway).
    pub passkeys: crate::accounts::passkeys::Passkeys,
    /// The page's origins and cookie settings.
    pub page: PageSettings,
    /// Every wallet record's decision facts, in memory (no database read on a decision).
    pub wallet_directory: Arc<crate::accounts::wallet_directory::WalletDirectory>,
    /// Per-wallet locks for velocity reservations.
    pub wallet_locks: crate::cosign::velocity::WalletLocks,
    /// How long an authorized signing request waits for its ceremony.
    pub signing_request_ttl: Duration,
    /// See [`crate::config::Config::recovery_delay`].
    pub recovery_delay: Duration,
    /// Where heavy payloads are decoded ([`crate::service::pipeline::decode_bounded`]).
    pub decode_pool: crate::service::offload::Offload,
}

impl AppState {
    /// The development app's id while the static token is on (its requests may still be acted
    /// on); `None` once it is off.
    pub fn dev_app_acting(&self) -> Option<&str> {
        self.token_hash
            .is_some()
            .then_some(self.dev_app.id.as_str())
    }

    /// Validates the policy files again and swaps them in (an invalid set leaves the active one
    /// in place), stores the new version with its files for replay, counts and logs the outcome.
    /// Both `SIGHUP` and the admin route come here.
    pub async fn reload_policies(&self, trigger: &str) -> crate::error::Result<String> {
        match self.engine.reload() {
            Ok(version) => {
                let set = self.engine.current();
                if let Err(error) = self
                    .audit
                    .ensure_policy_version(set.version(), set.files(), self.clock.now())
                    .await
                {
                    tracing::warn!(%error, "storing the reloaded policy version failed; retried before the next decision");
                }
                self.metrics
                    .policy_reloads_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(%version, trigger, "policy set reloaded");
                Ok(version)
            }
            Err(error) => {
                self.metrics
                    .policy_reloads_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%error, trigger, "policy reload refused; the previous set stays active");
                Err(error.into())
            }
        }
    }
}
