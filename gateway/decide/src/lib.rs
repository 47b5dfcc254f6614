//! The decision, apart from any server: a request's payload decoded into facts and the one
//! digest a signature would cover (`decode`), authorized by Cedar with every answer naming its
//! policies (`policy`), stage by stage (`pipeline`), over the records and velocity totals a
//! caller supplies (`records`, `ledger`). No I/O beyond reading a policy folder, no async
//! runtime, no database: the gateway records what this decides, the device decodes with it
//! what it is asked to sign (without the policy stage: `default-features = false`), and
//! `parapet decide` runs it offline.

pub mod decode;
pub mod error;
pub mod facts;
pub mod ledger;
#[cfg(feature = "policy")]
pub mod pipeline;
#[cfg(feature = "policy")]
pub mod policy;
pub mod rate;
pub mod records;
pub mod request;

pub use error::{Error, Result};
