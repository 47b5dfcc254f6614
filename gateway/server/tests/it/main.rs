//! The gateway's integration tests, one binary (one link instead of one per file): the HTTP
//! API on real sockets, the stores on SQLite and PostgreSQL, ceremonies with real devices.
//! Shared rigs live in `support` (databases, the store), `users_support` (a gateway with users,
//! sessions and passkeys) and `cosign_support` (devices and wallets), written once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod cosign_support;
mod support;
mod users_support;

mod apps_http;
mod audit_http;
mod audit_log;
mod audit_replay;
mod backup_devices;
mod consent_store;
mod cosign;
mod expiry;
mod http_api;
mod limits_http;
mod oidc;
mod oidc_trust_migration;
mod page_handoff;
mod passkeys;
mod quotas;
mod registration_quotas;
mod sessions;
mod wallets;
mod webhooks;
