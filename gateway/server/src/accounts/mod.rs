//! Who may act, and for whom: apps and their keys, people (sessions, OIDC, hand-off, TOTP), their
//! passkeys and consents, devices and backup devices, wallets, and recovery.

pub mod apps;
pub mod backup_devices;
pub mod consent;
pub mod devices;
pub mod passkeys;
pub mod recovery;
pub mod users;
pub mod wallet_directory;
pub mod wallets;
