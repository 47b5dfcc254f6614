//! The Parapet gateway: the HTTP service and its pipeline stages (decode, policy, …), each a
//! plain module testable without HTTP.

pub mod clock;
pub mod decode;
pub mod error;
pub mod facts;
pub mod ledger;
pub mod pipeline;
pub mod policy;
pub mod records;
pub mod request;

pub use error::{Error, Result};
