//! Test primitives shared by the workspace's test binaries (never linked into a release build:
//! every user takes it as a dev-dependency). Each one exists because two or more test binaries
//! had written it themselves.
//!
//! Failures panic with a message saying what to install or set: these run only in tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test primitives: a failure here is the test's failure"
)]

pub mod postgres;
pub mod process;
pub mod softhsm;

pub use process::{Process, free_port, rerun_in_child};
