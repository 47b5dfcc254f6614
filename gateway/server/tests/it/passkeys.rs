//! Passkeys against software authenticators (`webauthn-authenticator-rs`): the happy paths, and
//! every way a ceremony must fail — replay, expiry, wrong origin, wrong RP id, no user
//! verification, counter regression, revoked credentials, another user's ceremony, a ceremony
//! of the other kind — on SQLite, and on PostgreSQL when `PARAPET_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::support;
use std::time::Duration;

use parapet_gateway::Error;
use parapet_gateway::accounts::passkeys::PasskeyConfig;
use support::{TestDb, databases};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;
use webauthn_authenticator_rs::AuthenticatorBackend;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse, Url,
    WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;

const ORIGIN: &str = "http://localhost:8080";

fn t0() -> OffsetDateTime {
    datetime!(2026-11-25 12:00 UTC)
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// A software passkey that claims user verification (the library's soft authenticators refuse
/// UV-required ceremonies otherwise).
fn authenticator() -> SoftPasskey {
    SoftPasskey::new(true)
}

type Rig = support::PasskeyRig;

async fn rig(db: &TestDb) -> Rig {
    support::passkey_rig(db, t0()).await
}

impl Rig {
    /// Registers a passkey for `user`; a further one as the page does after a step-up.
    async fn register(&self, auth: &mut impl AuthenticatorBackend, user: Uuid) -> String {
        let further = parapet_gateway::accounts::passkeys::has_live_passkey(&self.store, user)
            .await
            .unwrap();
        let (id, ccr) = self
            .pk
            .start_registration(user, "alice", "Alice", further, t0())
            .await
            .unwrap();
        let reg = auth.do_registration(origin(), ccr).unwrap();
        self.pk
            .finish_registration(&id, user, &reg, t0())
            .await
            .unwrap()
            .credential_id
    }

    async fn start_login(&self, user: Uuid) -> (String, RequestChallengeResponse) {
        self.pk.start_login(user, t0()).await.unwrap()
    }

    async fn login(
        &self,
        auth: &mut impl AuthenticatorBackend,
        user: Uuid,
    ) -> Result<parapet_gateway::accounts::passkeys::LoginOutcome, Error> {
        let (id, rcr) = self.start_login(user).await;
        let resp = auth.do_authentication(origin(), rcr).unwrap();
        self.pk.finish_login(&id, &resp, t0()).await
    }

    /// Every committed event's canonical text, after flushing the flood aggregates.
    async fn events(&self) -> Vec<String> {
        self.log
            .flush_flood(t0() + Duration::from_secs(3600), true)
            .await;
        self.store
            .range(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.canonical)
            .collect()
    }
}

/// Edits a challenge as a hostile client would, through its JSON form.
fn edit<T: serde::Serialize + serde::de::DeserializeOwned>(
    v: T,
    f: impl FnOnce(&mut serde_json::Value),
) -> T {
    let mut j = serde_json::to_value(v).unwrap();
    f(&mut j);
    serde_json::from_value(j).unwrap()
}

fn assert_code(r: Result<impl std::fmt::Debug, Error>, code: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.status().is_client_error(), "{code} must be a 4xx");
}

/// Runs one scenario on every configured database.
macro_rules! on_every_db {
    ($name:ident, |$r:ident| $body:block) => {
        #[tokio::test]
        async fn $name() {
            for db in databases(concat!(stringify!($name), ".db")).await {
                let $r = rig(&db).await;
                $body
                $r.log.shutdown().await;
                db.drop_pg().await;
            }
        }
    };
}

on_every_db!(register_login_several_list_revoke, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    let mut b = authenticator();
    let id_a = r.register(&mut a, user).await;
    let id_b = r.register(&mut b, user).await;
    assert_ne!(id_a, id_b);

    let out = r.login(&mut a, user).await.unwrap();
    assert_eq!(out.user, user);
    assert_eq!(out.credential_id, id_a);
    assert!(out.user_verified);
    assert!(out.counter > 0);
    r.login(&mut b, user).await.unwrap();

    let list = r.pk.list(user).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|p| !p.revoked() && p.last_used_at.is_some())
    );
    assert!(r.pk.list(Uuid::new_v4()).await.unwrap().is_empty());

    // A login started while A was live, answered by A after A is revoked.
    let (pending, rcr) = r.start_login(user).await;
    let late = a.do_authentication(origin(), rcr).unwrap();
    // Only the owner can revoke.
    assert_code(r.pk.revoke(Uuid::new_v4(), &id_a, t0()).await, "not_found");
    let info = r.pk.revoke(user, &id_a, t0()).await.unwrap();
    assert!(info.revoked());
    assert_code(r.pk.revoke(user, &id_a, t0()).await, "not_found");
    assert_code(
        r.pk.finish_login(&pending, &late, t0()).await,
        "passkey_revoked",
    );

    // A new login no longer offers A, and A forced into it by the client is refused.
    let (id, rcr) = r.start_login(user).await;
    let offered: Vec<String> = serde_json::to_value(&rcr).unwrap()["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offered, vec![id_b.clone()]);
    let forced = edit(rcr, |j| {
        j["publicKey"]["allowCredentials"] =
            serde_json::json!([{ "type": "public-key", "id": id_a }]);
    });
    let resp = a.do_authentication(origin(), forced).unwrap();
    assert_code(r.pk.finish_login(&id, &resp, t0()).await, "passkey_revoked");
    // B still works.
    r.login(&mut b, user).await.unwrap();

    let list = r.pk.list(user).await.unwrap();
    assert_eq!(list.iter().filter(|p| p.revoked()).count(), 1);

    // The audit log has the events, by id only, and no ceremony or assertion material.
    let events = r.events().await;
    let count = |action: &str| {
        events
            .iter()
            .filter(|e| e.contains(&format!("\"action\":\"{action}\"")))
            .count()
    };
    assert_eq!(count("passkey.register"), 2);
    assert_eq!(count("passkey.revoke"), 1);
    assert_eq!(count("passkey.login"), 3);
    let all = events.join("\n");
    assert!(all.contains(&id_a) && all.contains(&user.to_string()));
    let sig = serde_json::to_value(&resp).unwrap()["response"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let client_data = serde_json::to_value(&resp).unwrap()["response"]["clientDataJSON"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!all.contains(&sig) && !all.contains(&client_data) && !all.contains(&id));
    assert!(all.contains("passkey_revoked"), "refusals are aggregated");
});

on_every_db!(a_login_answer_cannot_be_replayed, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    r.register(&mut a, user).await;
    let (id, rcr) = r.start_login(user).await;
    let resp = a.do_authentication(origin(), rcr).unwrap();
    r.pk.finish_login(&id, &resp, t0()).await.unwrap();
    // The same ceremony again: gone.
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_ceremony_unknown",
    );
    // The old answer in a fresh ceremony: wrong challenge.
    let (fresh, _) = r.start_login(user).await;
    assert_code(
        r.pk.finish_login(&fresh, &resp, t0()).await,
        "passkey_rejected",
    );
    // A ceremony id never issued.
    assert_code(
        r.pk.finish_login("never-issued", &resp, t0()).await,
        "passkey_ceremony_unknown",
    );
});

on_every_db!(
    a_further_passkey_needs_a_registration_approved_by_a_step_up,
    |r| {
        let user = Uuid::new_v4();
        let mut a = authenticator();
        // Started while the person had none, finished after their first: refused.
        let (early, early_ccr) =
            r.pk.start_registration(user, "a", "A", false, t0())
                .await
                .unwrap();
        r.register(&mut a, user).await;
        let reg = authenticator()
            .do_registration(origin(), early_ccr)
            .unwrap();
        assert_code(
            r.pk.finish_registration(&early, user, &reg, t0()).await,
            "passkey_ceremony_unknown",
        );
        // Started without the step-up once they have one: refused too.
        let (plain, ccr) =
            r.pk.start_registration(user, "a", "A", false, t0())
                .await
                .unwrap();
        let reg = authenticator().do_registration(origin(), ccr).unwrap();
        assert_code(
            r.pk.finish_registration(&plain, user, &reg, t0()).await,
            "passkey_ceremony_unknown",
        );
        // Approved: added.
        let (approved, ccr) =
            r.pk.start_registration(user, "a", "A", true, t0())
                .await
                .unwrap();
        let reg = authenticator().do_registration(origin(), ccr).unwrap();
        r.pk.finish_registration(&approved, user, &reg, t0())
            .await
            .unwrap();
        assert_eq!(r.pk.list(user).await.unwrap().len(), 2);
    }
);

on_every_db!(ceremonies_expire_after_the_ttl, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    r.register(&mut a, user).await;
    let ttl = PasskeyConfig::default().ceremony_ttl;

    let (id, rcr) = r.start_login(user).await;
    let resp = a.do_authentication(origin(), rcr).unwrap();
    assert_code(
        r.pk.finish_login(&id, &resp, t0() + ttl).await,
        "passkey_ceremony_expired",
    );
    // …and the expired attempt consumed it.
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_ceremony_unknown",
    );

    let (id, rcr) = r.start_login(user).await;
    let resp = a.do_authentication(origin(), rcr).unwrap();
    r.pk.finish_login(&id, &resp, t0() + ttl - Duration::from_secs(1))
        .await
        .unwrap();

    // Registration too (a further passkey, as after a step-up).
    let (id, ccr) =
        r.pk.start_registration(user, "a", "A", true, t0())
            .await
            .unwrap();
    let reg = authenticator().do_registration(origin(), ccr).unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &reg, t0() + ttl).await,
        "passkey_ceremony_expired",
    );
});

on_every_db!(wrong_origin_is_refused, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    let evil = Url::parse("http://localhost:9999").unwrap();

    let (id, ccr) =
        r.pk.start_registration(user, "a", "A", false, t0())
            .await
            .unwrap();
    let reg = a
        .perform_register(evil.clone(), ccr.public_key, 60_000)
        .unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &reg, t0()).await,
        "passkey_rejected",
    );

    r.register(&mut a, user).await;
    let (id, rcr) = r.start_login(user).await;
    let resp = a.perform_auth(evil, rcr.public_key, 60_000).unwrap();
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_rejected",
    );
});

on_every_db!(wrong_rp_id_is_refused, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();

    // The authenticator signs for another RP id while the client data names our origin.
    let (id, ccr) =
        r.pk.start_registration(user, "a", "A", false, t0())
            .await
            .unwrap();
    let ccr: CreationChallengeResponse =
        edit(ccr, |j| j["publicKey"]["rp"]["id"] = "example.com".into());
    let reg = a
        .perform_register(origin(), ccr.public_key, 60_000)
        .unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &reg, t0()).await,
        "passkey_rejected",
    );

    r.register(&mut a, user).await;
    let (id, rcr) = r.start_login(user).await;
    let rcr: RequestChallengeResponse =
        edit(rcr, |j| j["publicKey"]["rpId"] = "example.com".into());
    let resp = a.perform_auth(origin(), rcr.public_key, 60_000).unwrap();
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_rejected",
    );
});

on_every_db!(user_verification_is_required, |r| {
    // The client downgrades the request to "discouraged", so the soft authenticator answers
    // with the UV flag clear (user present only), as an authenticator without UV would.
    let user = Uuid::new_v4();
    let mut a = authenticator();
    let (id, ccr) =
        r.pk.start_registration(user, "a", "A", false, t0())
            .await
            .unwrap();
    let ccr: CreationChallengeResponse = edit(ccr, |j| {
        j["publicKey"]["authenticatorSelection"]["userVerification"] = "discouraged".into();
    });
    let reg = a.do_registration(origin(), ccr).unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &reg, t0()).await,
        "passkey_rejected",
    );
    assert!(r.pk.list(user).await.unwrap().is_empty());

    r.register(&mut a, user).await;
    let (id, rcr) = r.start_login(user).await;
    let rcr: RequestChallengeResponse = edit(rcr, |j| {
        j["publicKey"]["userVerification"] = "discouraged".into();
    });
    let resp = a.do_authentication(origin(), rcr).unwrap();
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_rejected",
    );
});

on_every_db!(counter_regression_is_a_suspected_clone, |r| {
    let user = Uuid::new_v4();
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    let cred = r.register(&mut token, user).await;
    r.login(&mut token, user).await.unwrap();
    r.login(&mut token, user).await.unwrap();
    // A copy of the authenticator as it is now (counter 2)…
    let mut copy = SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap();
    assert_eq!(r.login(&mut token, user).await.unwrap().counter, 3);
    // …signs with counter 3, which is not above the stored 3.
    assert_code(r.login(&mut copy, user).await, "passkey_clone_suspected");

    // Racing ceremonies: both start while the stored counter is 3; the original finishes first
    // with 4, then the copy (made at 3) answers with 4 — above the counter webauthn-rs saw at the
    // start, but not above the one saved since.
    let mut copy = SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap();
    let (slow, slow_rcr) = r.start_login(user).await;
    assert_eq!(r.login(&mut token, user).await.unwrap().counter, 4);
    let resp = copy.do_authentication(origin(), slow_rcr).unwrap();
    assert_code(
        r.pk.finish_login(&slow, &resp, t0()).await,
        "passkey_clone_suspected",
    );
    // The original keeps working; the stored counter moved with every login.
    assert_eq!(r.login(&mut token, user).await.unwrap().counter, 5);
    let info = r.pk.list(user).await.unwrap();
    assert_eq!(info.first().unwrap().sign_count, 5);

    let events = r.events().await;
    let clones = events
        .iter()
        .filter(|e| e.contains("\"action\":\"passkey.clone_suspected\"") && e.contains(&cred))
        .count();
    assert_eq!(clones, 2);
});

on_every_db!(another_users_ceremony_is_refused, |r| {
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let mut a = authenticator();
    let mut b = authenticator();

    // Bob finishes a registration Alice started: refused, and Alice's ceremony is spent.
    let (id, ccr) =
        r.pk.start_registration(alice, "alice", "Alice", false, t0())
            .await
            .unwrap();
    let reg = b.do_registration(origin(), ccr).unwrap();
    assert_code(
        r.pk.finish_registration(&id, bob, &reg, t0()).await,
        "passkey_ceremony_unknown",
    );
    assert_code(
        r.pk.finish_registration(&id, alice, &reg, t0()).await,
        "passkey_ceremony_unknown",
    );
    assert!(r.pk.list(bob).await.unwrap().is_empty());
    assert!(r.pk.list(alice).await.unwrap().is_empty());

    // Bob answers a login started for Alice with his own credential: the user comes from the
    // ceremony, and Bob's credential is not Alice's.
    r.register(&mut a, alice).await;
    r.register(&mut b, bob).await;
    let (id, rcr) = r.start_login(alice).await;
    let bob_cred = r.pk.list(bob).await.unwrap().remove(0).credential_id;
    let rcr: RequestChallengeResponse = edit(rcr, |j| {
        j["publicKey"]["allowCredentials"] =
            serde_json::json!([{ "type": "public-key", "id": bob_cred }]);
    });
    let resp = b.do_authentication(origin(), rcr).unwrap();
    assert_code(
        r.pk.finish_login(&id, &resp, t0()).await,
        "passkey_rejected",
    );

    // A user with no passkeys cannot start a login (same error as a wrong credential).
    assert_code(
        r.pk.start_login(Uuid::new_v4(), t0()).await,
        "passkey_rejected",
    );
});

on_every_db!(a_ceremony_of_the_other_kind_is_refused, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    r.register(&mut a, user).await;

    // A registration ceremony used to finish a login.
    let (reg_id, _ccr) =
        r.pk.start_registration(user, "a", "A", false, t0())
            .await
            .unwrap();
    let (_, rcr) = r.start_login(user).await;
    let resp: PublicKeyCredential = a.do_authentication(origin(), rcr).unwrap();
    assert_code(
        r.pk.finish_login(&reg_id, &resp, t0()).await,
        "passkey_ceremony_unknown",
    );

    // A login ceremony used to finish a registration.
    let (login_id, _) = r.start_login(user).await;
    let (_, ccr) =
        r.pk.start_registration(user, "a", "A", false, t0())
            .await
            .unwrap();
    let reg = authenticator().do_registration(origin(), ccr).unwrap();
    assert_code(
        r.pk.finish_registration(&login_id, user, &reg, t0()).await,
        "passkey_ceremony_unknown",
    );
    assert_code(
        r.pk.finish_registration(&login_id, user, &reg, t0()).await,
        "passkey_ceremony_unknown",
    );
});

on_every_db!(a_failed_finish_consumes_the_ceremony, |r| {
    let user = Uuid::new_v4();
    let mut a = authenticator();
    r.register(&mut a, user).await;
    let (id, rcr) = r.start_login(user).await;
    let bad = a
        .perform_auth(
            Url::parse("http://localhost:9999").unwrap(),
            rcr.public_key.clone(),
            60_000,
        )
        .unwrap();
    assert_code(r.pk.finish_login(&id, &bad, t0()).await, "passkey_rejected");
    let good = a.do_authentication(origin(), rcr).unwrap();
    assert_code(
        r.pk.finish_login(&id, &good, t0()).await,
        "passkey_ceremony_unknown",
    );

    // Registration (a further passkey, as after a step-up): a failed attempt spends it too.
    let (id, ccr) =
        r.pk.start_registration(user, "a", "A", true, t0())
            .await
            .unwrap();
    let mut fresh = authenticator();
    let bad = fresh
        .perform_register(
            Url::parse("http://localhost:9999").unwrap(),
            ccr.public_key.clone(),
            60_000,
        )
        .unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &bad, t0()).await,
        "passkey_rejected",
    );
    let good = fresh.do_registration(origin(), ccr).unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &good, t0()).await,
        "passkey_ceremony_unknown",
    );
    // A registration answer replayed into a fresh ceremony: wrong challenge.
    let (id, _) =
        r.pk.start_registration(user, "a", "A", true, t0())
            .await
            .unwrap();
    assert_code(
        r.pk.finish_registration(&id, user, &good, t0()).await,
        "passkey_rejected",
    );
});

#[test]
fn config_refuses_ip_origins_and_foreign_rp_ids() {
    let ok = PasskeyConfig::default();
    assert!(ok.validate().is_ok());
    let ip = PasskeyConfig {
        origins: vec!["http://127.0.0.1:8080".to_owned()],
        ..PasskeyConfig::default()
    };
    assert!(ip.validate().is_err());
    let foreign = PasskeyConfig {
        rp_id: "example.com".to_owned(),
        ..PasskeyConfig::default()
    };
    assert!(foreign.validate().is_err());
    let second_foreign = PasskeyConfig {
        origins: vec![ORIGIN.to_owned(), "https://example.com".to_owned()],
        ..PasskeyConfig::default()
    };
    assert!(second_foreign.validate().is_err());
    let none = PasskeyConfig {
        origins: vec![],
        ..PasskeyConfig::default()
    };
    assert!(none.validate().is_err());
}
