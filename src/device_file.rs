//! The device file on this machine: where it is, and the passphrase that opens it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct FileArgs {
    /// The device file (default: $PARAPET_DEVICE_FILE, else ~/.config/parapet/device.json).
    #[arg(long = "device-file", env = "PARAPET_DEVICE_FILE")]
    path: Option<PathBuf>,
}

impl FileArgs {
    pub fn path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.path {
            return Ok(p.clone());
        }
        let home = std::env::var_os("HOME").context("HOME is not set; pass --device-file")?;
        Ok(PathBuf::from(home).join(".config/parapet/device.json"))
    }
}

/// The passphrase: `PARAPET_DEVICE_PASSPHRASE` (for scripts), else asked on the terminal
/// without echo (twice when a new file is made).
pub fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var("PARAPET_DEVICE_PASSPHRASE") {
        return Ok(p);
    }
    let p =
        rpassword::prompt_password("Device file passphrase: ").context("reading the passphrase")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat the passphrase: ")
            .context("reading the passphrase")?;
        if again != p {
            bail!("the passphrases differ");
        }
    }
    Ok(p)
}
