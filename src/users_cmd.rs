//! `parapet users …`: list users and disable one, straight against the store that `serve` uses
//! (same configuration). Disabling ends the user's sessions; running gateways follow within a
//! second.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use parapet_gateway::accounts::apps::{Actor, Auditor};
use parapet_gateway::accounts::users::store::{self, StoredUser};
use parapet_gateway::audit::{Store, StoreOptions};
use parapet_gateway::config::Config;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List every user with their OIDC identities and live session count (never a token).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: their sessions end and they can no longer log in.
    Disable {
        /// The user's id (a UUID).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: UsersCommand, config: &Config) -> Result<ExitCode> {
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

fn user_line(u: &StoredUser) -> String {
    let ids: Vec<String> = u
        .identities
        .iter()
        .map(|i| format!("{}#{}[{}]", i.issuer, i.subject, i.trust))
        .collect();
    format!(
        "{}  {}  sessions={}  identities={}  created {}",
        u.id,
        if u.disabled { "disabled" } else { "active" },
        u.active_sessions,
        ids.join(","),
        u.created_at
    )
}

async fn dispatch(command: UsersCommand, store: &Store) -> Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    match command {
        UsersCommand::List { json } => {
            let users = store::list_users(store, now).await?;
            if json {
                let list: Vec<_> = users.iter().map(StoredUser::to_json).collect();
                println!("{}", serde_json::json!({ "users": list }));
            } else {
                for u in &users {
                    println!("{}", user_line(u));
                }
            }
        }
        UsersCommand::Disable { id, json } => {
            let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
                eprintln!("parapet: {id:?} is not a user id (a UUID)");
                return Ok(ExitCode::from(2));
            };
            match store::disable_user(store, Auditor::Store(store), &Actor::cli(), uuid, now).await
            {
                Ok(u) if json => println!("{}", u.to_json()),
                Ok(u) => println!("{}", user_line(&u)),
                Err(parapet_gateway::error::Error::NotFound) => {
                    eprintln!("parapet: no user {id}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
