//! One gateway in this process for the signing benchmarks: SQLite in a scratch directory, the
//! development keystore, the shipped policies, rate limits and key generation quotas lifted; an app allowed to sign, a user
//! with a passkey, an app session, a paired device and an enrolled recovery key, and the real
//! service listening on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "benchmark setup"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parapet_device::client;
use parapet_gateway::accounts::apps::{self, Actor, Auditor, NewApp};
use parapet_gateway::accounts::users::sessions::Method;
use parapet_gateway::config::Config;
use parapet_gateway::http::{AppState, app};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// What a benchmark needs to call the gateway as the app, the user and the device.
pub struct Setup {
    pub base: String,
    pub api_key: String,
    pub session: String,
    pub device_token: String,
    pub user: String,
    pub recovery: parapet_mpc::recovery::RecoveryKeys,
    _data: tempfile::TempDir,
}

impl Setup {
    pub fn target(&self) -> client::RecoveryTarget<'_> {
        client::RecoveryTarget {
            user: &self.user,
            public_key: self.recovery.public_key(),
        }
    }
}

pub async fn setup() -> (Setup, Arc<AppState>) {
    let data = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fast = "1000000/s burst 1000000";
    let env: HashMap<String, String> = [
        ("PARAPET_DATA_DIR", data.path().display().to_string()),
        (
            "PARAPET_POLICIES_DIR",
            root.join("policies").display().to_string(),
        ),
        (
            "PARAPET_SCHEMAS_DIR",
            root.join("schemas").display().to_string(),
        ),
        ("PARAPET_STATIC_TOKEN", "false".to_owned()),
        ("PARAPET_USER_RATE", fast.to_owned()),
        ("PARAPET_WALLET_RATE", fast.to_owned()),
        ("PARAPET_APP_RATE", fast.to_owned()),
        ("PARAPET_IP_RATE", fast.to_owned()),
        // The benchmarks generate hundreds of wallets for one device and person.
        ("PARAPET_KEYGENS_PER_DEVICE_PER_HOUR", "1000000".to_owned()),
        ("PARAPET_KEYGENS_PER_PERSON_PER_HOUR", "1000000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut config = Config::load(None, &env).unwrap();
    let s = parapet_gateway::server::build_state(&mut config)
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (_, api_key) = apps::create_app(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &Actor::cli(),
        &NewApp {
            name: "bench".to_owned(),
            grants: vec!["sign".to_owned()],
            ..NewApp::default()
        },
        now,
    )
    .await
    .unwrap();
    let app_record = s.identity.resolve(&api_key, now).await.unwrap().unwrap();
    let user = uuid::Uuid::new_v4();
    parapet_gateway::accounts::users::store::ensure_user(s.audit.store(), user, now)
        .await
        .unwrap();
    let (ceremony, ccr) = s
        .passkeys
        .start_registration(user, "bench", "Bench", false, now)
        .await
        .unwrap();
    let cred = SoftPasskey::new(true)
        .do_registration(Url::parse("http://localhost:8080").unwrap(), ccr)
        .unwrap();
    s.passkeys
        .finish_registration(&ceremony, user, &cred, now)
        .await
        .unwrap();
    let session = s
        .users
        .sessions
        .issue(
            parapet_gateway::accounts::users::SessionKind::App,
            user,
            &app_record,
            Method::Passkey,
            true,
            None,
            now,
        )
        .await
        .unwrap()
        .token;
    let (code, _) =
        parapet_gateway::accounts::devices::issue_pairing_code(s.audit.store(), user, now)
            .await
            .unwrap();
    let (device, device_token) = parapet_gateway::accounts::devices::pair(
        s.audit.store(),
        Auditor::Log(&s.audit),
        &code,
        "bench",
        "bench",
        now,
    )
    .await
    .unwrap();
    let recovery = parapet_mpc::recovery::RecoverySecret::generate()
        .derive(&user.to_string())
        .unwrap();
    parapet_gateway::accounts::recovery::enrol(
        &parapet_gateway::cosign::Cosigner::of(&s),
        &device,
        recovery.public_key(),
        zeroize::Zeroizing::new(*recovery.auth_key()),
        None,
        &[],
        "bench",
        now,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = app(s.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    (
        Setup {
            base,
            api_key,
            session,
            device_token,
            user: user.to_string(),
            recovery,
            _data: data,
        },
        s,
    )
}

/// Asks the gateway, as the app in the user's session, to sign `message` with `address`;
/// returns the signing request's id and the digest the device must find in the ceremony.
pub fn new_signing_request(
    base: &str,
    api_key: &str,
    session: &str,
    address: &str,
    idempotency_key: &str,
    message: &str,
) -> (String, [u8; 32]) {
    let mut res = ureq::post(&format!("{base}/v1/wallets/{address}/sign"))
        .header("authorization", &format!("Bearer {api_key}"))
        .header("parapet-session", session)
        .header("idempotency-key", idempotency_key)
        .send_json(serde_json::json!({"chain_id": 1, "message": message}))
        .unwrap();
    let body: serde_json::Value = res.body_mut().read_json().unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let digest = parapet_mpc::wire::bytes32(body["digest"].as_str().unwrap()).unwrap();
    (id, digest)
}

/// A device share and a gateway share of one new wallet, generated in this process (both parties
/// stepped in turn): for the ceremonies measured without a gateway.
pub fn shares_in_process() -> (parapet_mpc::KeyShare, parapet_mpc::KeyShare) {
    use parapet_mpc::{Dkls23, Role, SessionId, ThresholdEcdsa, run_locally};
    let id = SessionId::random();
    run_locally(
        Dkls23.keygen(Role::Device, id).unwrap(),
        Dkls23.keygen(Role::Gateway, id).unwrap(),
    )
    .unwrap()
}
