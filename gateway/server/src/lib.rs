//! The Parapet gateway: the HTTP service and its pipeline stages (decode, policy, …), each a
//! plain module testable without HTTP.

pub mod audit;
pub mod backup_devices;
pub mod clock;
pub mod config;
pub mod connections;
pub mod consent;
pub mod cosign;
pub mod custody;
mod db;
pub mod devices;
pub mod error;
pub mod expiry;
pub mod http;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod offload;
pub mod outbound;
pub mod passkeys;
pub mod pipeline;
pub mod quotas;
pub mod recovery;
pub mod sealing;
pub mod secret_file;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;
pub mod wallets;
pub mod webhooks;

pub use error::{Error, Result};
/// The decision's stages, apart from any server (`gateway/decide`).
pub use parapet_decide::{decode, facts, ledger, policy, records, request};
