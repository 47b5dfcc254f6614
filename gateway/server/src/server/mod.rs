//! Starting and stopping the service: load config-derived state, bind, serve (TLS or plain HTTP)
//! until SIGTERM or Ctrl-C, and reload policies and the TLS certificate on SIGHUP.

pub mod connections;
pub mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::accounts::apps::Identity;
use crate::audit;
use crate::clock::SystemClock;
use crate::config::{Config, TokenSource};
use crate::error::{Error, Result};
use crate::http::{self, AppState, auth};
use crate::ledger::MemoryLedger;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::{Engine, PolicyPaths};
use crate::records::AppRecord;
use tls::{PlainHttp, Tls};

/// How often refilled rate-limiter keys are forgotten: memory then holds at most the keys seen
/// in the last few seconds, whatever the number of distinct clients.
const LIMITER_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How often addresses whose registration quota has refilled are forgotten (it refills over an
/// hour by default, so there is nothing to gain from sweeping often).
const QUOTA_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds the shared state from configuration: loads and validates the policy set, makes sure a
/// static token exists, opens custody (refusing an HSM with a wrong PIN, a missing key or a key
/// that could leave it) and the personal data key, opens the audit store (refusing a SQLite
/// store without WAL and `synchronous=FULL`) and stores the active policy version. Fails before
/// binding anything if any of that fails.
pub async fn build_state(config: &mut Config) -> Result<Arc<AppState>> {
    build_state_with_clock(config, Arc::new(SystemClock)).await
}

/// [`build_state`] with another clock (tests move time to reach session limits).
pub async fn build_state_with_clock(
    config: &mut Config,
    clock: crate::clock::SharedClock,
) -> Result<Arc<AppState>> {
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
    let opened = crate::custody::open(config.custody_config())?;
    if opened.kind == crate::config::CustodyKind::File {
        tracing::warn!(
            path = %crate::custody::default_share_key_path(&config.data_dir).display(),
            "DEVELOPMENT KEYSTORE: gateway shares, personal data and audit checkpoints are protected by key files in the data directory; anyone who can read them can open every gateway share. Set custody = \"hsm\" in production (docs/operations.md: Key custody)"
        );
    }
    let personal_data = Arc::new(crate::custody::sealing::PersonalDataKey::open_or_create(
        opened.custody.as_ref(),
        &crate::custody::sealing::default_data_key_path(&config.data_dir),
    )?);
    let audit =
        Arc::new(open_audit(config, clock.clone(), opened.checkpoint_signer.clone()).await?);
    let policies = engine.current();
    audit
        .ensure_policy_version(policies.version(), policies.files(), clock.now())
        .await
        .map_err(|_| Error::Config("cannot store the policy version in the audit store".into()))?;
    audit.spawn_flood_flusher(clock.clone(), std::time::Duration::from_secs(10));
    let identity = Identity::new(audit.store().clone());
    let users = Arc::new(crate::accounts::users::Users::new(
        audit.store().clone(),
        config.outbound_allow.clone(),
    ));
    let limits = Arc::new(Limits::new(config.limits));
    limits.spawn_sweeper(LIMITER_SWEEP_EVERY);
    // The global limits' share: this process's first heartbeat counts the replicas alive on the
    // database before any request is served.
    let replica = crate::limits::replicas::own_id(&config.data_dir);
    match crate::limits::replicas::beat(audit.store(), &replica).await {
        Ok(n) => limits.set_replicas(n),
        Err(error) => tracing::warn!(%error, "replica heartbeat failed"),
    }
    crate::limits::replicas::spawn(audit.store().clone(), replica, &limits);
    let quotas = Arc::new(crate::limits::quotas::Quotas::new(config.quotas));
    quotas.spawn_sweeper(QUOTA_SWEEP_EVERY);
    crate::store::expiry::spawn(
        audit.store().clone(),
        clock.clone(),
        crate::store::expiry::SWEEP_EVERY,
    );
    let passkeys = crate::accounts::passkeys::Passkeys::new(
        &config.webauthn,
        audit.store().clone(),
        audit.clone(),
    )?;
    let audit_store = &audit.store().clone();
    let wallet_directory =
        crate::accounts::wallet_directory::WalletDirectory::load(audit_store).await?;
    wallet_directory.follow(audit_store.clone());
    crate::webhooks::delivery::spawn(
        audit_store.clone(),
        personal_data.clone(),
        config.webhooks,
        config.outbound_allow.clone(),
    );
    Ok(Arc::new(AppState {
        engine,
        ledger: Arc::new(MemoryLedger::default()),
        clock,
        store: audit.store().clone(),
        audit,
        metrics: Metrics::default(),
        token_hash,
        dev_app: AppRecord::development_default(),
        identity,
        users,
        limits,
        quotas,
        wallet_directory,
        trusted_proxies: config.trusted_proxies.clone(),
        body_limit_bytes: config.body_limit_bytes,
        request_timeout: config.request_timeout,
        custody: opened.custody,
        passkeys,
        page: crate::http::page::session::PageSettings::from_origins(&config.webauthn.origins),
        personal_data,
        wallet_locks: crate::cosign::velocity::WalletLocks::new(audit_store),
        signing_request_ttl: config.signing_request_ttl,
        recovery_delay: config.recovery_delay,
        decode_pool: crate::service::offload::Offload::per_spare_core(
            "large payloads being decoded",
            std::time::Duration::from_secs(2),
        ),
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

/// Serves until a shutdown signal: TLS when a certificate is configured, otherwise plain HTTP,
/// which is allowed on a non-loopback address only with `allow_plain_http`. Every check (the
/// development defaults of an exposed gateway, the plain-HTTP rule, the certificate and key)
/// runs before the state is built or anything is bound.
pub async fn run(mut config: Config) -> Result<()> {
    // `plain` is `None` when serving TLS, otherwise the kind of plain HTTP that is allowed.
    let (tls, plain) = match &config.tls {
        Some(paths) => (Some(Arc::new(Tls::load(paths)?)), None),
        None => (
            None,
            Some(tls::plain_http_mode(
                config.listen,
                config.allow_plain_http,
            )?),
        ),
    };
    config.check_exposed_defaults()?;
    raise_fd_limit(&config);
    let state = build_state(&mut config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Config(format!("binding {}: {e}", config.listen)))?;
    let (listen, port) = (config.listen, config.listen.port());
    match plain {
        None => tracing::info!(
            %listen,
            mode = "TLS",
            "serving TLS; open https://localhost:{port}/ (passkeys need a hostname origin)"
        ),
        Some(PlainHttp::Loopback) => tracing::info!(
            %listen,
            mode = "plain HTTP on loopback (development)",
            "serving plain HTTP on loopback (development); open http://localhost:{port}/ (passkeys need a hostname origin); set tls_cert and tls_key to serve TLS"
        ),
        Some(PlainHttp::Allowed) => tracing::warn!(
            %listen,
            mode = "plain HTTP on a non-loopback address (allow_plain_http)",
            "serving plain HTTP on a non-loopback address (allow_plain_http): API keys cross the network in clear text unless TLS is terminated in front"
        ),
    }
    spawn_reload_on_sighup(state.clone(), tls.clone());
    let gate =
        crate::server::connections::Gate::new(&config.connections, config.trusted_proxies.clone());
    // In-flight requests end within the request timeout anyway; idle connections close at once.
    let grace = config.request_timeout + config.connections.header_read_timeout;
    crate::server::connections::serve(
        listener,
        http::app(state.clone()),
        tls,
        config.connections,
        gate,
        shutdown_signal(),
        grace,
    )
    .await;
    state.audit.flush_flood(state.clock.now(), true).await;
    state.audit.shutdown().await;
    Ok(())
}

/// Raises the open-files soft limit to the hard one and says when even that is too low for the
/// connection cap (the caps then never apply: accepts fail first).
fn raise_fd_limit(config: &Config) {
    let Some(limit) = crate::server::connections::raise_fd_limit() else {
        return;
    };
    // Descriptors the gateway needs besides connections: database, files, signals, logs.
    const RESERVED: u64 = 256;
    let wanted = config.connections.max_connections as u64 + RESERVED;
    if limit < wanted {
        tracing::warn!(
            open_files_limit = limit,
            max_connections = config.connections.max_connections,
            "the open-files limit is below max_connections plus {RESERVED}: raise the hard limit (LimitNOFILE, ulimit -Hn) or lower max_connections"
        );
    } else {
        tracing::debug!(open_files_limit = limit, "open-files limit");
    }
}

/// SIGHUP reloads the policy set and, when serving TLS, the certificate and key from the same
/// files (so a renewal needs no restart). Each reload keeps what it had on errors.
#[cfg(unix)]
fn spawn_reload_on_sighup(state: Arc<AppState>, tls: Option<Arc<Tls>>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin route only");
            return;
        };
        while hup.recv().await.is_some() {
            // Outcome and errors are logged and counted by the reload itself.
            let _ = state.reload_policies("SIGHUP").await;
            if let Some(tls) = &tls {
                let _ = tls.reload("SIGHUP").await;
            }
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_state: Arc<AppState>, _tls: Option<Arc<Tls>>) {}

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
