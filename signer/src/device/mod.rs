//! The device side (DESIGN §2, §8): the passphrase-encrypted file a paired device keeps.

pub mod file;

pub use file::DeviceSecrets;
