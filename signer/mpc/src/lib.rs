//! 2-of-2 threshold ECDSA on secp256k1 behind two small traits, so that the protocol library
//! (today `dkls23`, see `docs/adr/0001-mpc-library.md`) can be replaced without touching the
//! gateway or the device client.
//!
//! - [`ThresholdEcdsa`] starts ceremonies: key generation, signing one 32-byte digest, refresh.
//! - [`Ceremony`] is one party's state machine in one ceremony. The transport calls
//!   [`Ceremony::start`], sends what it returns to the other party, and feeds every message it
//!   receives to [`Ceremony::handle`] until that returns [`Step::Done`].
//!
//! Every message is a [`Message`] serialised to bytes; it names its ceremony kind, session id,
//! round, sender and receiver. A message from another ceremony or session, from the wrong
//! party, for another round (replayed or reordered), or one that does not decode or fails the
//! protocol's checks is refused with a typed error, and the ceremony is then dead: every later
//! call fails with [`Error::CeremonyOver`]. There is no retry inside a ceremony; a new attempt
//! is a new ceremony with a new session id.
//!
//! Keys cross to `k256` 0.13 (the version alloy uses) only as bytes: SEC1 points, 32-byte
//! scalars, `r ‖ s`. Every signature is verified with `k256` 0.13 and recovered to the wallet's
//! address before a ceremony returns it.

mod dkls;
pub mod drive;
mod error;
pub mod recovery;
pub mod wire;

pub use error::{Error, Result};

pub use dkls::Dkls23;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

/// The two parties of a wallet. Their protocol indices are fixed: device 1, gateway 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Device,
    Gateway,
}

impl Role {
    /// The other party.
    pub fn peer(self) -> Role {
        match self {
            Role::Device => Role::Gateway,
            Role::Gateway => Role::Device,
        }
    }

    /// The party's 1-based protocol index.
    pub fn index(self) -> u8 {
        match self {
            Role::Device => 1,
            Role::Gateway => 2,
        }
    }

    fn from_index(index: u8) -> Option<Role> {
        match index {
            1 => Some(Role::Device),
            2 => Some(Role::Gateway),
            _ => None,
        }
    }
}

/// What a ceremony does; part of every message so that one ceremony's messages cannot be fed
/// to another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CeremonyKind {
    Keygen,
    Sign,
    Refresh,
}

/// A ceremony's execution id: fresh and random for every ceremony (the gateway also stores it
/// under a UNIQUE constraint). It is bound into the protocol itself (DKG session id, signing
/// id, refresh id), not only into the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> SessionId {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        SessionId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Version of the [`Message`] envelope.
pub const MESSAGE_VERSION: u8 = 1;

/// One protocol message between the two parties.
///
/// Round payloads of key generation and refresh carry secret shares meant for the other party
/// only: the transport must be confidential and authenticated (TLS to the gateway, device
/// token), as the protocol assumes private channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub version: u8,
    pub kind: CeremonyKind,
    pub session: SessionId,
    pub round: u8,
    pub sender: Role,
    pub receiver: Role,
    /// The protocol library's round data (opaque to the transport).
    pub payload: Vec<u8>,
}

impl Message {
    /// The wire form.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|_| Error::MessageMalformed)
    }

    /// Parses the wire form (nothing is checked but the shape and the version).
    pub fn from_bytes(bytes: &[u8]) -> Result<Message> {
        let message: Message = postcard::from_bytes(bytes).map_err(|_| Error::MessageMalformed)?;
        if message.version != MESSAGE_VERSION {
            return Err(Error::MessageMalformed);
        }
        Ok(message)
    }
}

/// What [`Ceremony::handle`] produced.
#[derive(Debug)]
pub enum Step<T> {
    /// Send these (wire-form) messages to the other party and wait for the next one.
    Send(Vec<Vec<u8>>),
    /// The ceremony is over for this party: send `send` (possibly empty) and keep `output`.
    Done { send: Vec<Vec<u8>>, output: T },
}

/// One party's state machine in one ceremony.
pub trait Ceremony: Send {
    type Output;
    /// The messages to send first. Called once.
    fn start(&mut self) -> Result<Vec<Vec<u8>>>;
    /// Consumes one message from the other party (wire form).
    fn handle(&mut self, message: &[u8]) -> Result<Step<Self::Output>>;
}

/// A threshold ECDSA implementation: the one seam between Parapet and the protocol library.
pub trait ThresholdEcdsa: Send + Sync {
    /// 2-of-2 key generation; each party ends with its [`KeyShare`].
    fn keygen(
        &self,
        role: Role,
        session: SessionId,
    ) -> Result<Box<dyn Ceremony<Output = KeyShare>>>;

    /// Signs `digest` with `share`. Both parties must pass the same digest and session id,
    /// otherwise the ceremony aborts. The gateway receives the signature first: its final
    /// message is released only together with its verified result.
    fn sign(
        &self,
        role: Role,
        session: SessionId,
        share: &KeyShare,
        digest: [u8; 32],
    ) -> Result<Box<dyn Ceremony<Output = RecoverableSignature>>>;

    /// Re-randomises both shares; the public key and address stay the same. The old shares
    /// and the new ones do not sign together.
    fn refresh(
        &self,
        role: Role,
        session: SessionId,
        share: &KeyShare,
    ) -> Result<Box<dyn Ceremony<Output = KeyShare>>>;

    /// Rebuilds the wallet's private key from both shares: the exit path of a user who leaves
    /// (`parapet wallet export-key`), run only on their machine. The result is checked against
    /// the wallet's public key before it is returned; it ends the 2-of-2 protection for good.
    fn export_key(&self, device: &KeyShare, gateway: &KeyShare) -> Result<Zeroizing<[u8; 32]>>;
}

/// Runs a signing ceremony with both shares in this process (the offline exit path: no gateway
/// involved) and returns the verified signature.
pub fn sign_locally(
    scheme: &dyn ThresholdEcdsa,
    device: &KeyShare,
    gateway: &KeyShare,
    digest: [u8; 32],
) -> Result<RecoverableSignature> {
    if device.public_key() != gateway.public_key() {
        return Err(Error::ShareMismatch);
    }
    let session = SessionId::random();
    let (a, _) = run_locally(
        scheme.sign(Role::Device, session, device, digest)?,
        scheme.sign(Role::Gateway, session, gateway, digest)?,
    )?;
    verify_signature(device.public_key(), device.address(), &digest, &a)?;
    Ok(a)
}

/// Steps two parties' ceremonies against each other in one thread, passing messages by hand.
pub fn run_locally<T>(
    mut a: Box<dyn Ceremony<Output = T>>,
    mut b: Box<dyn Ceremony<Output = T>>,
) -> Result<(T, T)> {
    let mut to_b = a.start()?;
    let mut to_a = b.start()?;
    let (mut out_a, mut out_b) = (None, None);
    // Each round moves at least one message; a protocol that stalls is a bug, not a loop.
    for _ in 0..64 {
        if out_a.is_some() && out_b.is_some() {
            break;
        }
        let (mut next_a, mut next_b) = (Vec::new(), Vec::new());
        for m in std::mem::take(&mut to_a) {
            match a.handle(&m)? {
                Step::Send(v) => next_b.extend(v),
                Step::Done { send, output } => {
                    next_b.extend(send);
                    out_a = Some(output);
                }
            }
        }
        for m in std::mem::take(&mut to_b) {
            match b.handle(&m)? {
                Step::Send(v) => next_a.extend(v),
                Step::Done { send, output } => {
                    next_a.extend(send);
                    out_b = Some(output);
                }
            }
        }
        to_a.extend(next_a);
        to_b.extend(next_b);
    }
    match (out_a, out_b) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Error::Protocol {
            reason: "the local ceremony did not finish".to_owned(),
            ban_counterparty: false,
        }),
    }
}

/// A party's key share: who holds it, the wallet's public key and address, and the protocol
/// library's secret state (opaque, wiped on drop).
pub struct KeyShare {
    role: Role,
    public_key: [u8; 33],
    address: [u8; 20],
    scheme: u8,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for KeyShare {
    // Hand-written so that the secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("role", &self.role)
            .field("address", &hex::encode(self.address))
            .finish_non_exhaustive()
    }
}

/// Version of the [`KeyShare`] byte format.
const SHARE_VERSION: u8 = 1;
const SHARE_HEADER: usize = 1 + 1 + 1 + 33 + 20;

impl KeyShare {
    pub fn role(&self) -> Role {
        self.role
    }

    /// The wallet's public key, compressed SEC1.
    pub fn public_key(&self) -> &[u8; 33] {
        &self.public_key
    }

    /// The wallet's Ethereum address.
    pub fn address(&self) -> &[u8; 20] {
        &self.address
    }

    /// The share as bytes, to seal with the gateway's custody or the device's
    /// passphrase file: `version ‖ scheme ‖ role ‖ public key ‖ address ‖ library state`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Allocated at its final size so that no reallocation leaves a copy behind.
        let mut out = Zeroizing::new(Vec::with_capacity(SHARE_HEADER + self.secret.len()));
        out.push(SHARE_VERSION);
        out.push(self.scheme);
        out.push(self.role.index());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.address);
        out.extend_from_slice(&self.secret);
        out
    }

    /// Parses [`KeyShare::to_bytes`]. The library state is checked when a ceremony uses it.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyShare> {
        if bytes.len() <= SHARE_HEADER {
            return Err(Error::ShareMalformed);
        }
        let (header, secret) = bytes.split_at(SHARE_HEADER);
        let [version, scheme, role, rest @ ..] = header else {
            return Err(Error::ShareMalformed);
        };
        if *version != SHARE_VERSION {
            return Err(Error::ShareMalformed);
        }
        let role = Role::from_index(*role).ok_or(Error::ShareMalformed)?;
        let (public_key, address) = rest.split_at(33);
        let public_key: [u8; 33] = public_key.try_into().map_err(|_| Error::ShareMalformed)?;
        let address: [u8; 20] = address.try_into().map_err(|_| Error::ShareMalformed)?;
        let key = VerifyingKey::from_sec1_bytes(&public_key).map_err(|_| Error::ShareMalformed)?;
        if eth_address(&key) != address {
            return Err(Error::ShareMalformed);
        }
        Ok(KeyShare {
            role,
            public_key,
            address,
            scheme: *scheme,
            secret: Zeroizing::new(secret.to_vec()),
        })
    }
}

/// An ECDSA signature with its recovery id, checked: low s, valid for the digest under the
/// wallet's key, and recovering to the wallet's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverableSignature {
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// 0 or 1 (R's y parity); 2 and 3 (R.x ≥ n) are refused, as Ethereum cannot express them.
    pub recovery_id: u8,
}

impl RecoverableSignature {
    /// Ethereum's `y_parity`.
    pub fn y_parity(&self) -> bool {
        self.recovery_id & 1 == 1
    }

    /// `r ‖ s ‖ v` with v = 27 + y parity (the `personal_sign` form).
    pub fn to_rsv(&self) -> [u8; 65] {
        let v = 27 + self.recovery_id;
        let mut out = [0u8; 65];
        let bytes = self
            .r
            .iter()
            .chain(self.s.iter())
            .chain(std::iter::once(&v));
        for (dst, src) in out.iter_mut().zip(bytes) {
            *dst = *src;
        }
        out
    }
}

/// The Ethereum address of a public key: the last 20 bytes of Keccak-256 of the uncompressed
/// point without its 0x04 prefix.
pub fn eth_address(key: &VerifyingKey) -> [u8; 20] {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(point.as_bytes().get(1..).unwrap_or_default());
    let mut address = [0u8; 20];
    address.copy_from_slice(hash.get(12..).unwrap_or_default());
    address
}

/// Checks a signature the way every consumer will: `k256` 0.13 verification of the prehashed
/// digest, low s (EIP-2), and public-key recovery to `address`.
pub fn verify_signature(
    public_key: &[u8; 33],
    address: &[u8; 20],
    digest: &[u8; 32],
    signature: &RecoverableSignature,
) -> Result<()> {
    let key = VerifyingKey::from_sec1_bytes(public_key)
        .map_err(|_| Error::SignatureInvalid("bad public key"))?;
    let rs = [signature.r, signature.s].concat();
    let sig =
        Signature::from_slice(&rs).map_err(|_| Error::SignatureInvalid("r or s out of range"))?;
    if sig.normalize_s().is_some() {
        return Err(Error::SignatureInvalid("high s"));
    }
    key.verify_prehash(digest, &sig)
        .map_err(|_| Error::SignatureInvalid("does not verify"))?;
    if signature.recovery_id > 1 {
        return Err(Error::SignatureInvalid("recovery id beyond y parity"));
    }
    let id = RecoveryId::from_byte(signature.recovery_id)
        .ok_or(Error::SignatureInvalid("bad recovery id"))?;
    let recovered = VerifyingKey::recover_from_prehash(digest, &sig, id)
        .map_err(|_| Error::SignatureInvalid("does not recover"))?;
    if recovered != key || eth_address(&recovered) != *address {
        return Err(Error::SignatureInvalid("recovers to another address"));
    }
    Ok(())
}
