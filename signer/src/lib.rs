//! The co-signer: custody of the gateway's key shares (an HSM through PKCS#11, or a development
//! key file) and the 2-of-2 threshold ECDSA ceremonies (key generation, signing, refresh) behind
//! one small trait, so that the protocol library can be replaced without touching the gateway.

pub mod custody;
pub mod device;
mod error;
pub mod mpc;
pub mod recovery;

pub use error::{Error, Result};
