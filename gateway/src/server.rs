//! Starting and stopping the service: load config-derived state, bind, serve until SIGTERM or
//! Ctrl-C, and reload policies on SIGHUP.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit;
use crate::clock::SystemClock;
use crate::config::{Config, TokenSource};
use crate::error::{Error, Result};
use crate::http::{self, AppState, auth};
use crate::identity::Identity;
use crate::ledger::MemoryLedger;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::{Engine, PolicyPaths};
use crate::records::AppRecord;

/// How often refilled rate-limiter keys are forgotten: memory then holds at most the keys seen
/// in the last few seconds, whatever the number of distinct clients.
const LIMITER_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds the shared state from configuration: loads and validates the policy set, makes sure a
/// static token exists, opens custody (refusing an HSM with a wrong PIN, a missing key or a key
/// that could leave it) and the personal data key, opens the audit store (refusing a SQLite
/// store without WAL and `synchronous=FULL`) and stores the active policy version. Fails before
/// binding anything if any of that fails.
pub async fn build_state(config: &mut Config) -> Result<Arc<AppState>> {
    let engine = Engine::new(PolicyPaths {
        policies: config.policies_dir.clone(),
        schemas: config.schemas_dir.clone(),
    })?;
    let token_hash = if config.static_token {
        let source = config.ensure_api_token()?;
        match &source {
            TokenSource::Configured(_) => tracing::warn!(
                "DEVELOPMENT DEFAULT: the configured static API token acts as the development default app (every grant); create apps with `parapet apps create` for real callers and set static_token = false"
            ),
            TokenSource::DevelopmentFile(path) => {
                tracing::warn!(path = %path.display(), "DEVELOPMENT DEFAULT: static API token generated (acts as the development default app, every grant); read it from this file; create apps with `parapet apps create` for real callers and set static_token = false")
            }
        }
        let token = config
            .api_token
            .as_deref()
            .ok_or_else(|| Error::Config("no API token".to_owned()))?;
        Some(auth::token_hash(token))
    } else {
        tracing::info!("static token disabled: only API keys are accepted");
        None
    };
    tracing::info!(
        policy_version = engine.current().version(),
        "policy set loaded"
    );
    let opened = crate::custody::open(config)?;
    if opened.kind == crate::config::CustodyKind::File {
        tracing::warn!(
            path = %crate::custody::default_share_key_path(&config.data_dir).display(),
            "DEVELOPMENT KEYSTORE: gateway shares, personal data and audit checkpoints are protected by key files in the data directory; anyone who can read them can open every gateway share. Set custody = \"hsm\" in production (README: Key custody)"
        );
    }
    let personal_data = Arc::new(crate::sealing::PersonalDataKey::open_or_create(
        opened.custody.as_ref(),
        &crate::sealing::default_data_key_path(&config.data_dir),
    )?);
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let audit =
        Arc::new(open_audit(config, clock.clone(), opened.checkpoint_signer.clone()).await?);
    let policies = engine.current();
    audit
        .ensure_policy_version(policies.version(), policies.files(), clock.now())
        .await
        .map_err(|_| Error::Config("cannot store the policy version in the audit store".into()))?;
    audit.spawn_flood_flusher(clock.clone(), std::time::Duration::from_secs(10));
    let identity = Identity::new(audit.store().clone());
    let limits = Arc::new(Limits::new(config.limits));
    limits.spawn_sweeper(LIMITER_SWEEP_EVERY);
    Ok(Arc::new(AppState {
        engine,
        ledger: Arc::new(MemoryLedger::default()),
        clock,
        audit,
        metrics: Metrics::default(),
        token_hash,
        dev_app: AppRecord::development_default(),
        identity,
        limits,
        trusted_proxies: config.trusted_proxies.clone(),
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout,
        custody: opened.custody,
        personal_data,
    }))
}

/// Opens the store named by `database_url` and starts the audit writer, with checkpoints
/// signed by `signer` (the custody's audit key: the HSM's, or the development key file) and
/// appended to the file under the data directory.
pub async fn open_audit(
    config: &Config,
    clock: crate::clock::SharedClock,
    signer: Arc<dyn audit::CheckpointSigner>,
) -> Result<audit::AuditLog> {
    let store_opts = audit::StoreOptions {
        timeout: config.audit_timeout,
        ..audit::StoreOptions::default()
    };
    let writer = audit::WriterOptions {
        append_timeout: config.audit_timeout,
        checkpoint_every: config.audit_checkpoint_every,
        checkpoint_interval: config.audit_checkpoint_interval,
        checkpoint_file: Some(audit::checkpoint::default_checkpoint_path(&config.data_dir)),
        ..audit::WriterOptions::default()
    };
    let log = audit::open(
        &config.database_url,
        &store_opts,
        writer,
        Some(signer),
        clock,
    )
    .await?;
    tracing::info!(
        database = %crate::config::redact_url(&config.database_url),
        backend = log.store().backend().as_str(),
        "audit store open"
    );
    Ok(log)
}

/// Serves until a shutdown signal.
pub async fn run(mut config: Config) -> Result<()> {
    let state = build_state(&mut config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("binding {}: {e}", config.listen)))?;
    tracing::info!(listen = %config.listen, "serving; open http://localhost:{}/ (passkeys need a hostname origin)", config.listen.port());
    spawn_reload_on_sighup(state.clone());
    let served = axum::serve(
        listener,
        http::app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| Error::Internal(format!("server: {e}")));
    state.audit.flush_flood(state.clock.now(), true).await;
    state.audit.shutdown().await;
    served
}

#[cfg(unix)]
fn spawn_reload_on_sighup(state: Arc<AppState>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin route only");
            return;
        };
        while hup.recv().await.is_some() {
            // Outcome and errors are logged and counted by the reload itself.
            let _ = state.reload_policies("SIGHUP").await;
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_state: Arc<AppState>) {}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
