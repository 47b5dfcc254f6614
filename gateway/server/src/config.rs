//! Configuration (docs/architecture.md §10): `parapet.toml`, then `PARAPET_*` environment
//! variables, and every secret also as `…_FILE` so it can come from a mounted secret instead of the
//! environment. With nothing configured, the embedded defaults run a single development gateway.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::custody::{CustodyKind, HsmSettings};
pub use crate::server::tls::TlsPaths;

use secrecy::SecretString;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::limits::{LimitSettings, Rate};

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
    /// Loads `path` (or `./parapet.toml` when it exists and no path is given), then applies the
    /// environment. `env` is passed in rather than read here so that tests stay hermetic.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config> {
        let file = match path {
            Some(p) => Some(read_file_config(p)?),
            None => {
                let default = Path::new("parapet.toml");
                if default.exists() {
                    Some(read_file_config(default)?)
                } else {
                    None
                }
            }
        }
        .unwrap_or_default();
        Self::resolve(file, env)
    }

    fn resolve(file: FileConfig, env: &HashMap<String, String>) -> Result<Config> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let listen_s = get("PARAPET_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_s
            .parse::<SocketAddr>()
            .map_err(|e| Error::Config(format!("listen address {listen_s:?}: {e}")))?;
        let data_dir = get("PARAPET_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| "data".into());
        let policies_dir = get("PARAPET_POLICIES_DIR")
            .map(PathBuf::from)
            .or(file.policies_dir)
            .unwrap_or_else(|| "policies".into());
        let schemas_dir = get("PARAPET_SCHEMAS_DIR")
            .map(PathBuf::from)
            .or(file.schemas_dir)
            .unwrap_or_else(|| "schemas".into());
        let database_url = secret(
            env,
            "PARAPET_DATABASE_URL",
            file.database_url,
            file.database_url_file,
        )?
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("parapet.db").display()));
        let api_token = secret(
            env,
            "PARAPET_API_TOKEN",
            file.api_token,
            file.api_token_file,
        )?;
        if api_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(Error::Config(
                "api_token must be at least 16 characters".to_owned(),
            ));
        }
        let body_limit_bytes = match get("PARAPET_BODY_LIMIT_BYTES") {
            Some(v) => v
                .parse()
                .map_err(|e| Error::Config(format!("PARAPET_BODY_LIMIT_BYTES: {e}")))?,
            None => file.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
        };
        let timeout_ms = match get("PARAPET_REQUEST_TIMEOUT_MS") {
            Some(v) => v
                .parse()
                .map_err(|e| Error::Config(format!("PARAPET_REQUEST_TIMEOUT_MS: {e}")))?,
            None => file.request_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        };
        let log_format = match get("PARAPET_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(Error::Config(format!(
                    "log_format {other:?}: expected text or json"
                )));
            }
        };
        let number = |name: &str, from_file: Option<u64>, default: u64| -> Result<u64> {
            match get(name) {
                Some(v) => v.parse().map_err(|e| Error::Config(format!("{name}: {e}"))),
                None => Ok(from_file.unwrap_or(default)),
            }
        };
        let connections = {
            use crate::server::connections as c;
            // Clamped so that a typo cannot make a bound vanish (0) or overflow a deadline.
            let clamp = |v: u64, max: u64| v.clamp(1, max);
            let count = |v: u64| usize::try_from(clamp(v, 1_000_000)).unwrap_or(1);
            c::ConnectionSettings {
                header_read_timeout: Duration::from_millis(clamp(
                    number(
                        "PARAPET_HEADER_READ_TIMEOUT_MS",
                        file.header_read_timeout_ms,
                        c::DEFAULT_HEADER_READ_TIMEOUT_MS,
                    )?,
                    3_600_000,
                )),
                idle_timeout: Duration::from_secs(clamp(
                    number(
                        "PARAPET_IDLE_TIMEOUT_SECS",
                        file.idle_timeout_secs,
                        c::DEFAULT_IDLE_TIMEOUT_SECS,
                    )?,
                    86_400,
                )),
                max_age: Duration::from_secs(clamp(
                    number(
                        "PARAPET_MAX_CONNECTION_AGE_SECS",
                        file.max_connection_age_secs,
                        c::DEFAULT_MAX_CONNECTION_AGE_SECS,
                    )?,
                    30 * 86_400,
                )),
                max_connections: count(number(
                    "PARAPET_MAX_CONNECTIONS",
                    file.max_connections,
                    c::DEFAULT_MAX_CONNECTIONS as u64,
                )?),
                max_per_ip: count(number(
                    "PARAPET_MAX_CONNECTIONS_PER_IP",
                    file.max_connections_per_ip,
                    c::DEFAULT_MAX_CONNECTIONS_PER_IP as u64,
                )?),
            }
        };
        let signing_request_ttl = number(
            "PARAPET_SIGNING_REQUEST_TTL_SECS",
            file.signing_request_ttl_secs,
            300,
        )?;
        let recovery_delay = number(
            "PARAPET_RECOVERY_DELAY_SECS",
            file.recovery_delay_secs,
            48 * 3600,
        )?;
        let webhooks = crate::webhooks::delivery::Settings {
            retry_base: Duration::from_millis(
                number(
                    "PARAPET_WEBHOOK_RETRY_BASE_MS",
                    file.webhook_retry_base_ms,
                    5000,
                )?
                .max(1),
            ),
            max_attempts: u32::try_from(
                number(
                    "PARAPET_WEBHOOK_MAX_ATTEMPTS",
                    file.webhook_max_attempts,
                    12,
                )?
                .clamp(1, 100),
            )
            .unwrap_or(12),
            ..crate::webhooks::delivery::Settings::default()
        };
        let outbound_allow = match get("PARAPET_OUTBOUND_ALLOW") {
            Some(v) => v
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            None => file.outbound_allow.unwrap_or_default(),
        };
        let outbound_allow = crate::outbound::Allowlist::parse(&outbound_allow)?;
        let audit_timeout_ms = number(
            "PARAPET_AUDIT_TIMEOUT_MS",
            file.audit_timeout_ms,
            DEFAULT_AUDIT_TIMEOUT_MS,
        )?;
        let audit_checkpoint_every = number(
            "PARAPET_AUDIT_CHECKPOINT_EVERY",
            file.audit_checkpoint_every,
            DEFAULT_CHECKPOINT_EVERY,
        )?
        .max(1);
        let audit_checkpoint_interval = number(
            "PARAPET_AUDIT_CHECKPOINT_INTERVAL_SECS",
            file.audit_checkpoint_interval_secs,
            DEFAULT_CHECKPOINT_INTERVAL_SECS,
        )?;
        let tls = match (
            get("PARAPET_TLS_CERT").map(PathBuf::from).or(file.tls_cert),
            get("PARAPET_TLS_KEY").map(PathBuf::from).or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsPaths { cert, key }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "tls_cert and tls_key go together: set both or neither".to_owned(),
                ));
            }
        };
        let flag = |name: &str, from_file: Option<bool>, default: bool| -> Result<bool> {
            match get(name).as_deref() {
                None => Ok(from_file.unwrap_or(default)),
                Some("1" | "true" | "yes" | "on") => Ok(true),
                Some("0" | "false" | "no" | "off") => Ok(false),
                Some(other) => Err(Error::Config(format!(
                    "{name}={other:?}: expected true or false"
                ))),
            }
        };
        let allow_plain_http = flag("PARAPET_ALLOW_PLAIN_HTTP", file.allow_plain_http, false)?;
        let static_token = flag("PARAPET_STATIC_TOKEN", file.static_token, true)?;
        let mut chosen = Chosen {
            static_token: get("PARAPET_STATIC_TOKEN").is_some() || file.static_token.is_some(),
            custody: false,
        };
        let rate = |name: &str, from_file: Option<String>, default: &str| -> Result<Rate> {
            let text = get(name)
                .or(from_file)
                .unwrap_or_else(|| default.to_owned());
            text.parse()
                .map_err(|e: parapet_decide::Error| Error::Config(format!("{name}: {e}")))
        };
        let limits = LimitSettings {
            ip: rate("PARAPET_IP_RATE", file.ip_rate, DEFAULT_IP_RATE)?,
            wallet: rate("PARAPET_WALLET_RATE", file.wallet_rate, DEFAULT_WALLET_RATE)?,
            app_default: rate("PARAPET_APP_RATE", file.app_rate, DEFAULT_APP_RATE)?,
            user: rate("PARAPET_USER_RATE", file.user_rate, DEFAULT_USER_RATE)?,
        };
        // A quota of 0 would refuse every registration or key generation: more likely a typo
        // than a wish, so it is refused at start.
        let quota = |name: &str, from_file: Option<u64>, default: u32| -> Result<u32> {
            let n = number(name, from_file, u64::from(default))?;
            match u32::try_from(n) {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(Error::Config(format!(
                    "{name}: {n} is not a quota (1 to {})",
                    u32::MAX
                ))),
            }
        };
        let quotas = {
            use crate::limits::quotas as q;
            q::QuotaSettings {
                registration_ip: rate(
                    "PARAPET_REGISTRATION_IP_RATE",
                    file.registration_ip_rate,
                    q::DEFAULT_REGISTRATION_IP_RATE,
                )?,
                registrations_per_day: quota(
                    "PARAPET_REGISTRATIONS_PER_DAY",
                    file.registrations_per_day,
                    q::DEFAULT_REGISTRATIONS_PER_DAY,
                )?,
                keygens_per_device: quota(
                    "PARAPET_KEYGENS_PER_DEVICE_PER_HOUR",
                    file.keygens_per_device_per_hour,
                    q::DEFAULT_KEYGENS_PER_DEVICE,
                )?,
                keygens_per_person: quota(
                    "PARAPET_KEYGENS_PER_PERSON_PER_HOUR",
                    file.keygens_per_person_per_hour,
                    q::DEFAULT_KEYGENS_PER_PERSON,
                )?,
            }
        };
        let proxies = match get("PARAPET_TRUSTED_PROXIES") {
            Some(v) => v
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            None => file.trusted_proxies.unwrap_or_default(),
        };
        let trusted_proxies = proxies
            .iter()
            .map(|p| {
                p.parse::<IpAddr>()
                    .map_err(|e| Error::Config(format!("trusted proxy {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let webauthn_default = crate::accounts::passkeys::PasskeyConfig::default();
        let webauthn = crate::accounts::passkeys::PasskeyConfig {
            rp_id: get("PARAPET_WEBAUTHN_RP_ID")
                .or(file.webauthn_rp_id)
                .unwrap_or(webauthn_default.rp_id),
            origins: match get("PARAPET_WEBAUTHN_ORIGINS") {
                Some(v) => v
                    .split(',')
                    .map(|o| o.trim().to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
                None => file.webauthn_origins.unwrap_or(webauthn_default.origins),
            },
            ceremony_ttl: Duration::from_secs(
                number(
                    "PARAPET_WEBAUTHN_CEREMONY_TTL_SECS",
                    file.webauthn_ceremony_ttl_secs,
                    webauthn_default.ceremony_ttl.as_secs(),
                )?
                .max(1),
            ),
        };
        webauthn.validate()?;
        let custody_setting = get("PARAPET_CUSTODY").or(file.custody);
        chosen.custody = custody_setting.is_some();
        let custody = match custody_setting.as_deref() {
            None | Some("file") => CustodyKind::File,
            Some("hsm") => CustodyKind::Hsm,
            Some(other) => {
                return Err(Error::Config(format!(
                    "custody {other:?}: expected file or hsm"
                )));
            }
        };
        let hsm_pin = secret(env, "PARAPET_HSM_PIN", file.hsm_pin, file.hsm_pin_file)?
            .map(SecretString::from);
        let hsm = match (
            get("PARAPET_HSM_TOKEN_LABEL").or(file.hsm_token_label),
            hsm_pin,
        ) {
            (Some(token_label), Some(pin)) => Some(HsmSettings {
                module: get("PARAPET_HSM_MODULE")
                    .map(PathBuf::from)
                    .or(file.hsm_module)
                    .unwrap_or_else(|| DEFAULT_HSM_MODULE.into()),
                token_label,
                pin,
                share_key_label: get("PARAPET_HSM_SHARE_KEY_LABEL")
                    .or(file.hsm_share_key_label)
                    .unwrap_or_else(|| parapet_custody::DEFAULT_SHARE_KEY_LABEL.to_owned()),
                audit_key_label: get("PARAPET_HSM_AUDIT_KEY_LABEL")
                    .or(file.hsm_audit_key_label)
                    .unwrap_or_else(|| parapet_custody::DEFAULT_AUDIT_KEY_LABEL.to_owned()),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "hsm_token_label is set but no HSM PIN: set hsm_pin, hsm_pin_file, PARAPET_HSM_PIN or PARAPET_HSM_PIN_FILE".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "an HSM PIN is set but no token: set hsm_token_label or PARAPET_HSM_TOKEN_LABEL".to_owned(),
                ));
            }
        };
        if custody == CustodyKind::Hsm && hsm.is_none() {
            return Err(Error::Config(
                "custody = \"hsm\" needs hsm_token_label and an HSM PIN (hsm_pin, hsm_pin_file, PARAPET_HSM_PIN or PARAPET_HSM_PIN_FILE)".to_owned(),
            ));
        }
        Ok(Config {
            listen,
            data_dir,
            policies_dir,
            schemas_dir,
            database_url,
            api_token,
            body_limit_bytes,
            request_timeout: Duration::from_millis(timeout_ms),
            connections,
            log_format,
            audit_timeout: Duration::from_millis(audit_timeout_ms.max(1)),
            audit_checkpoint_every,
            audit_checkpoint_interval: Duration::from_secs(audit_checkpoint_interval.max(1)),
            signing_request_ttl: Duration::from_secs(signing_request_ttl.max(1)),
            recovery_delay: Duration::from_secs(recovery_delay),
            webhooks,
            outbound_allow,
            tls,
            allow_plain_http,
            static_token,
            chosen,
            limits,
            quotas,
            trusted_proxies,
            webauthn,
            custody,
            hsm,
        })
    }

    /// Refuses to start a gateway reachable from elsewhere (a non-loopback address, or TLS) on
    /// development defaults nobody chose: the static token (an all-grants development app whose
    /// token sits in `<data_dir>/dev-token`) and the file keystore (gateway shares in files).
    /// Setting either explicitly (`static_token = true|false`, `custody = "file"|"hsm"`) is the
    /// operator's informed choice and starts.
    pub fn check_exposed_defaults(&self) -> Result<()> {
        // Behind a TLS-terminating proxy the listen address is loopback, but the trusted proxies
        // or the page's public origins give the exposure away.
        let behind_proxy = !self.trusted_proxies.is_empty()
            || self
                .webauthn
                .origins
                .iter()
                .any(|o| !o.starts_with("http://localhost"));
        let exposed = self.tls.is_some() || !self.listen.ip().is_loopback() || behind_proxy;
        if !exposed {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.static_token && !self.chosen.static_token {
            missing.push(
                "the static development token is on by default: set static_token = false (PARAPET_STATIC_TOKEN=false) and use API keys, or set it to true on purpose",
            );
        }
        if self.custody == CustodyKind::File && !self.chosen.custody {
            missing.push(
                "gateway shares would be kept by the development file keystore: set custody = \"hsm\" (PARAPET_CUSTODY=hsm), or custody = \"file\" on purpose",
            );
        }
        if missing.is_empty() {
            return Ok(());
        }
        let why = if self.tls.is_some() {
            "TLS"
        } else if behind_proxy {
            "behind a proxy: trusted proxies or public page origins"
        } else {
            "a non-loopback address"
        };
        Err(Error::Config(format!(
            "refusing to serve on {} ({why}) with development defaults: {}",
            self.listen,
            missing.join("; ")
        )))
    }

    /// The process environment as a map, for [`Config::load`].
    pub fn process_env() -> HashMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("PARAPET_"))
            .collect()
    }

    /// Makes sure a static API token exists. Without a configured one, the development default
    /// reuses or generates `<data_dir>/dev-token` (mode 0600). Returns where it came from; the
    /// token itself is never logged.
    pub fn ensure_api_token(&mut self) -> Result<TokenSource> {
        if let Some(t) = &self.api_token {
            return Ok(TokenSource::Configured(t.clone()));
        }
        let path = self.data_dir.join("dev-token");
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| Error::Config(format!("creating {}: {e}", self.data_dir.display())))?;
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
            _ => {
                let mut bytes = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut bytes);
                let token = format!("pdev_{}", hex::encode(bytes));
                // A short or unreadable token file is replaced, never reused.
                let _ = std::fs::remove_file(&path);
                crate::secret_file::create_private(&path, token.as_bytes())?;
                token
            }
        };
        self.api_token = Some(token);
        Ok(TokenSource::DevelopmentFile(path))
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// A secret from `NAME`, `NAME_FILE`, the file's `key` or `key_file`, in that order.
fn secret(
    env: &HashMap<String, String>,
    name: &str,
    from_file_config: Option<String>,
    file_path: Option<PathBuf>,
) -> Result<Option<String>> {
    if let Some(v) = env.get(name).filter(|v| !v.is_empty()) {
        return Ok(Some(v.clone()));
    }
    let env_file = env
        .get(&format!("{name}_FILE"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(p) = env_file {
        return read_secret_file(&p).map(Some);
    }
    if let Some(v) = from_file_config {
        return Ok(Some(v));
    }
    match file_path {
        Some(p) => read_secret_file(&p).map(Some),
        None => Ok(None),
    }
}

fn read_secret_file(path: &Path) -> Result<String> {
    let v = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading secret file {}: {e}", path.display())))?;
    Ok(v.trim_end_matches(['\n', '\r']).to_owned())
}

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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The bench's costliest typed data are real bodies: each fits the default body limit.
    #[test]
    fn the_costliest_typed_data_fit_the_default_body_limit() {
        for (name, v) in crate::decode::costliest_typed_data() {
            let len = serde_json::to_vec(&v).expect("json").len();
            assert!(len < DEFAULT_BODY_LIMIT, "{name}: {len} bytes");
        }
    }

    #[test]
    fn defaults_without_anything() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, "sqlite://data/parapet.db");
        assert!(c.api_token.is_none());
    }

    #[test]
    fn connection_bounds_have_defaults_and_come_from_file_and_env() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(
            c.connections,
            crate::server::connections::ConnectionSettings::default()
        );
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.connections.max_connections, 10_000);
        assert_eq!(c.connections.max_per_ip, 256);
        let file: FileConfig = toml::from_str(
            "max_connections = 50\nmax_connections_per_ip = 0\nidle_timeout_secs = 5\nmax_connection_age_secs = 9",
        )
        .unwrap();
        let c = Config::resolve(
            file,
            &env(&[
                ("PARAPET_MAX_CONNECTIONS", "70"),
                ("PARAPET_HEADER_READ_TIMEOUT_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(c.connections.max_connections, 70);
        // Zero would refuse every connection: the smallest cap is one.
        assert_eq!(c.connections.max_per_ip, 1);
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.connections.max_age, Duration::from_secs(9));
        assert_eq!(
            c.connections.header_read_timeout,
            Duration::from_millis(250)
        );
        assert!(
            Config::resolve(
                FileConfig::default(),
                &env(&[("PARAPET_MAX_CONNECTIONS", "many")])
            )
            .is_err()
        );
    }

    #[test]
    fn env_overrides_file_and_file_secrets_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("token");
        std::fs::write(&secret_path, "from-a-mounted-secret-file\n").unwrap();
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\napi_token = \"from-the-toml-file-000\"")
                .unwrap();
        let e = env(&[
            ("PARAPET_LISTEN", "127.0.0.1:9100"),
            ("PARAPET_API_TOKEN_FILE", secret_path.to_str().unwrap()),
        ]);
        let c = Config::resolve(file, &e).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.api_token.as_deref(), Some("from-a-mounted-secret-file"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<FileConfig>("listn = \"x\"").is_err());
        assert!(
            Config::resolve(FileConfig::default(), &env(&[("PARAPET_LISTEN", "nope")])).is_err()
        );
        assert!(
            Config::resolve(
                FileConfig::default(),
                &env(&[("PARAPET_API_TOKEN", "short")])
            )
            .is_err()
        );
    }

    #[test]
    fn dev_token_is_generated_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        c.data_dir = dir.path().join("data");
        let src = c.ensure_api_token().unwrap();
        let path = dir.path().join("data/dev-token");
        assert_eq!(src, TokenSource::DevelopmentFile(path.clone()));
        let first = c.api_token.clone().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        c.api_token = None;
        c.ensure_api_token().unwrap();
        assert_eq!(c.api_token.unwrap(), first);
    }

    #[test]
    fn an_exposed_gateway_refuses_development_defaults_nobody_chose() {
        let local = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert!(local.check_exposed_defaults().is_ok());
        let exposed = env(&[("PARAPET_LISTEN", "0.0.0.0:8080")]);
        let c = Config::resolve(FileConfig::default(), &exposed).unwrap();
        let err = c.check_exposed_defaults().unwrap_err().to_string();
        assert!(
            err.contains("static_token") && err.contains("custody"),
            "{err}"
        );
        let tls = env(&[
            ("PARAPET_TLS_CERT", "/nonexistent/cert.pem"),
            ("PARAPET_TLS_KEY", "/nonexistent/key.pem"),
        ]);
        let c = Config::resolve(FileConfig::default(), &tls).unwrap();
        assert!(c.check_exposed_defaults().is_err());
        // Chosen on purpose, either way, it starts.
        let chosen = env(&[
            ("PARAPET_LISTEN", "0.0.0.0:8080"),
            ("PARAPET_STATIC_TOKEN", "false"),
            ("PARAPET_CUSTODY", "file"),
        ]);
        let c = Config::resolve(FileConfig::default(), &chosen).unwrap();
        assert!(c.check_exposed_defaults().is_ok());
        let only_token = env(&[
            ("PARAPET_LISTEN", "0.0.0.0:8080"),
            ("PARAPET_STATIC_TOKEN", "true"),
        ]);
        let c = Config::resolve(FileConfig::default(), &only_token).unwrap();
        let err = c.check_exposed_defaults().unwrap_err().to_string();
        assert!(
            !err.contains("static_token") && err.contains("custody"),
            "{err}"
        );
        // On loopback behind a proxy that terminates TLS: exposed all the same.
        for behind in [
            env(&[("PARAPET_TRUSTED_PROXIES", "127.0.0.1")]),
            env(&[
                ("PARAPET_WEBAUTHN_ORIGINS", "https://wallet.example"),
                ("PARAPET_WEBAUTHN_RP_ID", "wallet.example"),
            ]),
        ] {
            let c = Config::resolve(FileConfig::default(), &behind).unwrap();
            assert!(c.check_exposed_defaults().is_err());
        }
    }

    #[test]
    fn quotas_have_defaults_and_come_from_file_and_env() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.quotas, crate::limits::quotas::QuotaSettings::default());
        assert_eq!(c.quotas.registration_ip.to_string(), "5/h");
        assert_eq!(c.quotas.registrations_per_day, 1000);
        assert_eq!(
            (c.quotas.keygens_per_device, c.quotas.keygens_per_person),
            (10, 20)
        );
        let file: FileConfig = toml::from_str(
            "registration_ip_rate = \"2/h\"\nregistrations_per_day = 50\nkeygens_per_device_per_hour = 3\nkeygens_per_person_per_hour = 7",
        )
        .unwrap();
        let c =
            Config::resolve(file, &env(&[("PARAPET_KEYGENS_PER_DEVICE_PER_HOUR", "4")])).unwrap();
        assert_eq!(c.quotas.registration_ip.to_string(), "2/h");
        assert_eq!(c.quotas.registrations_per_day, 50);
        // The environment wins.
        assert_eq!(
            (c.quotas.keygens_per_device, c.quotas.keygens_per_person),
            (4, 7)
        );
        for bad in [
            ("PARAPET_REGISTRATION_IP_RATE", "often"),
            ("PARAPET_REGISTRATIONS_PER_DAY", "-1"),
            ("PARAPET_KEYGENS_PER_PERSON_PER_HOUR", "0"),
        ] {
            assert!(Config::resolve(FileConfig::default(), &env(&[bad])).is_err());
        }
    }

    #[test]
    fn webauthn_settings_from_file_and_env() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(
            c.webauthn,
            crate::accounts::passkeys::PasskeyConfig::default()
        );
        assert_eq!(c.webauthn.rp_id, "localhost");
        assert_eq!(c.webauthn.origins, vec!["http://localhost:8080".to_owned()]);
        assert_eq!(c.webauthn.ceremony_ttl, Duration::from_secs(300));
        let file: FileConfig = toml::from_str(
            "webauthn_rp_id = \"example.com\"\nwebauthn_origins = [\"https://example.com\"]\nwebauthn_ceremony_ttl_secs = 60",
        )
        .unwrap();
        let c = Config::resolve(
            file,
            &env(&[(
                "PARAPET_WEBAUTHN_ORIGINS",
                "https://example.com, https://app.example.com:8443",
            )]),
        )
        .unwrap();
        assert_eq!(c.webauthn.rp_id, "example.com");
        assert_eq!(c.webauthn.origins.len(), 2);
        assert_eq!(c.webauthn.ceremony_ttl, Duration::from_secs(60));
        let bad = env(&[("PARAPET_WEBAUTHN_ORIGINS", "http://127.0.0.1:8080")]);
        assert!(Config::resolve(FileConfig::default(), &bad).is_err());
    }

    #[test]
    fn outbound_allow_from_file_and_env() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert!(c.outbound_allow.networks().is_empty());
        let loopback = "127.0.0.1".parse().unwrap();
        assert!(!c.outbound_allow.contains(loopback));
        let file: FileConfig =
            toml::from_str("outbound_allow = [\"127.0.0.1/32\", \"::1/128\"]").unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!(c.outbound_allow.networks().len(), 2);
        assert!(c.outbound_allow.contains(loopback));
        assert!(c.outbound_allow.contains("::1".parse().unwrap()));
        let file: FileConfig = toml::from_str("outbound_allow = [\"127.0.0.1/32\"]").unwrap();
        let c = Config::resolve(
            file,
            &env(&[("PARAPET_OUTBOUND_ALLOW", "10.0.0.0/8, fd00::/8")]),
        )
        .unwrap();
        assert!(!c.outbound_allow.contains(loopback));
        assert!(c.outbound_allow.contains("10.9.8.7".parse().unwrap()));
        assert!(c.outbound_allow.contains("fd00::1".parse().unwrap()));
        assert!(format!("{c:?}").contains("10.0.0.0/8"));
        let bad = env(&[("PARAPET_OUTBOUND_ALLOW", "10.0.0.0/8,internal.example")]);
        assert!(matches!(
            Config::resolve(FileConfig::default(), &bad),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn custody_defaults_to_the_file_keystore() {
        let c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.custody, CustodyKind::File);
        assert!(c.hsm.is_none());
    }

    #[test]
    fn hsm_settings_from_file_env_and_pin_file() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let pin_path = dir.path().join("pin");
        std::fs::write(&pin_path, "pin-from-file\n").unwrap();
        let file: FileConfig = toml::from_str(
            "custody = \"hsm\"\nhsm_token_label = \"gw\"\nhsm_pin = \"toml-pin\"\nhsm_audit_key_label = \"cp\"",
        )
        .unwrap();
        let c = Config::resolve(file, &env(&[])).unwrap();
        assert_eq!(c.custody, CustodyKind::Hsm);
        let hsm = c.hsm.unwrap();
        assert_eq!(hsm.module, Path::new(DEFAULT_HSM_MODULE));
        assert_eq!(hsm.token_label, "gw");
        assert_eq!(hsm.pin.expose_secret(), "toml-pin");
        assert_eq!(hsm.share_key_label, "parapet-share-key");
        assert_eq!(hsm.audit_key_label, "cp");
        let signer = hsm.signer_config();
        assert_eq!(signer.audit_key_label, "cp");
        assert_eq!(signer.token_label, "gw");

        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("PARAPET_CUSTODY", "hsm"),
                ("PARAPET_HSM_MODULE", "/opt/hsm/lib.so"),
                ("PARAPET_HSM_TOKEN_LABEL", "env-token"),
                ("PARAPET_HSM_PIN_FILE", pin_path.to_str().unwrap()),
                ("PARAPET_HSM_SHARE_KEY_LABEL", "shares"),
            ]),
        )
        .unwrap();
        let hsm = c.hsm.unwrap();
        assert_eq!(hsm.module, Path::new("/opt/hsm/lib.so"));
        assert_eq!(hsm.token_label, "env-token");
        assert_eq!(hsm.pin.expose_secret(), "pin-from-file");
        assert_eq!(hsm.share_key_label, "shares");
        assert_eq!(hsm.audit_key_label, "parapet-audit-key");
    }

    #[test]
    fn incomplete_or_unknown_custody_is_refused() {
        for pairs in [
            &[("PARAPET_CUSTODY", "vault")][..],
            &[("PARAPET_CUSTODY", "hsm")][..],
            &[("PARAPET_CUSTODY", "hsm"), ("PARAPET_HSM_TOKEN_LABEL", "t")][..],
            &[("PARAPET_HSM_PIN", "1234")][..],
        ] {
            assert!(
                matches!(
                    Config::resolve(FileConfig::default(), &env(pairs)),
                    Err(Error::Config(_))
                ),
                "{pairs:?}"
            );
        }
        // HSM settings may be present while custody is still the file keystore (`hsm init`
        // runs before the switch).
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("PARAPET_HSM_TOKEN_LABEL", "t"),
                ("PARAPET_HSM_PIN", "1234"),
            ]),
        )
        .unwrap();
        assert_eq!(c.custody, CustodyKind::File);
        assert!(c.hsm.is_some());
    }

    #[test]
    fn debug_never_prints_the_hsm_pin() {
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("PARAPET_CUSTODY", "hsm"),
                ("PARAPET_HSM_TOKEN_LABEL", "t"),
                ("PARAPET_HSM_PIN", "pin-4711-do-not-log"),
            ]),
        )
        .unwrap();
        let text = format!("{c:?}");
        assert!(text.contains("Hsm"), "{text}");
        assert!(!text.contains("pin-4711"), "{text}");
        let hsm = c.hsm.unwrap();
        assert!(!format!("{hsm:?}").contains("pin-4711"));
        assert!(!format!("{:?}", hsm.signer_config()).contains("pin-4711"));
    }

    #[test]
    fn debug_never_prints_the_token() {
        let mut c = Config::resolve(FileConfig::default(), &env(&[])).unwrap();
        c.api_token = Some("super-secret-token-value".to_owned());
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
