//! What every end-to-end test of the real binary needs: the repository root (the binary runs
//! from there, beside `policies/` and `schemas/`), and the workspace's shared test primitives.

use std::path::Path;

pub use parapet_testkit::{Process, free_port};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
