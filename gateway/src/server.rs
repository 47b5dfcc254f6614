//! Starting and stopping the service: load config-derived state, bind, serve until SIGTERM or
//! Ctrl-C, and reload policies on SIGHUP.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::SystemClock;
use crate::config::{Config, TokenSource};
use crate::error::{Error, Result};
use crate::http::{self, AppState, auth};
use crate::ledger::MemoryLedger;
use crate::metrics::Metrics;
use crate::policy::{Engine, PolicyPaths};
use crate::records::AppRecord;

/// Builds the shared state from configuration: loads and validates the policy set, makes sure a
/// static token exists. Fails before binding anything if the policy set is invalid.
pub fn build_state(config: &mut Config) -> Result<Arc<AppState>> {
    let engine = Engine::new(PolicyPaths {
        policies: config.policies_dir.clone(),
        schemas: config.schemas_dir.clone(),
    })?;
    let source = config.ensure_api_token()?;
    match &source {
        TokenSource::Configured(_) => tracing::info!("API token: configured"),
        TokenSource::DevelopmentFile(path) => {
            tracing::warn!(path = %path.display(), "DEVELOPMENT MODE: API token generated; read it from this file")
        }
    }
    let token = config
        .api_token
        .as_deref()
        .ok_or_else(|| Error::Config("no API token".to_owned()))?;
    tracing::info!(
        policy_version = engine.current().version(),
        "policy set loaded"
    );
    Ok(Arc::new(AppState {
        engine,
        ledger: Arc::new(MemoryLedger::default()),
        clock: Arc::new(SystemClock),
        metrics: Metrics::default(),
        token_hash: auth::token_hash(token),
        app: AppRecord::development_default(),
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout,
    }))
}

/// Serves until a shutdown signal.
pub async fn run(mut config: Config) -> Result<()> {
    let state = build_state(&mut config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("binding {}: {e}", config.listen)))?;
    tracing::info!(listen = %config.listen, "serving; open http://localhost:{}/ (passkeys need a hostname origin)", config.listen.port());
    spawn_reload_on_sighup(state.clone());
    axum::serve(listener, http::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::Internal(format!("server: {e}")))
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
            match state.engine.reload() {
                Ok(version) => {
                    state
                        .metrics
                        .policy_reloads_ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(%version, "policy set reloaded on SIGHUP");
                }
                Err(error) => {
                    state
                        .metrics
                        .policy_reloads_failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%error, "policy reload on SIGHUP refused; the previous set stays active");
                }
            }
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
