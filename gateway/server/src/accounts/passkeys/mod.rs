//! Passkeys (docs/architecture.md §2): the gateway is the WebAuthn relying party, through
//! `webauthn-rs`.
//!
//! * A ceremony (registration or login) is started for one user; its state lives in the
//!   database under the SHA-256 of a random 256-bit id that only the caller gets. The first
//!   attempt to finish it deletes it (one `DELETE … RETURNING`), whether that attempt succeeds
//!   or fails, so an answer can never be replayed and a failed attempt cannot be retried against
//!   the same challenge. The user, and the kind of ceremony, come from that stored row, never
//!   from the finish request; a ceremony of the other kind or of another user is unknown. It
//!   expires after [`PasskeyConfig::ceremony_ttl`], checked here with the caller's clock.
//! * User verification is required for both ceremonies.
//! * After every successful login the credential is updated with webauthn-rs's result and
//!   saved, with a compare-and-set on the signature counter. A counter that does not move
//!   forward on a credential whose counter is non-zero is refused as a possible clone (audited);
//!   synced passkeys, which always send 0, stay at 0 and are fine.
//! * Revoked credentials are never offered and never accepted.
//!
//! Audit: registrations, revocations, logins and clone suspicions are events of kind
//! `passkey` naming the user and the credential id only; refusals are counted per user (or per
//! ceremony kind when no user is known) through the flood aggregator.

mod store;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::audit::{AuditLog, Store};
use crate::error::{Error, Result};

use store::CredentialRow;

/// The relying party's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyConfig {
    /// The RP id: a registrable domain suffix of every origin's host (`localhost` in
    /// development).
    pub rp_id: String,
    /// Origins a ceremony may come from, matched exactly (scheme, host and port).
    pub origins: Vec<String>,
    /// How long a started ceremony can be finished.
    pub ceremony_ttl: Duration,
}

/// Development RP id.
pub const DEFAULT_RP_ID: &str = "localhost";
/// Development origin: the gateway's page on its default port.
pub const DEFAULT_ORIGIN: &str = "http://localhost:8080";
/// Default ceremony lifetime.
pub const DEFAULT_CEREMONY_TTL: Duration = Duration::from_secs(300);

impl Default for PasskeyConfig {
    fn default() -> Self {
        PasskeyConfig {
            rp_id: DEFAULT_RP_ID.to_owned(),
            origins: vec![DEFAULT_ORIGIN.to_owned()],
            ceremony_ttl: DEFAULT_CEREMONY_TTL,
        }
    }
}

impl PasskeyConfig {
    /// Checks the settings the way [`Passkeys::new`] will use them: at least one origin, each a
    /// URL with a host name (browsers refuse IP-address origins) of which the RP id is a suffix.
    pub fn validate(&self) -> Result<()> {
        self.webauthn().map(|_| ())
    }

    fn webauthn(&self) -> Result<Webauthn> {
        let bad = |m: String| Error::Config(format!("webauthn: {m}"));
        if self.rp_id.trim().is_empty() {
            return Err(bad("webauthn_rp_id is empty".to_owned()));
        }
        let mut origins = Vec::with_capacity(self.origins.len());
        for o in &self.origins {
            let url = Url::parse(o).map_err(|e| bad(format!("origin {o:?}: {e}")))?;
            if url.domain().is_none() {
                return Err(bad(format!(
                    "origin {o:?} must name a host, not an IP address (browsers refuse those)"
                )));
            }
            origins.push(url);
        }
        let Some((first, rest)) = origins.split_first() else {
            return Err(bad("webauthn_origins is empty".to_owned()));
        };
        let mut builder = WebauthnBuilder::new(&self.rp_id, first).map_err(|_| {
            bad(format!(
                "RP id {:?} is not a suffix of origin {first}",
                self.rp_id
            ))
        })?;
        for o in rest {
            let host = o.domain().unwrap_or_default();
            if host != self.rp_id && !host.ends_with(&format!(".{}", self.rp_id)) {
                return Err(bad(format!(
                    "RP id {:?} is not a suffix of origin {o}",
                    self.rp_id
                )));
            }
            builder = builder.append_allowed_origin(o);
        }
        builder
            .rp_name("Parapet")
            .build()
            .map_err(|e| bad(e.to_string()))
    }
}

/// A registered passkey as shown to its owner (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyInfo {
    /// The credential id, base64url without padding (as browsers give `rawId`).
    pub credential_id: String,
    pub user: Uuid,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The authenticator may sync this credential (a "multi-device" passkey)…
    pub backup_eligible: bool,
    /// …and it is currently backed up.
    pub backup_state: bool,
    /// The last signature counter seen (0 for passkeys that do not count).
    pub sign_count: u32,
}

impl PasskeyInfo {
    fn from_row(r: &CredentialRow) -> Result<PasskeyInfo> {
        Ok(PasskeyInfo {
            credential_id: r.credential_id.clone(),
            user: parse_user(&r.user_id)?,
            created_at: r.created_at.clone(),
            last_used_at: r.last_used_at.clone(),
            revoked_at: r.revoked_at.clone(),
            backup_eligible: r.backup_eligible,
            backup_state: r.backup_state,
            sign_count: u32::try_from(r.sign_count).unwrap_or(0),
        })
    }

    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// What a successful login established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The user the ceremony was started for (and who owns the credential).
    pub user: Uuid,
    /// base64url, as in [`PasskeyInfo::credential_id`].
    pub credential_id: String,
    /// Always true today (verification is required), kept for `context.session`.
    pub user_verified: bool,
    /// The signature counter the authenticator sent.
    pub counter: u32,
    /// What the login was started for ([`Passkeys::start_login_for`]).
    pub context: Option<String>,
}

/// A login ceremony as stored: webauthn-rs's state and what the login is for.
#[derive(Debug, Serialize, serde::Deserialize)]
struct LoginState {
    auth: PasskeyAuthentication,
    context: Option<String>,
}

/// The two ceremonies, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A person's first passkey (a new person, or one who has none yet).
    Registration,
    /// A further passkey, started only after a step-up with one the person has.
    ApprovedRegistration,
    Login,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Registration => "registration",
            Kind::ApprovedRegistration => "registration_approved",
            Kind::Login => "login",
        }
    }
}

/// The passkey service: one per process, shared.
#[derive(Debug, Clone)]
pub struct Passkeys {
    webauthn: Arc<Webauthn>,
    store: Store,
    audit: Arc<AuditLog>,
    ttl: Duration,
}

/// Whether `user` has a live passkey: from then on every security change needs a step-up with
/// it, and page links no longer open their page (docs/architecture.md §6).
pub async fn has_live_passkey(store: &Store, user: Uuid) -> Result<bool> {
    store::has_live(store, &user.to_string()).await
}

/// The step-up context of adding a further passkey (who can log in as the person).
pub fn add_context(user: Uuid) -> String {
    format!("passkey-add:{user}")
}

/// The step-up context of revoking one of the person's passkeys.
pub fn revoke_context(credential_id: &str) -> String {
    format!("passkey-revoke:{credential_id}")
}

/// base64url without padding, the form credential ids travel in.
pub fn encode_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn parse_user(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Internal(format!("stored user id {s:?}: {e}")))
}

/// The stored form of a ceremony id: its SHA-256, so that reading the table does not hand
/// out live ceremonies.
fn ceremony_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A fresh ceremony id: 256 random bits, base64url.
fn new_ceremony_id() -> String {
    encode_id(&rand::random::<[u8; 32]>())
}

/// The backup flags webauthn-rs keeps inside a `Passkey` (not exposed by accessors).
fn backup_flags(pk: &Passkey) -> (bool, bool) {
    let v = serde_json::to_value(pk).unwrap_or_default();
    let cred = v.get("cred");
    let flag = |k: &str| {
        cred.and_then(|c| c.get(k))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    (flag("backup_eligible"), flag("backup_state"))
}

fn to_json<T: Serialize>(what: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("serialising {what}: {e}")))
}

impl Passkeys {
    /// The service over `store` (migrated: it holds the passkey tables), recording into `audit`.
    pub fn new(config: &PasskeyConfig, store: Store, audit: Arc<AuditLog>) -> Result<Passkeys> {
        Ok(Passkeys {
            webauthn: Arc::new(config.webauthn()?),
            store,
            audit,
            ttl: config.ceremony_ttl,
        })
    }

    /// Starts registering a new passkey for `user`, excluding the credentials the user already
    /// has (so an authenticator does not register twice). `user_name` and `display_name` are
    /// shown by the authenticator; the user handle it stores is the UUID, nothing personal.
    /// `approved`: the person just stepped up with a passkey they have, for this very addition
    /// (the only way a person who has one gets another, see [`Passkeys::finish_registration`]).
    pub async fn start_registration(
        &self,
        user: Uuid,
        user_name: &str,
        display_name: &str,
        approved: bool,
        now: OffsetDateTime,
    ) -> Result<(String, CreationChallengeResponse)> {
        let existing = store::credentials_of(&self.store, &user.to_string()).await?;
        let exclude = existing
            .iter()
            .filter_map(|r| serde_json::from_str::<Passkey>(&r.passkey).ok())
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>();
        let (ccr, state) = self
            .webauthn
            .start_passkey_registration(
                user,
                user_name,
                display_name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| Error::InvalidRequest(format!("cannot start a registration: {e}")))?;
        let kind = if approved {
            Kind::ApprovedRegistration
        } else {
            Kind::Registration
        };
        let id = self
            .save_ceremony(kind, user, &to_json("a registration", &state)?, now)
            .await?;
        Ok((id, ccr))
    }

    /// Finishes a registration that `user` started; the new credential is stored (and
    /// audited) only if the authenticator's answer verifies, with user verification, for this
    /// RP and an allowed origin. A person who has a live passkey now gets another only through
    /// a registration started after a step-up (decided here, at the end, so that a ceremony
    /// started while they had none cannot add a second one afterwards).
    pub async fn finish_registration(
        &self,
        ceremony_id: &str,
        user: Uuid,
        response: &RegisterPublicKeyCredential,
        now: OffsetDateTime,
    ) -> Result<PasskeyInfo> {
        let kind = if has_live_passkey(&self.store, user).await? {
            Kind::ApprovedRegistration
        } else {
            Kind::Registration
        };
        let state: PasskeyRegistration = self
            .take_ceremony(ceremony_id, kind, Some(user), now)
            .await
            .map(|(_, s)| s)?;
        let flood_key = format!("user:{user}");
        let passkey = match self.webauthn.finish_passkey_registration(response, &state) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(%user, error = %e, "passkey registration rejected");
                return self.refused(&flood_key, Error::PasskeyRejected, now);
            }
        };
        let (backup_eligible, backup_state) = backup_flags(&passkey);
        let row = CredentialRow {
            credential_id: encode_id(passkey.cred_id()),
            user_id: user.to_string(),
            passkey: to_json("a passkey", &passkey)?,
            sign_count: 0,
            backup_eligible,
            backup_state,
            created_at: format_time(now),
            last_used_at: None,
            revoked_at: None,
        };
        if !store::insert_credential(&self.store, &row).await? {
            return self.refused(&flood_key, Error::PasskeyAlreadyRegistered, now);
        }
        let event = self.event("passkey.register", user, &row.credential_id, now);
        if let Err(e) = self.audit.append(event).await {
            // Not recorded, so not made.
            store::delete_credential(&self.store, &row.credential_id).await?;
            return Err(e);
        }
        PasskeyInfo::from_row(&row)
    }

    /// Starts a login for `user` offering the user's live credentials. A user with none gets
    /// the same [`Error::PasskeyRejected`] as a wrong credential would.
    pub async fn start_login(
        &self,
        user: Uuid,
        now: OffsetDateTime,
    ) -> Result<(String, RequestChallengeResponse)> {
        self.start_login_for(user, None, now).await
    }

    /// [`Passkeys::start_login`] bound to `context` (the app a page login is for), which
    /// [`Passkeys::finish_login`] returns from the stored ceremony: the finishing request
    /// cannot choose it.
    pub async fn start_login_for(
        &self,
        user: Uuid,
        context: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(String, RequestChallengeResponse)> {
        let live = store::credentials_of(&self.store, &user.to_string())
            .await?
            .into_iter()
            .filter(|r| r.revoked_at.is_none())
            .filter_map(|r| serde_json::from_str::<Passkey>(&r.passkey).ok())
            .collect::<Vec<_>>();
        if live.is_empty() {
            self.audit
                .note_flood(&format!("user:{user}"), "passkey_rejected", now);
            return Err(Error::PasskeyRejected);
        }
        let (rcr, state) = self
            .webauthn
            .start_passkey_authentication(&live)
            .map_err(|e| Error::Internal(format!("starting a passkey login: {e}")))?;
        let id = self
            .save_ceremony(
                Kind::Login,
                user,
                &to_json(
                    "a login",
                    &LoginState {
                        auth: state,
                        context: context.map(str::to_owned),
                    },
                )?,
                now,
            )
            .await?;
        Ok((id, rcr))
    }

    /// Finishes a login. The user is the one the ceremony was started for; the credential must
    /// be one of theirs, live, and its counter must move forward unless it is zero.
    pub async fn finish_login(
        &self,
        ceremony_id: &str,
        response: &PublicKeyCredential,
        now: OffsetDateTime,
    ) -> Result<LoginOutcome> {
        let (
            user,
            LoginState {
                auth: state,
                context,
            },
        ): (Uuid, LoginState) = self
            .take_ceremony(ceremony_id, Kind::Login, None, now)
            .await?;
        let flood_key = format!("user:{user}");
        let credential_id = encode_id(response.get_credential_id());
        // The credential as it is now, not as it was when the login started.
        let current = match store::credential(&self.store, &credential_id).await? {
            Some(r) if r.user_id == user.to_string() => r,
            _ => {
                tracing::info!(%user, "passkey login with a credential the user does not have");
                return self.refused(&flood_key, Error::PasskeyRejected, now);
            }
        };
        if current.revoked_at.is_some() {
            return self.refused(&flood_key, Error::PasskeyRevoked, now);
        }
        let result = match self
            .webauthn
            .finish_passkey_authentication(response, &state)
        {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                return self.clone_suspected(user, &credential_id, now).await;
            }
            Err(e) => {
                tracing::info!(%user, error = %e, "passkey login rejected");
                return self.refused(&flood_key, Error::PasskeyRejected, now);
            }
        };
        // webauthn-rs compared the counter with the credential as it was when the login
        // started; compare with the stored one too, which another login may have moved since.
        let counter = i64::from(result.counter());
        if current.sign_count > 0 && counter <= current.sign_count {
            return self.clone_suspected(user, &credential_id, now).await;
        }
        let mut passkey: Passkey = serde_json::from_str(&current.passkey)
            .map_err(|e| Error::Internal(format!("stored passkey unreadable: {e}")))?;
        passkey.update_credential(&result);
        let saved = store::save_after_login(
            &self.store,
            &credential_id,
            &to_json("a passkey", &passkey)?,
            counter,
            result.backup_eligible(),
            result.backup_state(),
            &format_time(now),
        )
        .await?;
        if !saved {
            // Revoked, or the counter moved past this one, since we read it.
            return match store::credential(&self.store, &credential_id).await? {
                Some(r) if r.revoked_at.is_none() => {
                    self.clone_suspected(user, &credential_id, now).await
                }
                _ => self.refused(&flood_key, Error::PasskeyRevoked, now),
            };
        }
        self.audit
            .append(self.event("passkey.login", user, &credential_id, now))
            .await?;
        Ok(LoginOutcome {
            user,
            credential_id,
            user_verified: result.user_verified(),
            counter: result.counter(),
            context,
        })
    }

    /// Starts a step-up for `owner`, bound to `context` (see [`Passkeys::finish_step_up`]): the
    /// ceremony id and the WebAuthn options as JSON. A user with no live passkey cannot step up:
    /// `PasskeyRequired`.
    pub async fn start_step_up(
        &self,
        owner: Uuid,
        context: &str,
        now: OffsetDateTime,
    ) -> Result<serde_json::Value> {
        match self.start_login_for(owner, Some(context), now).await {
            Ok((ceremony_id, options)) => {
                Ok(serde_json::json!({"ceremony_id": ceremony_id, "options": options}))
            }
            Err(Error::PasskeyRejected) => Err(Error::PasskeyRequired),
            Err(e) => Err(e),
        }
    }

    /// Finishes a step-up: a login ceremony started with `context` for `owner` (a signing
    /// request's id and digest, or an operation's kind, id, wallet and epoch), answered by the
    /// owner with user verification. Anything else is `StepUpMismatch`: an assertion made for one
    /// request or operation is worthless for another.
    pub async fn finish_step_up(
        &self,
        ceremony_id: &str,
        response: &PublicKeyCredential,
        owner: Uuid,
        context: &str,
        now: OffsetDateTime,
    ) -> Result<LoginOutcome> {
        let login = self.finish_login(ceremony_id, response, now).await?;
        if login.user != owner || !login.user_verified || login.context.as_deref() != Some(context)
        {
            tracing::warn!(%owner, "a step-up assertion for something else");
            return Err(Error::StepUpMismatch);
        }
        Ok(login)
    }

    /// The user's passkeys, revoked ones included, oldest first.
    pub async fn list(&self, user: Uuid) -> Result<Vec<PasskeyInfo>> {
        store::credentials_of(&self.store, &user.to_string())
            .await?
            .iter()
            .map(PasskeyInfo::from_row)
            .collect()
    }

    /// Revokes one of the user's live passkeys (recorded first: a revocation that cannot be
    /// audited is not made). `NotFound` when the user has no such live passkey.
    pub async fn revoke(
        &self,
        user: Uuid,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<PasskeyInfo> {
        match store::credential(&self.store, credential_id).await? {
            Some(r) if r.user_id == user.to_string() && r.revoked_at.is_none() => {}
            _ => return Err(Error::NotFound),
        }
        self.audit
            .append(self.event("passkey.revoke", user, credential_id, now))
            .await?;
        if !store::revoke_credential(
            &self.store,
            &user.to_string(),
            credential_id,
            &format_time(now),
        )
        .await?
        {
            return Err(Error::NotFound);
        }
        match store::credential(&self.store, credential_id).await? {
            Some(r) => PasskeyInfo::from_row(&r),
            None => Err(Error::NotFound),
        }
    }

    async fn save_ceremony(
        &self,
        kind: Kind,
        user: Uuid,
        state: &str,
        now: OffsetDateTime,
    ) -> Result<String> {
        let now_s = format_time(now);
        store::sweep_ceremonies(&self.store, &now_s).await?;
        let id = new_ceremony_id();
        store::insert_ceremony(
            &self.store,
            &ceremony_hash(&id),
            kind.as_str(),
            &user.to_string(),
            state,
            &now_s,
            &format_time(now + self.ttl),
        )
        .await?;
        Ok(id)
    }

    /// Takes the ceremony out of the store (it is gone whatever happens next) and checks it is
    /// of `kind`, for `user` when one is given, and not expired.
    async fn take_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        ceremony_id: &str,
        kind: Kind,
        user: Option<Uuid>,
        now: OffsetDateTime,
    ) -> Result<(Uuid, S)> {
        let flood_key = match user {
            Some(u) => format!("user:{u}"),
            None => format!("passkey_{}", kind.as_str()),
        };
        if ceremony_id.is_empty() || ceremony_id.len() > 100 {
            return self.refused(&flood_key, Error::PasskeyCeremonyUnknown, now);
        }
        let Some(row) = store::take_ceremony(&self.store, &ceremony_hash(ceremony_id)).await?
        else {
            return self.refused(&flood_key, Error::PasskeyCeremonyUnknown, now);
        };
        let owner = parse_user(&row.user_id)?;
        if row.kind != kind.as_str() || user.is_some_and(|u| u != owner) {
            tracing::info!(
                ceremony_kind = %row.kind,
                wanted = kind.as_str(),
                "passkey ceremony used for another kind or user"
            );
            return self.refused(&flood_key, Error::PasskeyCeremonyUnknown, now);
        }
        if format_time(now) >= row.expires_at {
            return self.refused(&flood_key, Error::PasskeyCeremonyExpired, now);
        }
        let state = serde_json::from_str(&row.state)
            .map_err(|e| Error::Internal(format!("stored passkey ceremony unreadable: {e}")))?;
        Ok((owner, state))
    }

    /// Counts a refusal in the flood aggregate and returns it as the error.
    fn refused<T>(&self, key: &str, error: Error, now: OffsetDateTime) -> Result<T> {
        self.audit.note_flood(key, error.code(), now);
        Err(error)
    }

    async fn clone_suspected<T>(
        &self,
        user: Uuid,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<T> {
        tracing::warn!(%user, credential_id, "passkey counter went backwards: possible clone");
        self.audit
            .append(self.event("passkey.clone_suspected", user, credential_id, now))
            .await?;
        Err(Error::PasskeyCloneSuspected)
    }

    fn event(
        &self,
        action: &str,
        user: Uuid,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::Passkey, now, Uuid::now_v7().to_string());
        e.user = Some(user.to_string());
        e.action = Some(action.to_owned());
        e.request = Some(serde_json::json!({ "credential_id": credential_id }));
        e
    }
}
