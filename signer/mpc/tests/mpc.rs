//! The 2-of-2 ceremonies in process, both parties driven over in-memory queues the way a
//! transport would: keygen, signing, refresh, and hostile messages.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions"
)]

use std::collections::VecDeque;
use std::sync::OnceLock;

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use parapet_mpc::Error;
use parapet_mpc::{
    Ceremony, Dkls23, KeyShare, Message, RecoverableSignature, Role, SessionId, Step,
    ThresholdEcdsa, eth_address, verify_signature,
};
use sha3::{Digest, Keccak256};

type Boxed<T> = Box<dyn Ceremony<Output = T>>;

/// Runs both parties to completion, delivering every message in order. Returns each party's
/// result (an error ends that party; the other may then wait forever, so the driver stops).
fn run<T>(
    device: &mut Boxed<T>,
    gateway: &mut Boxed<T>,
    mut tamper: impl FnMut(Role, Vec<u8>) -> Vec<u8>,
) -> (Result<T, Error>, Result<T, Error>) {
    let mut to_gateway: VecDeque<Vec<u8>> = device.start().unwrap().into();
    let mut to_device: VecDeque<Vec<u8>> = gateway.start().unwrap().into();
    let mut device_result = None;
    let mut gateway_result = None;
    loop {
        let mut progressed = false;
        if gateway_result.is_none()
            && let Some(m) = to_gateway.pop_front()
        {
            progressed = true;
            match gateway.handle(&tamper(Role::Device, m)) {
                Ok(Step::Send(out)) => to_device.extend(out),
                Ok(Step::Done { send, output }) => {
                    to_device.extend(send);
                    gateway_result = Some(Ok(output));
                }
                Err(e) => gateway_result = Some(Err(e)),
            }
        }
        if device_result.is_none()
            && let Some(m) = to_device.pop_front()
        {
            progressed = true;
            match device.handle(&tamper(Role::Gateway, m)) {
                Ok(Step::Send(out)) => to_gateway.extend(out),
                Ok(Step::Done { send, output }) => {
                    to_gateway.extend(send);
                    device_result = Some(Ok(output));
                }
                Err(e) => device_result = Some(Err(e)),
            }
        }
        if !progressed {
            break;
        }
    }
    let stalled = || Err(Error::CeremonyOver);
    (
        device_result.unwrap_or_else(stalled),
        gateway_result.unwrap_or_else(stalled),
    )
}

fn keygen() -> (KeyShare, KeyShare) {
    let session = SessionId::random();
    let mut device = Dkls23.keygen(Role::Device, session).unwrap();
    let mut gateway = Dkls23.keygen(Role::Gateway, session).unwrap();
    let (d, g) = run(&mut device, &mut gateway, |_, m| m);
    (d.unwrap(), g.unwrap())
}

/// One wallet shared by the tests that only sign (key generation takes about a second).
fn wallet() -> (KeyShare, KeyShare) {
    static WALLET: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (d, g) = WALLET.get_or_init(|| {
        let (d, g) = keygen();
        (d.to_bytes().to_vec(), g.to_bytes().to_vec())
    });
    (
        KeyShare::from_bytes(d).unwrap(),
        KeyShare::from_bytes(g).unwrap(),
    )
}

fn sign(
    device: &KeyShare,
    gateway: &KeyShare,
    digest: [u8; 32],
) -> (
    Result<RecoverableSignature, Error>,
    Result<RecoverableSignature, Error>,
) {
    let session = SessionId::random();
    let mut d = Dkls23.sign(Role::Device, session, device, digest).unwrap();
    let mut g = Dkls23
        .sign(Role::Gateway, session, gateway, digest)
        .unwrap();
    run(&mut d, &mut g, |_, m| m)
}

fn digest(text: &str) -> [u8; 32] {
    Keccak256::digest(text.as_bytes()).into()
}

/// Re-encodes a message after `edit`.
fn edit(bytes: &[u8], edit: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::from_bytes(bytes).unwrap();
    edit(&mut m);
    m.to_bytes().unwrap()
}

#[test]
fn keygen_then_sign_verifies_and_recovers_to_the_address() {
    let (device, gateway) = keygen();
    assert_eq!(device.role(), Role::Device);
    assert_eq!(gateway.role(), Role::Gateway);
    assert_eq!(device.address(), gateway.address());
    assert_eq!(device.public_key(), gateway.public_key());
    let key = VerifyingKey::from_sec1_bytes(device.public_key()).unwrap();
    // The address, computed independently of the crate.
    let uncompressed = key.to_encoded_point(false);
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    assert_eq!(&hash[12..], device.address());
    assert_eq!(eth_address(&key), *device.address());

    // Shares survive their byte form.
    let device = KeyShare::from_bytes(&device.to_bytes()).unwrap();
    let gateway = KeyShare::from_bytes(&gateway.to_bytes()).unwrap();

    for i in 0..4 {
        let digest = digest(&format!("message {i}"));
        let (d, g) = sign(&device, &gateway, digest);
        let (d, g) = (d.unwrap(), g.unwrap());
        assert_eq!(d, g, "both parties end with the same signature");
        verify_signature(device.public_key(), device.address(), &digest, &g).unwrap();
        // And once more with k256 directly: low s, verifies, recovers to the address.
        let sig = Signature::from_slice(&[g.r, g.s].concat()).unwrap();
        assert!(sig.normalize_s().is_none());
        let recovered = VerifyingKey::recover_from_prehash(
            &digest,
            &sig,
            RecoveryId::from_byte(g.recovery_id).unwrap(),
        )
        .unwrap();
        assert_eq!(eth_address(&recovered), *device.address());
        assert_eq!(g.to_rsv()[64], 27 + u8::from(g.y_parity()));
    }
}

#[test]
fn refresh_keeps_the_address_and_old_and_new_shares_do_not_mix() {
    let (old_device, old_gateway) = keygen();
    let session = SessionId::random();
    let mut d = Dkls23.refresh(Role::Device, session, &old_device).unwrap();
    let mut g = Dkls23
        .refresh(Role::Gateway, session, &old_gateway)
        .unwrap();
    let (new_device, new_gateway) = run(&mut d, &mut g, |_, m| m);
    let (new_device, new_gateway) = (new_device.unwrap(), new_gateway.unwrap());
    assert_eq!(new_device.address(), old_device.address());
    assert_eq!(new_gateway.public_key(), old_gateway.public_key());
    assert_ne!(*new_device.to_bytes(), *old_device.to_bytes());
    assert_ne!(*new_gateway.to_bytes(), *old_gateway.to_bytes());

    let digest = digest("after refresh");
    let (_, g) = sign(&new_device, &new_gateway, digest);
    verify_signature(
        new_device.public_key(),
        new_device.address(),
        &digest,
        &g.unwrap(),
    )
    .unwrap();
    // Until the refresh is committed the old epoch must keep working (two-phase refresh).
    let (_, g) = sign(&old_device, &old_gateway, digest);
    assert!(g.is_ok());
    // Mixtures fail, without a signature for either party.
    for (device, gateway) in [(&old_device, &new_gateway), (&new_device, &old_gateway)] {
        let (d, g) = sign(device, gateway, digest);
        assert!(d.is_err() && g.is_err(), "{d:?} {g:?}");
    }
}

#[test]
fn messages_from_another_session_kind_round_or_party_are_refused() {
    let (device, gateway) = wallet();
    let digest = digest("routing");
    let session = SessionId::random();
    let new_pair = || {
        (
            Dkls23.sign(Role::Device, session, &device, digest).unwrap(),
            Dkls23
                .sign(Role::Gateway, session, &gateway, digest)
                .unwrap(),
        )
    };

    // Another session id.
    let (mut d, mut g) = new_pair();
    let m = d.start().unwrap().remove(0);
    g.start().unwrap();
    let other = edit(&m, |m| m.session = SessionId::random());
    assert!(matches!(g.handle(&other), Err(Error::WrongSession)));
    // The ceremony is dead after a refusal, even for the genuine message.
    assert!(matches!(g.handle(&m), Err(Error::CeremonyOver)));

    // Another kind of ceremony.
    let (mut d, mut g) = new_pair();
    let m = d.start().unwrap().remove(0);
    g.start().unwrap();
    let other = edit(&m, |m| m.kind = parapet_mpc::CeremonyKind::Refresh);
    assert!(matches!(g.handle(&other), Err(Error::WrongCeremony)));

    // The wrong party: the gateway's own message reflected back, and a forged sender.
    let (mut d, mut g) = new_pair();
    d.start().unwrap();
    let own = g.start().unwrap().remove(0);
    assert!(matches!(g.handle(&own), Err(Error::WrongParty)));
    let (mut d, mut g) = new_pair();
    let m = d.start().unwrap().remove(0);
    g.start().unwrap();
    let forged = edit(&m, |m| m.receiver = Role::Device);
    assert!(matches!(g.handle(&forged), Err(Error::WrongParty)));

    // Replayed and reordered rounds.
    let (mut d, mut g) = new_pair();
    let d1 = d.start().unwrap().remove(0);
    let g1 = g.start().unwrap().remove(0);
    let Step::Send(g2) = g.handle(&d1).unwrap() else {
        panic!()
    };
    assert!(matches!(
        g.handle(&d1),
        Err(Error::UnexpectedRound {
            expected: 2,
            got: 1
        })
    ));
    let (mut d, mut g) = new_pair();
    d.start().unwrap();
    g.start().unwrap();
    let skipped = edit(&g2[0], |m| m.round = 3);
    assert!(matches!(
        d.handle(&skipped),
        Err(Error::UnexpectedRound { expected: 1, .. })
    ));
    drop(g1);

    // Before start.
    let (mut d, mut g) = new_pair();
    let m = d.start().unwrap().remove(0);
    assert!(matches!(g.handle(&m), Err(Error::NotStarted)));

    // Garbage.
    let (_, mut g) = new_pair();
    g.start().unwrap();
    assert!(matches!(
        g.handle(b"not a message"),
        Err(Error::MessageMalformed)
    ));
}

#[test]
fn tampered_messages_abort_without_a_signature() {
    let (device, gateway) = wallet();
    let digest = digest("tamper");
    for round in 1..=3u8 {
        for position in [0usize, 7, 33, 100, 1000, 5000] {
            let session = SessionId::random();
            let mut d = Dkls23.sign(Role::Device, session, &device, digest).unwrap();
            let mut g = Dkls23
                .sign(Role::Gateway, session, &gateway, digest)
                .unwrap();
            let mut touched = false;
            let (_, g_result) = run(&mut d, &mut g, |from, bytes| {
                if from != Role::Device {
                    return bytes;
                }
                let m = Message::from_bytes(&bytes).unwrap();
                if m.round != round {
                    return bytes;
                }
                edit(&bytes, |m| {
                    let at = position % m.payload.len();
                    m.payload[at] ^= 0x5a;
                    touched = true;
                })
            });
            assert!(touched);
            assert!(
                g_result.is_err(),
                "round {round}, byte {position}: the gateway signed a tampered ceremony"
            );
        }
    }
}

#[test]
fn the_gateway_signs_only_its_digest() {
    let (device, gateway) = wallet();
    let session = SessionId::random();
    let mut d = Dkls23
        .sign(
            Role::Device,
            session,
            &device,
            digest("what the device wants"),
        )
        .unwrap();
    let mut g = Dkls23
        .sign(
            Role::Gateway,
            session,
            &gateway,
            digest("what policy allowed"),
        )
        .unwrap();
    let (d, g) = run(&mut d, &mut g, |_, m| m);
    assert!(d.is_err() && g.is_err(), "{d:?} {g:?}");
}

#[test]
fn the_gateway_releases_its_final_message_only_with_the_signature() {
    let (device, gateway) = wallet();
    let digest = digest("final message");
    let session = SessionId::random();
    let mut d = Dkls23.sign(Role::Device, session, &device, digest).unwrap();
    let mut g = Dkls23
        .sign(Role::Gateway, session, &gateway, digest)
        .unwrap();
    let d1 = d.start().unwrap();
    let g1 = g.start().unwrap();
    let Step::Send(g2) = g.handle(&d1[0]).unwrap() else {
        panic!()
    };
    let Step::Send(d2) = d.handle(&g1[0]).unwrap() else {
        panic!()
    };
    let Step::Send(g3) = g.handle(&d2[0]).unwrap() else {
        panic!()
    };
    assert!(g3.is_empty(), "the gateway holds its round 3");
    let Step::Send(d3) = d.handle(&g2[0]).unwrap() else {
        panic!()
    };
    assert_eq!(d3.len(), 1);
    let Step::Done { send, output } = g.handle(&d3[0]).unwrap() else {
        panic!()
    };
    assert_eq!(send.len(), 1);
    let Step::Done {
        output: device_output,
        ..
    } = d.handle(&send[0]).unwrap()
    else {
        panic!()
    };
    assert_eq!(output, device_output);
    // Nothing more is accepted once done.
    assert!(matches!(g.handle(&d3[0]), Err(Error::CeremonyOver)));
}

#[test]
fn shares_are_checked_before_use() {
    let (device, gateway) = wallet();
    // A share used for the other role.
    assert!(matches!(
        Dkls23.sign(Role::Gateway, SessionId::random(), &device, [1; 32]),
        Err(Error::ShareMalformed)
    ));
    assert!(matches!(
        Dkls23.refresh(Role::Device, SessionId::random(), &gateway),
        Err(Error::ShareMalformed)
    ));
    let bytes = gateway.to_bytes();
    assert!(matches!(
        KeyShare::from_bytes(&bytes[..40]),
        Err(Error::ShareMalformed)
    ));
    let mut wrong_address = bytes.to_vec();
    wrong_address[40] ^= 1;
    assert!(matches!(
        KeyShare::from_bytes(&wrong_address),
        Err(Error::ShareMalformed)
    ));
    let mut corrupt_state = bytes.to_vec();
    corrupt_state.truncate(bytes.len() - 10);
    let corrupt = KeyShare::from_bytes(&corrupt_state).unwrap();
    assert!(matches!(
        Dkls23.sign(Role::Gateway, SessionId::random(), &corrupt, [1; 32]),
        Err(Error::ShareMalformed)
    ));
    // Debug output never shows the secret.
    assert!(!format!("{gateway:?}").contains("secret"));
}

#[test]
fn tampered_keygen_and_refresh_messages_abort() {
    for round in [2u8, 3] {
        for position in [7usize, 40, 2000] {
            let session = SessionId::random();
            let mut d = Dkls23.keygen(Role::Device, session).unwrap();
            let mut g = Dkls23.keygen(Role::Gateway, session).unwrap();
            let (_, g_result) = run(&mut d, &mut g, |from, bytes| {
                let m = Message::from_bytes(&bytes).unwrap();
                if from != Role::Device || m.round != round {
                    return bytes;
                }
                edit(&bytes, |m| {
                    let at = position % m.payload.len();
                    m.payload[at] ^= 0x5a;
                })
            });
            assert!(g_result.is_err(), "keygen round {round}, byte {position}");
        }
    }
    let (device, gateway) = wallet();
    for round in [2u8, 3] {
        let session = SessionId::random();
        let mut d = Dkls23.refresh(Role::Device, session, &device).unwrap();
        let mut g = Dkls23.refresh(Role::Gateway, session, &gateway).unwrap();
        let (_, g_result) = run(&mut d, &mut g, |from, bytes| {
            let m = Message::from_bytes(&bytes).unwrap();
            if from != Role::Device || m.round != round {
                return bytes;
            }
            edit(&bytes, |m| {
                let at = 40 % m.payload.len();
                m.payload[at] ^= 0x5a;
            })
        });
        assert!(g_result.is_err(), "refresh round {round}");
    }
}

#[test]
fn refresh_and_keygen_messages_are_bound_to_their_session() {
    let (device, gateway) = wallet();
    let mut d = Dkls23
        .refresh(Role::Device, SessionId::random(), &device)
        .unwrap();
    let mut g = Dkls23
        .refresh(Role::Gateway, SessionId::random(), &gateway)
        .unwrap();
    let m = d.start().unwrap().remove(0);
    g.start().unwrap();
    assert!(matches!(g.handle(&m), Err(Error::WrongSession)));

    // A signing message fed to a key generation with the same session id.
    let session = SessionId::random();
    let mut s = Dkls23
        .sign(Role::Device, session, &device, [3; 32])
        .unwrap();
    let mut k = Dkls23.keygen(Role::Gateway, session).unwrap();
    k.start().unwrap();
    assert!(matches!(
        k.handle(&s.start().unwrap()[0]),
        Err(Error::WrongCeremony)
    ));
}
