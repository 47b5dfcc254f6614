//! Ports and processes.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command};

/// A port that was free on 127.0.0.1 a moment ago (the OS picks it).
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

/// Runs test `name` (its full path in the test binary, e.g. `custody::bad_key_helper`) of the
/// current test binary again, alone, in a child process with `env` set, and fails unless it
/// passed. For what must happen in a fresh process: a PKCS#11 module reads `SOFTHSM2_CONF`
/// once, at its initialisation.
pub fn rerun_in_child<K: AsRef<OsStr>, V: AsRef<OsStr>>(name: &str, ignored: bool, env: &[(K, V)]) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    if ignored {
        c.arg("--ignored");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
