//! The user side (docs/architecture.md §1 "authenticate", §2): users, their OIDC identities, and
//! the app-bound sessions routes act for users with. Every outcome is audited: logins, logouts and
//! links as `session` events, disablement as an `admin` event, failed logins in aggregate. No
//! session token, ID token or nonce is ever written to the audit log or a log line.

pub mod handoff;
pub mod oidc;
pub mod sessions;
pub mod store;
pub mod totp;

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::{Actor, Auditor};
use crate::audit::event::{AuditEvent, EventKind};
use crate::audit::{AuditLog, Store};
use crate::error::{Error, Result};
use crate::limits::FailureWindow;
use crate::records::AppRecord;
pub use sessions::{ActiveSession, Issued, Kind as SessionKind, Method, Sessions};
pub use store::StoredUser;

/// The header a user's session travels in, next to the app's key.
pub const SESSION_HEADER: &str = "parapet-session";

/// Failed logins allowed per person per window. An OIDC failure counts against the person only
/// when the token's signature verified for this app ([`oidc::Failure::person`]); a failure
/// anyone could cause by naming someone counts against the client's address alone, or a
/// stranger could lock that person out.
pub const USER_FAILURES: u32 = 10;
/// Failed logins allowed per client IP per window (after the IP rate limit).
pub const IP_FAILURES: u32 = 30;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Recovery lookups (`POST /v1/recovery/identify`) per client IP per [`LOOKUP_WINDOW`], found or
/// not: a person recovering looks themselves up once or twice; a stranger mapping addresses to
/// people gets this many a day's fraction.
pub const LOOKUPS_PER_IP: u32 = 20;
pub const LOOKUP_WINDOW: Duration = Duration::from_secs(3600);
/// Passkey login starts on the page per client IP per [`LOGIN_START_WINDOW`], finished or not:
/// each leaves a ceremony row until it expires, so this bounds the rows one address can keep
/// (a user id is no secret, so anyone can start a login for anyone). An office behind one
/// address logs in far less often.
pub const LOGIN_STARTS_PER_IP: u32 = 60;
pub const LOGIN_START_WINDOW: Duration = Duration::from_secs(600);

/// Users, sessions and OIDC logins of one process.
#[derive(Debug)]
pub struct Users {
    store: Store,
    pub sessions: Sessions,
    pub jwks: oidc::JwksCache,
    user_failures: FailureWindow,
    ip_failures: FailureWindow,
    lookups: FailureWindow,
    login_starts: FailureWindow,
}

/// What a successful login or link reports.
#[derive(Debug, Clone)]
pub struct Login {
    pub session: Issued,
    pub issuer: String,
    pub created_user: bool,
}

/// The per-person failure key of an OIDC identity.
fn person_key(iss: &str, sub: &str) -> String {
    format!("{iss}\u{1f}{sub}")
}

fn session_event(
    action: &str,
    app: &str,
    user: Uuid,
    request_id: &str,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Session, now, request_id);
    e.app = Some(app.to_owned());
    e.user = Some(user.to_string());
    e.action = Some(action.to_owned());
    e.request = Some(detail);
    e
}

impl Users {
    /// Users on `store`; JWKS are fetched only from addresses `outbound_allow` permits
    /// ([`crate::outbound`]).
    pub fn new(store: Store, outbound_allow: crate::outbound::Allowlist) -> Users {
        Users {
            sessions: Sessions::new(store.clone()),
            store,
            jwks: oidc::JwksCache::new(outbound_allow),
            user_failures: FailureWindow::new(USER_FAILURES, FAILURE_WINDOW),
            ip_failures: FailureWindow::new(IP_FAILURES, FAILURE_WINDOW),
            lookups: FailureWindow::new(LOOKUPS_PER_IP, LOOKUP_WINDOW),
            login_starts: FailureWindow::new(LOGIN_STARTS_PER_IP, LOGIN_START_WINDOW),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counts a failed login and turns it into the one answer every failure gets. The reason
    /// goes to the debug log only (it never holds the token).
    fn failed(
        &self,
        audit: &AuditLog,
        ip: &str,
        failure: &oidc::Failure,
        now: OffsetDateTime,
    ) -> Error {
        if let Some(error) = &failure.internal {
            tracing::warn!(%error, "an OIDC login could not be checked");
            return Error::IssuerUnavailable;
        }
        tracing::debug!(reason = %failure.reason, "OIDC login refused");
        self.ip_failures.fail(ip, now);
        if let Some((iss, sub)) = &failure.person {
            self.user_failures.fail(&person_key(iss, sub), now);
        }
        audit.note_flood(ip, "login_failed", now);
        Error::LoginFailed
    }

    /// Verifies an ID token for `app` and consumes its nonce: the per-IP failure limit first,
    /// the person's own once the signature shows the token is theirs (before that, the `sub` it
    /// names is only what the sender wrote).
    async fn verify_login(
        &self,
        audit: &AuditLog,
        app: &AppRecord,
        ip: &str,
        id_token: &str,
        now: OffsetDateTime,
    ) -> Result<oidc::Verified> {
        self.ip_failures
            .check(ip, now)
            .map_err(crate::limits::Refusal::into_error)?;
        let issuers = oidc::issuers(&self.store, &app.id).await?;
        let verified = oidc::verify(&self.jwks, &issuers, id_token, now)
            .await
            .map_err(|f| self.failed(audit, ip, &f, now))?;
        self.user_failures
            .check(&person_key(&verified.issuer, &verified.subject), now)
            .map_err(crate::limits::Refusal::into_error)?;
        if !oidc::consume_nonce(&self.store, &app.id, &verified.nonce, now).await? {
            let f = oidc::Failure {
                reason: "nonce unknown, used, expired or another app's".to_owned(),
                person: Some((verified.issuer.clone(), verified.subject.clone())),
                internal: None,
            };
            return Err(self.failed(audit, ip, &f, now));
        }
        Ok(verified)
    }

    /// An OIDC login: verifies the ID token, finds or creates the user of `(iss, sub)` under
    /// the key source that verified it, audits the login (`session.login`) and starts a session
    /// for `app`.
    pub async fn login_oidc(
        &self,
        audit: &AuditLog,
        app: &AppRecord,
        ip: &str,
        id_token: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<Login> {
        let v = self.verify_login(audit, app, ip, id_token, now).await?;
        let (user, disabled, created_user) =
            store::find_or_create(&self.store, &store::Identity::of(&v), now).await?;
        if disabled {
            let f = oidc::Failure {
                reason: "user disabled".to_owned(),
                person: Some((v.issuer.clone(), v.subject.clone())),
                internal: None,
            };
            return Err(self.failed(audit, ip, &f, now));
        }
        let session = self
            .sessions
            .issue(SessionKind::App, user, app, Method::Oidc, false, None, now)
            .await?;
        let event = session_event(
            "session.login",
            &app.id,
            user,
            request_id,
            serde_json::json!({
                "method": Method::Oidc.as_str(),
                "issuer": v.issuer,
                "trust": v.trust,
                "session_id": session.id,
                "created_user": created_user,
                "expires_at": crate::audit::event::format_time(session.expires_at),
            }),
            now,
        );
        if let Err(error) = audit.append(event).await {
            // Not audited, not granted: take the session back.
            let _ = self.sessions.end_token(&session.token, now).await;
            return Err(error);
        }
        Ok(Login {
            session,
            issuer: v.issuer,
            created_user,
        })
    }

    /// Links the identity of an ID token to the user of a live session (`session.link`).
    /// Returns the user, the identity, and whether it was newly linked.
    #[allow(clippy::too_many_arguments, reason = "who, with what, for whom, when")]
    pub async fn link_oidc(
        &self,
        audit: &AuditLog,
        app: &AppRecord,
        session_token: &str,
        ip: &str,
        id_token: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<(Uuid, String, String, bool)> {
        let session = self.sessions.resolve(session_token, &app.id, now).await?;
        let v = self.verify_login(audit, app, ip, id_token, now).await?;
        let user = session.facts.user;
        let linked = store::link_identity(&self.store, user, &store::Identity::of(&v), now).await?;
        let event = session_event(
            "session.link",
            &app.id,
            user,
            request_id,
            serde_json::json!({
                "method": Method::Oidc.as_str(),
                "issuer": v.issuer,
                "trust": v.trust,
                "session_id": session.id,
                "newly_linked": linked,
            }),
            now,
        );
        audit.append(event).await?;
        Ok((user, v.issuer, v.subject, linked))
    }

    /// Ends a live session of `app` (`session.logout`).
    pub async fn logout(
        &self,
        audit: &AuditLog,
        app: &AppRecord,
        session_token: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        let session = self.sessions.end(session_token, &app.id, now).await?;
        Self::logged_out(audit, session, request_id, now).await
    }

    /// Ends the page session `session_token` (`session.logout`).
    pub async fn logout_page(
        &self,
        audit: &AuditLog,
        session_token: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        let session = self.sessions.end_page(session_token, now).await?;
        Self::logged_out(audit, session, request_id, now).await
    }

    async fn logged_out(
        audit: &AuditLog,
        session: ActiveSession,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<ActiveSession> {
        let event = session_event(
            "session.logout",
            &session.app_id,
            session.facts.user,
            request_id,
            serde_json::json!({"method": session.facts.method, "session_id": session.id}),
            now,
        );
        audit.append(event).await?;
        Ok(session)
    }

    /// Whether another login attempt from `ip` (and for `user_key`, when known) may be tried.
    pub fn check_login(&self, ip: &str, user_key: Option<&str>, now: OffsetDateTime) -> Result<()> {
        self.ip_failures
            .check(ip, now)
            .map_err(crate::limits::Refusal::into_error)?;
        if let Some(key) = user_key {
            self.user_failures
                .check(key, now)
                .map_err(crate::limits::Refusal::into_error)?;
        }
        Ok(())
    }

    /// Counts an attempt against `ip` before its costly check runs (see
    /// [`crate::limits::FailureWindow::take`]); give it back with [`Users::attempt_succeeded`].
    /// The failure is audited in aggregate when the attempt fails ([`Users::attempt_failed`]).
    pub fn charge_attempt(&self, ip: &str, now: OffsetDateTime) -> Result<()> {
        self.ip_failures
            .take(ip, now)
            .map_err(crate::limits::Refusal::into_error)
    }

    /// Counts one recovery lookup from `ip`, found or not ([`LOOKUPS_PER_IP`]).
    pub fn charge_lookup(&self, ip: &str, now: OffsetDateTime) -> Result<()> {
        self.lookups
            .take(ip, now)
            .map_err(crate::limits::Refusal::into_error)
    }

    /// Counts one page login start from `ip` ([`LOGIN_STARTS_PER_IP`]).
    pub fn charge_login_start(&self, ip: &str, now: OffsetDateTime) -> Result<()> {
        self.login_starts
            .take(ip, now)
            .map_err(crate::limits::Refusal::into_error)
    }

    /// The charged attempt succeeded: it no longer counts against `ip`.
    pub fn attempt_succeeded(&self, ip: &str) {
        self.ip_failures.refund(ip);
    }

    /// Counts a failure against a person's own key only (`ip` was charged already).
    pub fn person_failed(&self, user_key: &str, now: OffsetDateTime) {
        self.user_failures.fail(user_key, now);
    }

    /// The charged attempt failed: it stays counted; noted for the aggregated audit.
    pub fn attempt_failed(&self, audit: &AuditLog, ip: &str, now: OffsetDateTime) {
        audit.note_flood(ip, "login_failed", now);
    }

    /// Counts a failed login (passkey, code or recovery secret) against `ip`, and against
    /// `user_key` when the caller decided the failure may be held against that person, and
    /// returns the one answer every failure gets; the refusal is audited in aggregate.
    pub fn login_failed(
        &self,
        audit: &AuditLog,
        ip: &str,
        user_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Error {
        self.ip_failures.fail(ip, now);
        if let Some(key) = user_key {
            self.user_failures.fail(key, now);
        }
        audit.note_flood(ip, "login_failed", now);
        Error::LoginFailed
    }

    /// Starts a session of `kind` for `user` with `app` and audits it (`session.login`); a
    /// session whose login cannot be audited is ended again and the error returned. A disabled
    /// or unknown user gets [`Error::LoginFailed`].
    #[allow(clippy::too_many_arguments, reason = "who, for which app, how, when")]
    pub async fn begin_session(
        &self,
        audit: &AuditLog,
        kind: SessionKind,
        app: &AppRecord,
        user: Uuid,
        method: Method,
        user_verified: bool,
        credential_id: Option<&str>,
        via: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        if store::user_disabled(&self.store, user).await? != Some(false) {
            return Err(Error::LoginFailed);
        }
        let session = self
            .sessions
            .issue(kind, user, app, method, user_verified, credential_id, now)
            .await?;
        let event = session_event(
            "session.login",
            &app.id,
            user,
            request_id,
            serde_json::json!({
                "method": method.as_str(),
                "kind": kind.as_str(),
                "via": via,
                "credential_id": credential_id,
                "user_verified": user_verified,
                "session_id": session.id,
                "expires_at": crate::audit::event::format_time(session.expires_at),
            }),
            now,
        );
        if let Err(error) = audit.append(event).await {
            let _ = self.sessions.end_token(&session.token, now).await;
            return Err(error);
        }
        Ok(session)
    }

    /// Exchanges a hand-off login code for an app session of `app` ([`handoff::consume_code`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "who, with what, from where, when"
    )]
    pub async fn exchange_code(
        &self,
        audit: &AuditLog,
        app: &AppRecord,
        code: &str,
        redirect_uri: &str,
        ip: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.check_login(ip, None, now)?;
        let grant = self
            .consume(audit, &app.id, code, redirect_uri, ip, now)
            .await?;
        self.begin_granted(
            audit,
            SessionKind::App,
            app,
            &grant,
            "handoff",
            request_id,
            now,
        )
        .await
    }

    /// Consumes a login code; a failure counts like a failed login.
    async fn consume(
        &self,
        audit: &AuditLog,
        app_id: &str,
        code: &str,
        redirect_uri: &str,
        ip: &str,
        now: OffsetDateTime,
    ) -> Result<handoff::CodeGrant> {
        match handoff::consume_code(&self.store, app_id, code, redirect_uri, now).await {
            Ok(g) => Ok(g),
            Err(Error::LoginFailed) => Err(self.login_failed(audit, ip, None, now)),
            Err(other) => Err(other),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "who, for which app, how, when")]
    async fn begin_granted(
        &self,
        audit: &AuditLog,
        kind: SessionKind,
        app: &AppRecord,
        grant: &handoff::CodeGrant,
        via: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let method = match grant.method.as_str() {
            "oidc" => Method::Oidc,
            _ => Method::Passkey,
        };
        self.begin_session(
            audit,
            kind,
            app,
            grant.user,
            method,
            grant.user_verified,
            grant.credential_id.as_deref(),
            via,
            request_id,
            now,
        )
        .await
    }

    /// Revokes one of `user`'s passkeys ([`crate::accounts::passkeys::Passkeys::revoke`], audited first)
    /// and ends every session established with it: at once in this process, within a second
    /// in the others.
    pub async fn revoke_passkey(
        &self,
        passkeys: &crate::accounts::passkeys::Passkeys,
        user: Uuid,
        credential_id: &str,
        now: OffsetDateTime,
    ) -> Result<crate::accounts::passkeys::PasskeyInfo> {
        let info = passkeys.revoke(user, credential_id, now).await?;
        self.sessions.end_for_credential(credential_id, now).await?;
        Ok(info)
    }

    /// Redeems a page link code ([`handoff::PAGE_LINK`]) for a page session: only for a
    /// person with no live passkey (the bootstrap of someone who logged in through an app's
    /// identity provider); anyone with a passkey logs in with it instead
    /// ([`Error::PasskeyLoginRequired`], the code is gone either way).
    pub async fn redeem_page_link(
        &self,
        audit: &AuditLog,
        code: &str,
        ip: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Result<Issued> {
        self.check_login(ip, None, now)?;
        let page = AppRecord::gateway_page();
        let grant = self
            .consume(audit, &page.id, code, handoff::PAGE_LINK, ip, now)
            .await?;
        if crate::accounts::passkeys::has_live_passkey(&self.store, grant.user).await? {
            return Err(Error::PasskeyLoginRequired);
        }
        self.begin_granted(
            audit,
            SessionKind::Page,
            &page,
            &grant,
            "page_link",
            request_id,
            now,
        )
        .await
    }

    /// Disables a user and ends their sessions ([`store::disable_user`]); this process sees it
    /// at once, others within a second.
    pub async fn disable(
        &self,
        auditor: Auditor<'_>,
        actor: &Actor,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<StoredUser> {
        let user = store::disable_user(&self.store, auditor, actor, id, now).await?;
        self.sessions.invalidate();
        Ok(user)
    }
}
