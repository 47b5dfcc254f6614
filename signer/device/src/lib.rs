//! The device side (docs/architecture.md §2, §8): the passphrase-encrypted file a paired device
//! keeps, and the client that runs the device's party of key generation and signing with the
//! gateway.

pub mod ceremony;
#[cfg(feature = "native")]
pub mod client;
mod error;
pub mod file;
pub mod signing;
pub mod transfer;

pub use error::{Error, Result};
pub use file::DeviceSecrets;
