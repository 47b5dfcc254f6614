//! What travels on a ceremony's WebSocket besides protocol messages (docs/architecture.md §6).
//!
//! Binary frames carry [`super::Message`] bytes and nothing else. Text frames carry one
//! [`Control`] JSON object each:
//! 1. device → gateway, first, unless the upgrade request had the header:
//!    `{"type":"auth","authorization":"Device pd_…"}` (never a query string);
//! 2. gateway → device: `start` with the fresh execution id and what is being done;
//! 3. binary frames both ways until the protocol ends;
//! 4. key generation and refresh: the device sends `backup` (its new share sealed to the
//!    recovery public key it holds, docs/architecture.md §9); the gateway checks that key against
//!    the user's, answers `kit` (its own new share sealed to the same key); the device stores its
//!    share and the kit and says `stored`; the gateway commits and says `done`. Signing: the
//!    gateway sends its final protocol message, then `done` with the verified signature.
//!
//! Either side may send `error` and close; the ceremony is then over with no output.

use serde::{Deserialize, Serialize};

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    Auth {
        authorization: String,
    },
    Start {
        ceremony: String,
        /// The execution id, hex.
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wallet: Option<String>,
        /// The digest being signed (0x hex), for signing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<i64>,
    },
    Backup {
        address: String,
        epoch: i64,
        /// The recovery public key the device holds (hex): the gateway refuses one that is not
        /// the user's, so a device and the gateway never disagree about it silently.
        recovery_public_key: String,
        /// The device's new share, HPKE-sealed to that key (hex).
        device_share: String,
    },
    Kit {
        address: String,
        epoch: i64,
        /// The gateway's new share, HPKE-sealed to the device's recovery public key (hex).
        gateway_share: String,
    },
    Stored {
        address: String,
    },
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<WireSignature>,
    },
    Error {
        code: String,
        message: String,
    },
}

impl Control {
    /// The message's type, for errors and logs: never its contents (a `backup` or `kit` carries
    /// sealed shares, which stay out of logs and the audit trail).
    pub fn kind(&self) -> &'static str {
        match self {
            Control::Auth { .. } => "auth",
            Control::Start { .. } => "start",
            Control::Backup { .. } => "backup",
            Control::Kit { .. } => "kit",
            Control::Stored { .. } => "stored",
            Control::Done { .. } => "done",
            Control::Error { .. } => "error",
        }
    }
}

/// A signature as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireSignature {
    pub r: String,
    pub s: String,
    pub y_parity: bool,
}

impl From<&super::RecoverableSignature> for WireSignature {
    fn from(s: &super::RecoverableSignature) -> WireSignature {
        WireSignature {
            r: format!("0x{}", hex::encode(s.r)),
            s: format!("0x{}", hex::encode(s.s)),
            y_parity: s.y_parity(),
        }
    }
}

/// Parses a 32-byte execution id or digest from (0x-optional) hex.
pub fn bytes32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.strip_prefix("0x").unwrap_or(text), &mut out).ok()?;
    Some(out)
}
