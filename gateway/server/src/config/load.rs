//! Reading the configuration: `parapet.toml`, then the environment, secrets from `…_FILE`, each
//! value checked as it is read.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::error::{Error, Result};
use crate::limits::{LimitSettings, Rate};

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

    pub(super) fn resolve(file: FileConfig, env: &HashMap<String, String>) -> Result<Config> {
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
