//! SoftHSM2 tokens for custody tests, each in its own directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's `softhsm2` package puts the PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Whether SoftHSM2 is installed. When it is not, says so loudly and answers `false` (the test
/// skips), unless `PARAPET_REQUIRE_SOFTHSM` is set (CI), which makes it a failure.
pub fn available(test: &str) -> bool {
    if Path::new(MODULE).exists() {
        return true;
    }
    assert!(
        std::env::var_os("PARAPET_REQUIRE_SOFTHSM").is_none(),
        "PARAPET_REQUIRE_SOFTHSM is set but {MODULE} is missing (apt-get install -y softhsm2)"
    );
    eprintln!(
        "\n*** SKIPPED {test}: SoftHSM2 is not installed ({MODULE} is missing). Install it with \
         `apt-get install -y softhsm2`; CI sets PARAPET_REQUIRE_SOFTHSM=1. ***\n"
    );
    false
}

/// Initialises a fresh token labelled `label` with `pin` and `so_pin`, stored under
/// `dir/tokens`; returns the configuration file (`dir/softhsm2.conf`) to pass as
/// `SOFTHSM2_CONF`.
pub fn init_token(dir: &Path, label: &str, pin: &str, so_pin: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            so_pin,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(init.status.success(), "softhsm2-util: {init:?}");
    conf
}
