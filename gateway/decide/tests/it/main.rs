//! The decision's integration tests, one binary: decoding against public corpora and hostile
//! input, and the policy stage (loading, slicing, the engine, the shipped cases).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

mod conformance;
mod decode_fuzz;
mod policy_cases;
mod policy_engine;
mod policy_load;
mod policy_slicing;
