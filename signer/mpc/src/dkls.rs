//! [`ThresholdEcdsa`] with `dkls23` 0.6.2 (DKLs23, 0xCarbon), pinned exactly; see
//! `docs/adr/0001-mpc-library.md`.
//!
//! Rounds (both parties send in every round; the channel is ordered per direction):
//! - key generation and refresh: 1 = polynomial fragment (secret, for the peer only);
//!   2 = commitment to the proof of the party's point, zero-share commitments, chain-code
//!   commitment; 3 = the proof itself, zero-share seeds, OT setup (key generation only) and the
//!   chain-code opening. The proof is revealed only after the peer's commitment has arrived, as
//!   the library's DKG prescribes.
//! - signing: 1 and 2 = the library's two transmit rounds; 3 = the final broadcast. The device
//!   sends its round 3 as soon as it can; the gateway holds its own round 3 until it has the
//!   device's, has computed and verified the signature, and releases it with the result. Until
//!   the gateway sends that message the device cannot finish the signature.
//!
//! Every library call is made only after the envelope and the payload's sender/receiver fields
//! were checked, because some library functions panic on inconsistent party indices.

use std::collections::BTreeMap;

use dkls23::DkgSession;
use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::refresh::{
    KeepRefreshPhase3to4, TransmitRefreshPhase2to4, TransmitRefreshPhase3to4,
};
use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use dkls23::protocols::{Abort, AbortKind, Parameters, PartiesMessage, PartyIndex};
use dkls23::secp256k1::{Party, compute_eth_address};
use dkls23::utilities::hashes::HashOutput;
use dkls23::utilities::proofs::DLogProof;
use k256_dkls::elliptic_curve::sec1::ToSec1Point;
use k256_dkls::{Scalar, Secp256k1};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    Ceremony, CeremonyKind, KeyShare, MESSAGE_VERSION, Message, RecoverableSignature, Role,
    SessionId, Step, ThresholdEcdsa, eth_address, verify_signature,
};
use crate::{Error, Result};

/// The scheme byte in [`KeyShare`] bytes: a `dkls23` 0.6 `Party` serialised with postcard.
const SCHEME_DKLS23_V06: u8 = 1;

/// DKLs23 through the `dkls23` crate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dkls23;

impl ThresholdEcdsa for Dkls23 {
    fn keygen(
        &self,
        role: Role,
        session: SessionId,
    ) -> Result<Box<dyn Ceremony<Output = KeyShare>>> {
        let parameters = parameters()?;
        Ok(Box::new(Keygen {
            channel: Channel::new(CeremonyKind::Keygen, session, role),
            state: DkgState::Start(Box::new(DkgSession::new(
                parameters,
                index(role)?,
                session.0.to_vec(),
            ))),
        }))
    }

    fn sign(
        &self,
        role: Role,
        session: SessionId,
        share: &KeyShare,
        digest: [u8; 32],
    ) -> Result<Box<dyn Ceremony<Output = RecoverableSignature>>> {
        let party = open_share(share, role)?;
        Ok(Box::new(Sign {
            channel: Channel::new(CeremonyKind::Sign, session, role),
            data: SignData {
                sign_id: session.0.to_vec(),
                counterparties: vec![index(role.peer())?],
                message_hash: digest,
            },
            party,
            public_key: *share.public_key(),
            address: *share.address(),
            digest,
            state: SignState::Start,
        }))
    }

    fn refresh(
        &self,
        role: Role,
        session: SessionId,
        share: &KeyShare,
    ) -> Result<Box<dyn Ceremony<Output = KeyShare>>> {
        let party = open_share(share, role)?;
        Ok(Box::new(Refresh {
            channel: Channel::new(CeremonyKind::Refresh, session, role),
            party,
            public_key: *share.public_key(),
            state: RefreshState::Start,
        }))
    }

    fn export_key(&self, device: &KeyShare, gateway: &KeyShare) -> Result<Zeroizing<[u8; 32]>> {
        if device.public_key() != gateway.public_key() {
            return Err(Error::ShareMismatch);
        }
        let a = open_share(device, Role::Device)?;
        let b = open_share(gateway, Role::Gateway)?;
        // The library has no export. Its shares are points of a degree-1 polynomial whose value
        // at 0 is the key, so the key is their Lagrange interpolation at 0:
        // x = λ_a·s_a + λ_b·s_b with λ_a = i_b / (i_b − i_a) and λ_b = i_a / (i_a − i_b).
        let (ia, ib) = (
            Scalar::from(u64::from(a.party_index.as_u8())),
            Scalar::from(u64::from(b.party_index.as_u8())),
        );
        let inverse = |s: Scalar| -> Result<Scalar> {
            Option::<Scalar>::from(s.invert()).ok_or(Error::ShareMismatch)
        };
        let la = ib * inverse(ib - ia)?;
        let lb = ia * inverse(ia - ib)?;
        let key = a.poly_point * la + b.poly_point * lb;
        let public = (k256_dkls::ProjectivePoint::GENERATOR * key).to_affine();
        if compressed(&public)? != *device.public_key() {
            return Err(Error::ShareMismatch);
        }
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&key.to_bytes());
        // Cross-check in k256 0.13 (the version alloy uses): the key's address is the wallet's.
        let signing =
            k256::ecdsa::SigningKey::from_slice(out.as_ref()).map_err(|_| Error::ShareMismatch)?;
        if eth_address(signing.verifying_key()) != *device.address() {
            return Err(Error::ShareMismatch);
        }
        Ok(out)
    }
}

fn parameters() -> Result<Parameters> {
    Parameters::new(2, 2).map_err(|e| protocol(e.to_string()))
}

fn index(role: Role) -> Result<PartyIndex> {
    PartyIndex::new(role.index()).map_err(|e| protocol(e.to_string()))
}

fn protocol(reason: String) -> Error {
    Error::Protocol {
        reason,
        ban_counterparty: false,
    }
}

fn abort(a: Abort) -> Error {
    Error::Protocol {
        reason: a.description(),
        ban_counterparty: matches!(a.kind, AbortKind::BanCounterparty(_)),
    }
}

/// The one element of a per-counterparty vector (2-of-2: exactly one counterparty).
fn only<T>(mut items: Vec<T>) -> Result<T> {
    match (items.pop(), items.is_empty()) {
        (Some(item), true) => Ok(item),
        _ => Err(protocol(
            "expected exactly one message for the peer".to_owned(),
        )),
    }
}

/// The secret scalar the polynomial gives `role` (phase-1 output is indexed by party - 1).
fn fragment_for(fragments: &[Scalar], role: Role) -> Result<Scalar> {
    fragments
        .get(usize::from(role.index()) - 1)
        .copied()
        .ok_or_else(|| protocol("polynomial fragments missing".to_owned()))
}

/// Checks that a payload names the peer as sender and us as receiver.
fn check_parties(parties: &PartiesMessage, me: Role) -> Result<()> {
    if parties.sender.as_u8() != me.peer().index() || parties.receiver.as_u8() != me.index() {
        return Err(Error::WrongParty);
    }
    Ok(())
}

fn check_sender(sender: PartyIndex, me: Role) -> Result<()> {
    if sender.as_u8() != me.peer().index() {
        return Err(Error::WrongParty);
    }
    Ok(())
}

/// Decodes a payload, refusing trailing bytes.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        _ => Err(Error::MessageMalformed),
    }
}

/// A `Vec<u8>` that is wiped when it grows or drops, so serialising a secret leaves no stale
/// copy in freed memory.
struct SecretBuf(Zeroizing<Vec<u8>>);

impl Extend<u8> for SecretBuf {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for byte in iter {
            if self.0.len() == self.0.capacity() {
                let mut bigger =
                    Zeroizing::new(Vec::with_capacity((self.0.capacity() * 2).max(4096)));
                bigger.extend_from_slice(&self.0);
                self.0 = bigger;
            }
            self.0.push(byte);
        }
    }
}

fn to_secret_bytes<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>> {
    postcard::to_extend(value, SecretBuf(Zeroizing::new(Vec::new())))
        .map(|buf| buf.0)
        .map_err(|_| Error::ShareMalformed)
}

/// Compressed SEC1 bytes of a `k256` 0.14 point: the form in which keys cross to 0.13.
fn compressed(point: &k256_dkls::AffinePoint) -> Result<[u8; 33]> {
    point
        .to_sec1_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| protocol("public key is the identity".to_owned()))
}

/// Wraps a library party into a [`KeyShare`], cross-checking the address with `k256` 0.13.
fn share_from_party(party: &Party, role: Role) -> Result<KeyShare> {
    let public_key = compressed(&party.pk)?;
    let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key)
        .map_err(|_| protocol("public key does not parse".to_owned()))?;
    let address = eth_address(&key);
    if party.address.to_lowercase() != format!("0x{}", hex::encode(address)) {
        return Err(protocol(
            "address mismatch between k256 versions".to_owned(),
        ));
    }
    let bytes = to_secret_bytes(party)?;
    Ok(KeyShare {
        role,
        public_key,
        address,
        scheme: SCHEME_DKLS23_V06,
        secret: bytes,
    })
}

/// The library party inside a share, checked against the share's header and the role.
fn open_share(share: &KeyShare, role: Role) -> Result<Party> {
    if share.role != role || share.scheme != SCHEME_DKLS23_V06 {
        return Err(Error::ShareMalformed);
    }
    let party: Party = decode(&share.secret).map_err(|_| Error::ShareMalformed)?;
    if party.party_index.as_u8() != role.index()
        || party.parameters.threshold != 2
        || party.parameters.share_count != 2
        || compressed(&party.pk)? != share.public_key
    {
        return Err(Error::ShareMalformed);
    }
    Ok(party)
}

/// Envelope checks shared by every ceremony.
struct Channel {
    kind: CeremonyKind,
    session: SessionId,
    me: Role,
    next_round: u8,
    over: bool,
}

impl Channel {
    fn new(kind: CeremonyKind, session: SessionId, me: Role) -> Channel {
        Channel {
            kind,
            session,
            me,
            next_round: 1,
            over: false,
        }
    }

    fn out<T: Serialize>(&self, round: u8, payload: &T) -> Result<Vec<u8>> {
        Message {
            version: MESSAGE_VERSION,
            kind: self.kind,
            session: self.session,
            round,
            sender: self.me,
            receiver: self.me.peer(),
            payload: postcard::to_allocvec(payload).map_err(|_| Error::MessageMalformed)?,
        }
        .to_bytes()
    }

    /// Checks the envelope of the next message; returns its round and payload.
    fn accept(&mut self, bytes: &[u8]) -> Result<(u8, Vec<u8>)> {
        if self.over {
            return Err(Error::CeremonyOver);
        }
        let message = Message::from_bytes(bytes)?;
        if message.kind != self.kind {
            return Err(Error::WrongCeremony);
        }
        if message.session != self.session {
            return Err(Error::WrongSession);
        }
        if message.sender != self.me.peer() || message.receiver != self.me {
            return Err(Error::WrongParty);
        }
        if message.round != self.next_round {
            return Err(Error::UnexpectedRound {
                expected: self.next_round,
                got: message.round,
            });
        }
        self.next_round = self.next_round.saturating_add(1);
        Ok((message.round, message.payload))
    }

    /// Runs one step; any error or completion ends the ceremony.
    fn guard<T>(&mut self, result: Result<Step<T>>) -> Result<Step<T>> {
        if !matches!(result, Ok(Step::Send(_))) {
            self.over = true;
        }
        result
    }
}

// ---------------------------------------------------------------- key generation

#[derive(Serialize, Deserialize)]
struct DkgRound2 {
    commitment: HashOutput,
    zero: TransmitInitZeroSharePhase2to4,
    bip: BroadcastDerivationPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct DkgRound3 {
    proof: DLogProof<Secp256k1>,
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<Secp256k1>,
    bip: BroadcastDerivationPhase3to4,
}

enum DkgState {
    Start(Box<DkgSession<Secp256k1>>),
    AwaitRound1 {
        session: Box<DkgSession<Secp256k1>>,
        own_fragment: Zeroizing<Scalar>,
    },
    AwaitRound2 {
        session: Box<DkgSession<Secp256k1>>,
        own: Box<ProofCommitment<Secp256k1>>,
        own_bip2: BroadcastDerivationPhase2to4,
        own_bip3: BroadcastDerivationPhase3to4,
        held_round3: Zeroizing<Vec<u8>>,
    },
    AwaitRound3 {
        session: Box<DkgSession<Secp256k1>>,
        own: Box<ProofCommitment<Secp256k1>>,
        own_bip2: BroadcastDerivationPhase2to4,
        own_bip3: BroadcastDerivationPhase3to4,
        peer_round2: Box<DkgRound2>,
    },
    Over,
}

struct Keygen {
    channel: Channel,
    state: DkgState,
}

impl Keygen {
    fn step(&mut self, round: u8, payload: &[u8]) -> Result<Step<KeyShare>> {
        let me = self.channel.me;
        match (std::mem::replace(&mut self.state, DkgState::Over), round) {
            (
                DkgState::AwaitRound1 {
                    mut session,
                    own_fragment,
                },
                1,
            ) => {
                let peer_fragment: Zeroizing<Scalar> = Zeroizing::new(decode(payload)?);
                let fragments = Zeroizing::new(vec![*own_fragment, *peer_fragment]);
                let (own, zero2, own_bip2) = session.phase2(&fragments).map_err(abort)?;
                let (zero3, mul3, own_bip3) = session.phase3().map_err(abort)?;
                let round2 = self.channel.out(
                    2,
                    &DkgRound2 {
                        commitment: own.commitment,
                        zero: only(zero2)?,
                        bip: own_bip2.clone(),
                    },
                )?;
                let held_round3 = Zeroizing::new(self.channel.out(
                    3,
                    &DkgRound3 {
                        proof: own.proof.clone(),
                        zero: only(zero3)?,
                        mul: only(mul3)?,
                        bip: own_bip3.clone(),
                    },
                )?);
                self.state = DkgState::AwaitRound2 {
                    session,
                    own: Box::new(own),
                    own_bip2,
                    own_bip3,
                    held_round3,
                };
                Ok(Step::Send(vec![round2]))
            }
            (
                DkgState::AwaitRound2 {
                    session,
                    own,
                    own_bip2,
                    own_bip3,
                    held_round3,
                },
                2,
            ) => {
                let peer_round2: DkgRound2 = decode(payload)?;
                check_parties(&peer_round2.zero.parties, me)?;
                check_sender(peer_round2.bip.sender_index, me)?;
                self.state = DkgState::AwaitRound3 {
                    session,
                    own,
                    own_bip2,
                    own_bip3,
                    peer_round2: Box::new(peer_round2),
                };
                Ok(Step::Send(vec![held_round3.to_vec()]))
            }
            (
                DkgState::AwaitRound3 {
                    session,
                    own,
                    own_bip2,
                    own_bip3,
                    peer_round2,
                },
                3,
            ) => {
                let peer_round3: DkgRound3 = decode(payload)?;
                check_parties(&peer_round3.zero.parties, me)?;
                check_parties(&peer_round3.mul.parties, me)?;
                check_sender(peer_round3.bip.sender_index, me)?;
                let peer = ProofCommitment {
                    index: index(me.peer())?,
                    proof: peer_round3.proof,
                    commitment: peer_round2.commitment,
                };
                let bip2 =
                    BTreeMap::from([(index(me)?, own_bip2), (index(me.peer())?, peer_round2.bip)]);
                let bip3 =
                    BTreeMap::from([(index(me)?, own_bip3), (index(me.peer())?, peer_round3.bip)]);
                let (party, _package) = session
                    .phase4(
                        &[*own, peer],
                        &[peer_round2.zero],
                        &[peer_round3.zero],
                        &[peer_round3.mul],
                        &bip2,
                        &bip3,
                        compute_eth_address,
                    )
                    .map_err(abort)?;
                Ok(Step::Done {
                    send: Vec::new(),
                    output: share_from_party(&party, me)?,
                })
            }
            (DkgState::Start(_), _) => Err(Error::NotStarted),
            _ => Err(Error::CeremonyOver),
        }
    }
}

impl Ceremony for Keygen {
    type Output = KeyShare;

    fn start(&mut self) -> Result<Vec<Vec<u8>>> {
        let DkgState::Start(session) = std::mem::replace(&mut self.state, DkgState::Over) else {
            return Err(Error::CeremonyOver);
        };
        let me = self.channel.me;
        let fragments = Zeroizing::new(session.phase1());
        let own_fragment = Zeroizing::new(fragment_for(&fragments, me)?);
        let round1 = self.channel.out(1, &fragment_for(&fragments, me.peer())?)?;
        self.state = DkgState::AwaitRound1 {
            session,
            own_fragment,
        };
        Ok(vec![round1])
    }

    fn handle(&mut self, message: &[u8]) -> Result<Step<KeyShare>> {
        let result = self
            .channel
            .accept(message)
            .and_then(|(round, payload)| self.step(round, &payload));
        if result.is_err() {
            self.state = DkgState::Over;
        }
        self.channel.guard(result)
    }
}

// ---------------------------------------------------------------- signing

enum SignState {
    Start,
    AwaitRound1 {
        unique: Box<UniqueKeep1to2<Secp256k1>>,
        kept: BTreeMap<PartyIndex, KeepPhase1to2<Secp256k1>>,
    },
    AwaitRound2 {
        unique: Box<UniqueKeep2to3<Secp256k1>>,
        kept: BTreeMap<PartyIndex, KeepPhase2to3<Secp256k1>>,
    },
    AwaitRound3 {
        x_coord: String,
        own: Broadcast3to4<Secp256k1>,
        /// The gateway's final message, released only with the verified signature.
        held: Option<Vec<u8>>,
    },
    Over,
}

struct Sign {
    channel: Channel,
    party: Party,
    data: SignData,
    public_key: [u8; 33],
    address: [u8; 20],
    digest: [u8; 32],
    state: SignState,
}

impl Sign {
    fn step(&mut self, round: u8, payload: &[u8]) -> Result<Step<RecoverableSignature>> {
        let me = self.channel.me;
        match (std::mem::replace(&mut self.state, SignState::Over), round) {
            (SignState::AwaitRound1 { unique, kept }, 1) => {
                let peer: TransmitPhase1to2 = decode(payload)?;
                check_parties(&peer.parties, me)?;
                let (unique, kept, transmit) = self
                    .party
                    .sign_phase2(&self.data, *unique, kept, &[peer])
                    .map_err(abort)?;
                let round2 = self.channel.out(2, &only(transmit)?)?;
                self.state = SignState::AwaitRound2 {
                    unique: Box::new(unique),
                    kept,
                };
                Ok(Step::Send(vec![round2]))
            }
            (SignState::AwaitRound2 { unique, kept }, 2) => {
                let peer: TransmitPhase2to3<Secp256k1> = decode(payload)?;
                check_parties(&peer.parties, me)?;
                let (x_coord, own) = self
                    .party
                    .sign_phase3(&self.data, *unique, kept, &[peer])
                    .map_err(abort)?;
                let round3 = self.channel.out(3, &own)?;
                let (send, held) = match me {
                    Role::Device => (vec![round3], None),
                    Role::Gateway => (Vec::new(), Some(round3)),
                };
                self.state = SignState::AwaitRound3 { x_coord, own, held };
                Ok(Step::Send(send))
            }
            (SignState::AwaitRound3 { x_coord, own, held }, 3) => {
                let peer: Broadcast3to4<Secp256k1> = decode(payload)?;
                let (s_hex, recovery_id) = self
                    .party
                    .sign_phase4(&self.data, &x_coord, &[own, peer], true)
                    .map_err(abort)?;
                let mut signature = RecoverableSignature {
                    r: [0; 32],
                    s: [0; 32],
                    recovery_id,
                };
                hex::decode_to_slice(&x_coord, &mut signature.r)
                    .and_then(|()| hex::decode_to_slice(&s_hex, &mut signature.s))
                    .map_err(|_| Error::SignatureInvalid("library returned bad hex"))?;
                verify_signature(&self.public_key, &self.address, &self.digest, &signature)?;
                Ok(Step::Done {
                    send: held.into_iter().collect(),
                    output: signature,
                })
            }
            (SignState::Start, _) => Err(Error::NotStarted),
            _ => Err(Error::CeremonyOver),
        }
    }
}

impl Ceremony for Sign {
    type Output = RecoverableSignature;

    fn start(&mut self) -> Result<Vec<Vec<u8>>> {
        if !matches!(self.state, SignState::Start) {
            return Err(Error::CeremonyOver);
        }
        let (unique, kept, transmit) = self.party.sign_phase1(&self.data).map_err(abort)?;
        let round1 = self.channel.out(1, &only(transmit)?)?;
        self.state = SignState::AwaitRound1 {
            unique: Box::new(unique),
            kept,
        };
        Ok(vec![round1])
    }

    fn handle(&mut self, message: &[u8]) -> Result<Step<RecoverableSignature>> {
        let result = self
            .channel
            .accept(message)
            .and_then(|(round, payload)| self.step(round, &payload));
        if result.is_err() {
            self.state = SignState::Over;
        }
        self.channel.guard(result)
    }
}

// ---------------------------------------------------------------- refresh

#[derive(Serialize, Deserialize)]
struct RefreshRound2 {
    commitment: HashOutput,
    zero: TransmitRefreshPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct RefreshRound3 {
    proof: DLogProof<Secp256k1>,
    zero: TransmitRefreshPhase3to4,
}

enum RefreshState {
    Start,
    AwaitRound1 {
        own_fragment: Zeroizing<Scalar>,
    },
    AwaitRound2 {
        correction: Zeroizing<Scalar>,
        own: Box<ProofCommitment<Secp256k1>>,
        kept: BTreeMap<PartyIndex, KeepRefreshPhase3to4>,
        held_round3: Zeroizing<Vec<u8>>,
    },
    AwaitRound3 {
        correction: Zeroizing<Scalar>,
        own: Box<ProofCommitment<Secp256k1>>,
        kept: BTreeMap<PartyIndex, KeepRefreshPhase3to4>,
        peer_round2: Box<RefreshRound2>,
    },
    Over,
}

struct Refresh {
    channel: Channel,
    party: Party,
    public_key: [u8; 33],
    state: RefreshState,
}

impl Refresh {
    fn step(&mut self, round: u8, payload: &[u8]) -> Result<Step<KeyShare>> {
        let me = self.channel.me;
        let refresh_id = self.channel.session.0;
        match (
            std::mem::replace(&mut self.state, RefreshState::Over),
            round,
        ) {
            (RefreshState::AwaitRound1 { own_fragment }, 1) => {
                let peer_fragment: Zeroizing<Scalar> = Zeroizing::new(decode(payload)?);
                let fragments = Zeroizing::new(vec![*own_fragment, *peer_fragment]);
                let (correction, own, kept2, zero2) =
                    self.party.refresh_phase2(&refresh_id, &fragments);
                let correction = Zeroizing::new(correction);
                let (kept, zero3) = self.party.refresh_phase3(&kept2);
                let round2 = self.channel.out(
                    2,
                    &RefreshRound2 {
                        commitment: own.commitment,
                        zero: only(zero2)?,
                    },
                )?;
                let held_round3 = Zeroizing::new(self.channel.out(
                    3,
                    &RefreshRound3 {
                        proof: own.proof.clone(),
                        zero: only(zero3)?,
                    },
                )?);
                self.state = RefreshState::AwaitRound2 {
                    correction,
                    own: Box::new(own),
                    kept,
                    held_round3,
                };
                Ok(Step::Send(vec![round2]))
            }
            (
                RefreshState::AwaitRound2 {
                    correction,
                    own,
                    kept,
                    held_round3,
                },
                2,
            ) => {
                let peer_round2: RefreshRound2 = decode(payload)?;
                check_parties(&peer_round2.zero.parties, me)?;
                self.state = RefreshState::AwaitRound3 {
                    correction,
                    own,
                    kept,
                    peer_round2: Box::new(peer_round2),
                };
                Ok(Step::Send(vec![held_round3.to_vec()]))
            }
            (
                RefreshState::AwaitRound3 {
                    correction,
                    own,
                    kept,
                    peer_round2,
                },
                3,
            ) => {
                let peer_round3: RefreshRound3 = decode(payload)?;
                check_parties(&peer_round3.zero.parties, me)?;
                let peer = ProofCommitment {
                    index: index(me.peer())?,
                    proof: peer_round3.proof,
                    commitment: peer_round2.commitment,
                };
                let party = self
                    .party
                    .refresh_phase4(
                        &refresh_id,
                        &correction,
                        &[*own, peer],
                        &kept,
                        &[peer_round2.zero],
                        &[peer_round3.zero],
                    )
                    .map_err(abort)?;
                if compressed(&party.pk)? != self.public_key {
                    return Err(protocol("refresh changed the public key".to_owned()));
                }
                Ok(Step::Done {
                    send: Vec::new(),
                    output: share_from_party(&party, me)?,
                })
            }
            (RefreshState::Start, _) => Err(Error::NotStarted),
            _ => Err(Error::CeremonyOver),
        }
    }
}

impl Ceremony for Refresh {
    type Output = KeyShare;

    fn start(&mut self) -> Result<Vec<Vec<u8>>> {
        if !matches!(self.state, RefreshState::Start) {
            return Err(Error::CeremonyOver);
        }
        let me = self.channel.me;
        let fragments = Zeroizing::new(self.party.refresh_phase1());
        let own_fragment = Zeroizing::new(fragment_for(&fragments, me)?);
        let round1 = self.channel.out(1, &fragment_for(&fragments, me.peer())?)?;
        self.state = RefreshState::AwaitRound1 { own_fragment };
        Ok(vec![round1])
    }

    fn handle(&mut self, message: &[u8]) -> Result<Step<KeyShare>> {
        let result = self
            .channel
            .accept(message)
            .and_then(|(round, payload)| self.step(round, &payload));
        if result.is_err() {
            self.state = RefreshState::Over;
        }
        self.channel.guard(result)
    }
}
