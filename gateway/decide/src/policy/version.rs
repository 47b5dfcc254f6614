//! The policy-set version (docs/architecture.md §3): SHA-256 of the RFC 8785 canonical JSON of the
//! manifest `[[relative_path, sha256_hex(content)], …]` sorted by path. Anyone holding the files
//! can recompute it with any JCS implementation, without our code.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `files` as (path relative to the project root, content); order does not matter.
pub(crate) fn version_of(files: &[(String, Vec<u8>)]) -> Result<String> {
    let mut manifest: Vec<[String; 2]> = files
        .iter()
        .map(|(path, bytes)| [path.clone(), sha256_hex(bytes)])
        .collect();
    manifest.sort();
    let canonical = serde_json_canonicalizer::to_vec(&manifest)
        .map_err(|e| Error::Internal(format!("canonical manifest: {e}")))?;
    Ok(sha256_hex(&canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_order_independent_and_content_sensitive() {
        let a = (
            "policies/a.cedar".to_owned(),
            b"permit(principal, action, resource);".to_vec(),
        );
        let b = ("schemas/tokens.json".to_owned(), b"{}".to_vec());
        let v1 = version_of(&[a.clone(), b.clone()]).unwrap();
        let v2 = version_of(&[b.clone(), a.clone()]).unwrap();
        assert_eq!(v1, v2);
        let mut a2 = a.clone();
        a2.1.push(b' ');
        assert_ne!(v1, version_of(&[a2, b]).unwrap());
    }

    #[test]
    fn version_matches_an_independent_computation() {
        // sha256("x") and the manifest JSON spelt by hand: JCS of an array of string pairs has
        // no whitespace and keeps the array order (sorted by path here).
        let files = [("policies/p.cedar".to_owned(), b"x".to_vec())];
        let hx = sha256_hex(b"x");
        let manual = format!("[[\"policies/p.cedar\",\"{hx}\"]]");
        assert_eq!(version_of(&files).unwrap(), sha256_hex(manual.as_bytes()));
    }
}
