//! Configuration (docs/architecture.md §10): `parapet.toml`, then `PARAPET_*` environment
//! variables, and every secret also as `…_FILE` so it can come from a mounted secret instead of the
//! environment. With nothing configured, the embedded defaults run a single development gateway.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::custody::{CustodyKind, HsmSettings};
pub use crate::server::tls::TlsPaths;

use serde::Deserialize;

mod load;

use crate::limits::LimitSettings;

/// The file as operators write it; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    policies_dir: Option<PathBuf>,
    schemas_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_url_file: Option<PathBuf>,
    api_token: Option<String>,
    api_token_file: Option<PathBuf>,
    body_limit_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connection_age_secs: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_ip: Option<u64>,
    log_format: Option<String>,
    audit_timeout_ms: Option<u64>,
    audit_checkpoint_every: Option<u64>,
    audit_checkpoint_interval_secs: Option<u64>,
    signing_request_ttl_secs: Option<u64>,
    recovery_delay_secs: Option<u64>,
    webhook_retry_base_ms: Option<u64>,
    webhook_max_attempts: Option<u64>,
    outbound_allow: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allow_plain_http: Option<bool>,
    static_token: Option<bool>,
    ip_rate: Option<String>,
    wallet_rate: Option<String>,
    app_rate: Option<String>,
    user_rate: Option<String>,
    registration_ip_rate: Option<String>,
    registrations_per_day: Option<u64>,
    keygens_per_device_per_hour: Option<u64>,
    keygens_per_person_per_hour: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    webauthn_rp_id: Option<String>,
    webauthn_origins: Option<Vec<String>>,
    webauthn_ceremony_ttl_secs: Option<u64>,
    custody: Option<String>,
    hsm_module: Option<PathBuf>,
    hsm_token_label: Option<String>,
    hsm_pin: Option<String>,
    hsm_pin_file: Option<PathBuf>,
    hsm_share_key_label: Option<String>,
    hsm_audit_key_label: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the static API token came from: configured by the operator, or generated for
/// development into `<data_dir>/dev-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Configured(String),
    DevelopmentFile(PathBuf),
}

/// Which development defaults the operator chose explicitly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chosen {
    pub static_token: bool,
    pub custody: bool,
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policies_dir: PathBuf,
    pub schemas_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to a SQLite file under `data_dir`.
    pub database_url: String,
    /// `None` until [`Config::ensure_api_token`] runs with no configured token.
    pub api_token: Option<String>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// Bounds on connections: header-read and idle timeouts, maximum age, caps overall and per
    /// client IP (see [`crate::server::connections`]).
    pub connections: crate::server::connections::ConnectionSettings,
    pub log_format: LogFormat,
    /// Longest a decision waits for its audit event to commit before it fails with 503
    /// `audit_unavailable`.
    pub audit_timeout: Duration,
    /// A signed audit checkpoint every this many events…
    pub audit_checkpoint_every: u64,
    /// …or this often, whichever comes first.
    pub audit_checkpoint_interval: Duration,
    /// How long an authorized signing request waits for its ceremony before it expires and
    /// its velocity reservation is released (docs/architecture.md §6).
    pub signing_request_ttl: Duration,
    /// How long an opened recovery waits before it can be completed (docs/architecture.md §9),
    /// during which the user can cancel it with a passkey. Default 48 h.
    pub recovery_delay: Duration,
    /// How security webhooks are retried: the first wait (`webhook_retry_base_ms`, default
    /// 5 s, doubling) and the attempts before a delivery is failed (`webhook_max_attempts`, 12).
    pub webhooks: crate::webhooks::delivery::Settings,
    /// Networks that webhook deliveries and JWKS fetches may reach although they are not
    /// public addresses (`outbound_allow`, CIDRs; empty by default): a JWKS on the private
    /// network, loopback receivers in tests. Everything else non-public is refused at connection
    /// time, so that an app cannot point the gateway at its own network.
    pub outbound_allow: crate::outbound::Allowlist,
    /// TLS certificate chain and private key (PEM). Both or neither; with them, `serve`
    /// terminates TLS itself and reloads both on `SIGHUP`.
    pub tls: Option<TlsPaths>,
    /// Serving plain HTTP on a non-loopback address must be asked for explicitly (for a gateway
    /// behind a TLS-terminating proxy on a private network).
    pub allow_plain_http: bool,
    /// Whether the static token (the development default app) is accepted at all. Production
    /// turns it off and uses only API keys.
    pub static_token: bool,
    /// Whether `static_token` and `custody` were set (file or environment) rather than left at
    /// their development defaults: an exposed gateway must choose them (see
    /// [`Config::check_exposed_defaults`]).
    pub chosen: Chosen,
    pub limits: LimitSettings,
    /// Quotas on costly work: page registrations per client IP and per day, key generations
    /// per device and per person (see [`crate::limits::quotas`]).
    pub quotas: crate::limits::quotas::QuotaSettings,
    /// Peers whose `X-Forwarded-For` is believed: the client IP is then the right-most address
    /// in it that is not itself a trusted proxy.
    pub trusted_proxies: Vec<IpAddr>,
    /// The WebAuthn relying party: RP id, allowed origins, ceremony lifetime.
    pub webauthn: crate::accounts::passkeys::PasskeyConfig,
    /// `custody = "file" | "hsm"`; the development keystore unless configured.
    pub custody: CustodyKind,
    /// The HSM settings when a token is configured (required by `custody = "hsm"` and by
    /// `parapet hsm init`, which may run before custody is switched over).
    pub hsm: Option<HsmSettings>,
}

impl std::fmt::Debug for Config {
    // Hand-written so that secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("policies_dir", &self.policies_dir)
            .field("schemas_dir", &self.schemas_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("connections", &self.connections)
            .field("log_format", &self.log_format)
            .field("audit_timeout", &self.audit_timeout)
            .field("audit_checkpoint_every", &self.audit_checkpoint_every)
            .field("audit_checkpoint_interval", &self.audit_checkpoint_interval)
            .field("signing_request_ttl", &self.signing_request_ttl)
            .field("recovery_delay", &self.recovery_delay)
            .field("webhooks", &self.webhooks)
            .field("outbound_allow", &self.outbound_allow.networks())
            .field("tls", &self.tls)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("static_token", &self.static_token)
            .field("chosen", &self.chosen)
            .field("limits", &self.limits)
            .field("quotas", &self.quotas)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("webauthn", &self.webauthn)
            .field("custody", &self.custody)
            .field("hsm", &self.hsm)
            .finish()
    }
}

/// Drops the password from a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let (head, tail) = url.split_at(at);
            match head.get(scheme + 3..).and_then(|creds| creds.find(':')) {
                Some(colon) => format!(
                    "{}:***{}",
                    head.get(..scheme + 3 + colon).unwrap_or(""),
                    tail
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_AUDIT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 60;
/// Per client IP, before authentication: generous for one office behind a NAT, small next to
/// what a flood sends.
pub const DEFAULT_IP_RATE: &str = "1000/s";
/// Per wallet: far above what one person signs, low enough to stop a runaway loop.
pub const DEFAULT_WALLET_RATE: &str = "100/s";
/// Per app created without `--rate`.
pub const DEFAULT_APP_RATE: &str = "500/s";
/// Where Debian and Ubuntu's `softhsm2` package installs its PKCS#11 module.
pub const DEFAULT_HSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Requests per user acting through a session, across every app.
pub const DEFAULT_USER_RATE: &str = "50/s";

impl Config {
    /// What key custody needs of this configuration.
    pub fn custody_config(&self) -> crate::custody::CustodyConfig<'_> {
        crate::custody::CustodyConfig {
            kind: self.custody,
            hsm: self.hsm.as_ref(),
            data_dir: &self.data_dir,
        }
    }
}

#[cfg(test)]
mod tests;
