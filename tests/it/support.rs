//! What every end-to-end test of the real binary needs, written once: the repository root (the
//! binary runs from there, beside `policies/` and `schemas/`), a free port on 127.0.0.1, and a
//! child process that is killed when its test ends, passed or failed.

use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Child;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A port that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when dropped, so a failed assertion leaves no gateway
/// running.
#[derive(Debug)]
pub struct Process(pub Child);

impl From<Child> for Process {
    fn from(child: Child) -> Process {
        Process(child)
    }
}

impl Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
