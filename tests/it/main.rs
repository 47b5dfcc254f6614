//! End-to-end tests of the real `parapet` binary, one test binary: `serve` and the operator
//! commands, TLS, custody in SoftHSM2, the device's command line, a crash under load, the page in
//! Chromium, and the policy-outcome snapshots.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod support;

mod audit_crash;
mod browser;
mod custody;
mod device_cli;
mod policy_snapshots;
mod serve;
mod tls;
