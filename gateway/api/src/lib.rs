//! The gateway's wire, typed once for everyone who speaks it: the server writes these, the
//! command line and the device read them. A field added here is added for all of them; the
//! OpenAPI document (`schemas/openapi.json`) describes the same shapes.
//!
//! Only serde (and, with the `openapi` feature, the derive of each type's schema for the OpenAPI
//! document): this crate builds wherever the device does.

pub mod admin;
pub mod audit;
pub mod consent;
pub mod devices;
pub mod error;
mod names;
pub mod recovery;
pub mod sessions;
pub mod signing;
pub mod wallets;

pub use error::ErrorBody;
pub use signing::{SigningRequestView, SigningState};
