//! `parapet apps …`: the operator's commands for apps and their API keys, straight against the
//! store that `serve` uses (same configuration). Creating an app is the only moment its key is
//! shown; nothing else ever prints or logs it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use parapet_gateway::accounts::apps::{self, Actor, AppUpdate, Auditor, Change, NewApp, StoredApp};
use parapet_gateway::accounts::users::oidc;
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::config::Config;
use parapet_gateway::limits::{Rate, parse_duration};
use parapet_gateway::records::AppLimits;

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Create an app and print its id and API key (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: sign, audit:read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        grants: Vec<String>,
        /// Comma-separated `Parapet::AppGroup` ids.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Requests per unit, e.g. 50/s, 3000/min, or 50/s burst 200 (default: the gateway's
        /// app_rate).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<Rate>,
        /// Absolute lifetime of the user sessions this app holds, e.g. 12h.
        #[arg(long, value_parser = duration, default_value = "12h")]
        session_ttl: std::time::Duration,
        /// How long such a session may sit unused, e.g. 30m.
        #[arg(long, value_parser = duration, default_value = "30m")]
        session_idle: std::time::Duration,
        /// An exact URI the login page may send users back to with a login code (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uri: Vec<String>,
        /// Print exactly one JSON object: {app_id, api_key}.
        #[arg(long)]
        json: bool,
    },
    /// List every app (never keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace an app's name, grants, groups, rate or session limits (running gateways follow
    /// within a second).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Comma-separated: sign, audit:read, admin (replaces the current set).
        #[arg(long, value_delimiter = ',')]
        grants: Option<Vec<String>>,
        /// Comma-separated group ids (replaces the current set; pass "" for none).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// e.g. 50/s; `default` returns the app to the gateway's app_rate.
        #[arg(long, value_parser = parse_rate_or_default)]
        rate: Option<RateSetting>,
        #[arg(long, value_parser = duration)]
        session_ttl: Option<std::time::Duration>,
        #[arg(long, value_parser = duration)]
        session_idle: Option<std::time::Duration>,
        /// Replace the app's redirect URIs with these (repeatable; `--redirect-uri none` clears).
        #[arg(long = "redirect-uri")]
        redirect_uri: Vec<String>,
        /// Trust this OpenID Connect issuer (exact `iss`) for user logins; with
        /// --oidc-audience and one of --oidc-jwks-url / --oidc-jwks-file.
        #[arg(long, requires = "oidc_audience")]
        oidc_issuer: Option<String>,
        /// An audience (`aud`) the issuer's ID tokens may carry for this app (repeatable).
        #[arg(long, requires = "oidc_issuer")]
        oidc_audience: Vec<String>,
        /// Where the issuer's keys are (https; http only to a loopback address).
        #[arg(long, requires = "oidc_issuer", conflicts_with = "oidc_jwks_file")]
        oidc_jwks_url: Option<String>,
        /// A JWKS file on this host instead.
        #[arg(long, requires = "oidc_issuer")]
        oidc_jwks_file: Option<std::path::PathBuf>,
        /// Stop trusting this issuer.
        #[arg(long)]
        remove_oidc_issuer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Give the app a new key (printed once); the old one keeps working for the overlap window.
    Rotate {
        id: String,
        /// How long the old key keeps working: e.g. 30s, 15m, 24h, 7d; 0 ends it now.
        #[arg(long, default_value = "24h", value_parser = duration)]
        overlap: std::time::Duration,
        /// Print exactly one JSON object: {app_id, api_key, previous_key_expires_at}.
        #[arg(long)]
        json: bool,
    },
    /// Refuse the app's requests (403 app_frozen) until it is unfrozen.
    Freeze {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Unfreeze {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Permanently disable the app's key (401 unauthorized).
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: AppsCommand, config: &Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let store = Store::open(&config.database_url, &StoreOptions::default())
            .await
            .context("opening the store")?;
        let code = dispatch(command, &store).await;
        store.close().await;
        code
    })
}

/// `--rate` on update: a rate, or back to the default.
#[derive(Debug, Clone, Copy)]
pub struct RateSetting(Option<Rate>);

fn parse_rate(s: &str) -> Result<Rate, String> {
    s.parse().map_err(|e: parapet_decide::Error| e.to_string())
}

fn parse_rate_or_default(s: &str) -> Result<RateSetting, String> {
    if s == "default" {
        Ok(RateSetting(None))
    } else {
        parse_rate(s).map(|r| RateSetting(Some(r)))
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn app_line(app: &StoredApp) -> String {
    let state = if app.revoked {
        "revoked"
    } else if app.frozen {
        "frozen"
    } else {
        "active"
    };
    format!(
        "{}  {}  grants={}  groups={}  rate={}  session={}s/{}s idle  {}  created {}",
        app.id,
        app.name,
        app.grants.join(","),
        app.groups.join(","),
        app.limits
            .rate
            .map_or_else(|| "default".to_owned(), |r| r.to_string()),
        app.limits.session_ttl.as_secs(),
        app.limits.session_idle.as_secs(),
        state,
        app.created_at
    )
}

async fn dispatch(command: AppsCommand, store: &Store) -> Result<ExitCode> {
    match command {
        AppsCommand::Create {
            name,
            grants,
            groups,
            rate,
            session_ttl,
            session_idle,
            redirect_uri,
            json,
        } => {
            let new = NewApp {
                redirect_uris: redirect_uri,
                name,
                grants,
                groups,
                limits: AppLimits {
                    rate,
                    session_ttl,
                    session_idle,
                },
            };
            let (app, key) = apps::create_app(
                store,
                Auditor::Store(store),
                &Actor::cli(),
                &new,
                time::OffsetDateTime::now_utc(),
            )
            .await?;
            if json {
                println!("{}", serde_json::json!({"app_id": app.id, "api_key": key}));
            } else {
                println!("app_id:  {}", app.id);
                println!("api_key: {key}");
                println!("The key is shown only now; store it as a secret.");
            }
        }
        AppsCommand::List { json } => {
            let apps = apps::list_apps(store).await?;
            if json {
                let list: Vec<_> = apps.iter().map(StoredApp::to_json).collect();
                println!("{}", serde_json::json!({ "apps": list }));
            } else {
                for app in &apps {
                    println!("{}", app_line(app));
                }
            }
        }
        AppsCommand::Update {
            id,
            name,
            grants,
            groups,
            rate,
            session_ttl,
            session_idle,
            redirect_uri,
            oidc_issuer,
            oidc_audience,
            oidc_jwks_url,
            oidc_jwks_file,
            remove_oidc_issuer,
            json,
        } => {
            let now = time::OffsetDateTime::now_utc();
            let app_fields = name.is_some()
                || grants.is_some()
                || groups.is_some()
                || rate.is_some()
                || session_ttl.is_some()
                || session_idle.is_some()
                || !redirect_uri.is_empty();
            if oidc_issuer.is_some() || remove_oidc_issuer.is_some() {
                if app_fields {
                    eprintln!("parapet: change the app's fields and its OIDC issuers separately");
                    return Ok(ExitCode::from(2));
                }
                let jwks = match (oidc_jwks_url, oidc_jwks_file) {
                    (Some(url), None) => Some(oidc::JwksSource::Url(url)),
                    (None, Some(file)) => Some(oidc::JwksSource::File(file)),
                    (None, None) if oidc_issuer.is_none() => None,
                    _ => missing_jwks()?,
                };
                let result = oidc_update(
                    store,
                    &id,
                    oidc_issuer.zip(jwks),
                    &oidc_audience,
                    remove_oidc_issuer,
                    now,
                )
                .await;
                return match result {
                    Ok(issuers) => {
                        let app = apps::get_app(store, &id).await?;
                        let mut out = app.to_json();
                        if let Some(o) = out.as_object_mut() {
                            o.insert("oidc_issuers".to_owned(), issuers.clone());
                        }
                        if json {
                            println!("{out}");
                        } else {
                            println!("{}", app_line(&app));
                            for i in issuers.as_array().into_iter().flatten() {
                                println!("  oidc issuer {i}");
                            }
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(parapet_gateway::error::Error::NotFound) => {
                        eprintln!("parapet: no app {id}, or it does not trust that issuer");
                        Ok(ExitCode::from(1))
                    }
                    Err(e) => Err(e.into()),
                };
            }
            let update = AppUpdate {
                name,
                grants,
                groups: groups.map(|g| g.into_iter().filter(|x| !x.is_empty()).collect()),
                rate: rate.map(|r| r.0),
                session_ttl,
                session_idle,
                redirect_uris: (!redirect_uri.is_empty())
                    .then(|| redirect_uri.into_iter().filter(|u| u != "none").collect()),
            };
            let updated = apps::update_app(
                store,
                Auditor::Store(store),
                &Actor::cli(),
                &id,
                &update,
                now,
            )
            .await;
            return report(updated, &id, json);
        }
        AppsCommand::Rotate { id, overlap, json } => {
            let (app, key, expires) = match apps::rotate_key(
                store,
                Auditor::Store(store),
                &Actor::cli(),
                &id,
                overlap,
                time::OffsetDateTime::now_utc(),
            )
            .await
            {
                Ok(r) => r,
                Err(parapet_gateway::error::Error::NotFound) => {
                    eprintln!("parapet: no app {id}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"app_id": app.id, "api_key": key, "previous_key_expires_at": expires})
                );
            } else {
                println!("app_id:  {}", app.id);
                println!("api_key: {key}");
                if overlap.is_zero() {
                    println!("The previous key no longer works. The new key is shown only now.");
                } else {
                    println!(
                        "The previous key works until {expires}. The new key is shown only now."
                    );
                }
            }
        }
        AppsCommand::Freeze { id, json } => return change(store, &id, Change::Freeze, json).await,
        AppsCommand::Unfreeze { id, json } => {
            return change(store, &id, Change::Unfreeze, json).await;
        }
        AppsCommand::Revoke { id, json } => return change(store, &id, Change::Revoke, json).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn missing_jwks() -> Result<Option<oidc::JwksSource>> {
    anyhow::bail!("give one of --oidc-jwks-url and --oidc-jwks-file")
}

/// Adds (with `set`: issuer URL and JWKS source) and/or removes a trusted issuer; returns the
/// app's issuers afterwards.
async fn oidc_update(
    store: &Store,
    id: &str,
    set: Option<(String, oidc::JwksSource)>,
    audiences: &[String],
    remove: Option<String>,
    now: time::OffsetDateTime,
) -> parapet_gateway::error::Result<serde_json::Value> {
    let actor = Actor::cli();
    if let Some((issuer, jwks)) = set {
        let issuer = oidc::TrustedIssuer {
            app_id: id.to_owned(),
            issuer,
            audiences: audiences.to_vec(),
            jwks,
        };
        oidc::set_issuer(store, Auditor::Store(store), &actor, &issuer, now).await?;
    }
    if let Some(issuer) = remove {
        oidc::remove_issuer(store, Auditor::Store(store), &actor, id, &issuer, now).await?;
    }
    let list = oidc::issuers(store, id).await?;
    Ok(list.iter().map(oidc::TrustedIssuer::to_json).collect())
}

async fn change(store: &Store, id: &str, change: Change, json: bool) -> Result<ExitCode> {
    let changed = apps::change_app(
        store,
        Auditor::Store(store),
        &Actor::cli(),
        id,
        change,
        time::OffsetDateTime::now_utc(),
    )
    .await;
    report(changed, id, json)
}

fn report(
    result: parapet_gateway::error::Result<StoredApp>,
    id: &str,
    json: bool,
) -> Result<ExitCode> {
    match result {
        Ok(app) => {
            if json {
                println!("{}", app.to_json());
            } else {
                println!("{}", app_line(&app));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(parapet_gateway::error::Error::NotFound) => {
            eprintln!("parapet: no app {id}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
