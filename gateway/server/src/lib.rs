//! The Parapet gateway: the HTTP service and its pipeline stages (decode, policy, …), each a
//! plain module testable without HTTP.

pub mod accounts;
pub mod audit;
pub mod clock;
pub mod config;
pub mod cosign;
pub mod custody;
pub mod error;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod secret_file;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod webhooks;

pub use error::{Error, Result};
/// The decision's stages, apart from any server (`gateway/decide`).
pub use parapet_decide::{decode, facts, ledger, policy, records, request};
