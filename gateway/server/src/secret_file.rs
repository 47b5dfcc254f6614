//! Files that hold secrets (the development token, the audit key): created owner-only (0600)
//! from the first byte, never world-readable even for an instant, and flushed to disk.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `path` with `bytes`, failing if it already exists (callers decide whether an old
/// file may be replaced and remove it first).
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| Error::Config(format!("writing {}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_owner_only_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        create_private(&p, b"x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert!(create_private(&p, b"y").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
    }
}
