//! `parapet apps …`: the operator's commands for apps and their API keys, straight against the
//! store that `serve` uses (same configuration). Creating an app is the only moment its key is
//! shown; nothing else ever prints or logs it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::config::Config;
use parapet_gateway::identity::{self, Change, StoredApp};

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
        /// Print exactly one JSON object: {app_id, api_key}.
        #[arg(long)]
        json: bool,
    },
    /// List every app (never keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replace an app's name, grants or groups (running gateways follow within a second).
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
        #[arg(long)]
        json: bool,
    },
    /// Give the app a new key (printed once); the old one keeps working for the overlap window.
    Rotate {
        id: String,
        /// How long the old key keeps working: e.g. 30s, 15m, 24h, 7d; 0 ends it now.
        #[arg(long, default_value = "24h", value_parser = parse_overlap)]
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

fn app_line(app: &StoredApp) -> String {
    let state = if app.revoked {
        "revoked"
    } else if app.frozen {
        "frozen"
    } else {
        "active"
    };
    format!(
        "{}  {}  grants={}  groups={}  {}  created {}",
        app.id,
        app.name,
        app.grants.join(","),
        app.groups.join(","),
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
            json,
        } => {
            let (app, key) = identity::create_app(
                store,
                &name,
                &grants,
                &groups,
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
            let apps = identity::list_apps(store).await?;
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
            json,
        } => {
            let groups =
                groups.map(|g| g.into_iter().filter(|x| !x.is_empty()).collect::<Vec<_>>());
            let updated = identity::update_app(
                store,
                &id,
                name.as_deref(),
                grants.as_deref(),
                groups.as_deref(),
            )
            .await;
            return report(updated, &id, json);
        }
        AppsCommand::Rotate { id, overlap, json } => {
            let (app, key, expires) =
                match identity::rotate_key(store, &id, overlap, time::OffsetDateTime::now_utc())
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

async fn change(store: &Store, id: &str, change: Change, json: bool) -> Result<ExitCode> {
    report(identity::change_app(store, id, change).await, id, json)
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

/// `30s`, `15m`, `24h`, `7d` or `0`.
fn parse_overlap(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: use a number with s, m, h or d"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?}: use a number with s, m, h or d"))?;
    Ok(std::time::Duration::from_secs(secs))
}
