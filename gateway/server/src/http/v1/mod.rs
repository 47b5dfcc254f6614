//! The versioned API under `/v1`: one module per resource, each handler taking its checks as
//! extractors (`crate::http::extract`) and its body as a typed request.

pub(crate) mod apps;
pub(crate) mod audit;
pub(crate) mod authorize;
pub mod ceremony;
pub(crate) mod devices;
pub(crate) mod policies;
pub(crate) mod recovery;
pub(crate) mod refresh;
pub(crate) mod signing;
pub(crate) mod step_up;
pub(crate) mod transfers;
pub(crate) mod users;
pub(crate) mod wallets;
pub(crate) mod webhooks;
