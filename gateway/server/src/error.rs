//! The gateway's one error type. Every variant has a stable `code` that callers can match on and
//! an HTTP status; internals (paths, SQL, library messages) stay in logs, never in a body.

use http::StatusCode;
use parapet_decide::error::Kind as DecideKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- the caller's request (400) ----
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    // ---- other client errors ----
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The key is valid but lacks the grant the route needs.
    #[error("this key lacks the {0} grant")]
    Forbidden(&'static str),
    /// A call to the gateway's page API that the page's own rules refuse (origin, CSRF token,
    /// a login for another app); the text says which.
    #[error("{0}")]
    PageRefused(&'static str),
    #[error("this app is frozen")]
    AppFrozen,
    #[error("not found")]
    NotFound,
    /// The `Parapet-Session` token is unknown, ended, its user disabled, or it was issued for
    /// another app.
    #[error("invalid session")]
    SessionInvalid,
    /// The session passed its absolute or idle limit.
    #[error("session expired")]
    SessionExpired,
    /// A login was refused. One status and body for every cause (unknown issuer or user, bad
    /// signature, wrong audience, replayed nonce, …), so that a failure tells nothing.
    #[error("login failed")]
    LoginFailed,
    /// The person has not approved the app's current scopes: show the consent screen first.
    #[error("consent required: approve the app's scopes first")]
    ConsentRequired,
    /// The identity being linked already belongs to another user.
    #[error("this identity is linked to another user")]
    IdentityInUse,
    /// A rate limit refused the request before any work; `Retry-After` says when to come back.
    #[error("rate limited ({limiter}); retry after {retry_after_secs} s")]
    RateLimited {
        limiter: &'static str,
        retry_after_secs: u64,
    },
    /// A quota on costly work refused it: new accounts from the page (per client IP, and per
    /// day for the whole gateway) or key generations (per device, per person). `Retry-After`
    /// says when the oldest counted use leaves the window.
    #[error("{}; retry after {retry_after_secs} s", .quota.describe())]
    QuotaExceeded { quota: Quota, retry_after_secs: u64 },
    #[error("request body too large")]
    BodyTooLarge,
    #[error("unsupported media type: send application/json")]
    UnsupportedMediaType,
    /// No passkey ceremony with this id is waiting for this user and this step: never issued,
    /// already finished (or failed), started for another user, or of the other kind.
    #[error("unknown passkey ceremony")]
    PasskeyCeremonyUnknown,
    #[error("passkey ceremony expired; start again")]
    PasskeyCeremonyExpired,
    /// The authenticator's answer was not accepted: unknown credential, bad signature, wrong
    /// origin or RP id, no user verification, … (one error for all, the detail is logged).
    #[error("passkey not accepted")]
    PasskeyRejected,
    #[error("this passkey has been revoked")]
    PasskeyRevoked,
    /// The signature counter went backwards: two copies of the credential may exist.
    #[error("passkey not accepted: its signature counter went backwards (possible clone)")]
    PasskeyCloneSuspected,
    #[error("this passkey is already registered")]
    PasskeyAlreadyRegistered,
    /// The operation needs a passkey (a step-up, or creating a wallet) and the user has none.
    #[error("register a passkey first: this operation is approved with one")]
    PasskeyRequired,
    /// A page link was asked for or redeemed for a person who has a passkey: only their own
    /// passkey opens their page (links are the bootstrap of people who have none yet).
    #[error("this person has a passkey: log in on the gateway's page with it")]
    PasskeyLoginRequired,
    /// Revoking the last live passkey would leave nothing that approves a security change (and
    /// would reopen the no-passkey bootstrap to whoever holds an app session).
    #[error("this is your last passkey: add another before you revoke it")]
    LastPasskey,
    /// Signing requests must carry an `Idempotency-Key` header.
    #[error("missing Idempotency-Key header (1 to 255 printable ASCII characters)")]
    IdempotencyKeyRequired,
    /// The key was used with another body for this app and wallet within 24 hours.
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyConflict,
    /// The first request with this key is still being decided; retry shortly.
    #[error("a request with this Idempotency-Key is in progress; retry shortly")]
    IdempotencyInProgress,
    /// Cedar denied the request; the decision is in the body.
    #[error("denied by policy")]
    PolicyDenied,
    /// An admin marked the wallet; its owner must refresh it before it signs again.
    #[error("this wallet must be refreshed by its owner before it signs again")]
    RefreshRequired,
    /// The signing request cannot be signed now (denied, expired, signed, failed, in progress).
    #[error("signing request is {0}")]
    NotSignable(String),
    /// The request needs the owner's passkey confirmation first (the body carries the options).
    #[error("this request needs the wallet owner's passkey confirmation (step-up)")]
    StepUpRequired,
    /// The passkey assertion was made for another request or operation, or by someone else.
    #[error("this passkey assertion is not bound to this request")]
    StepUpMismatch,
    /// The device is not the one that holds this wallet's other share.
    #[error("this device does not hold a share of this wallet")]
    DeviceNotAllowed,
    /// The other party broke the protocol, sent something out of place or left; nothing was
    /// signed or stored.
    #[error("ceremony failed: {0}")]
    CeremonyFailed(String),
    #[error("ceremony timed out")]
    CeremonyTimeout,
    /// The user has no recovery secret yet: wallets are created only once one exists, so that
    /// every share has a backup and a kit from the start (docs/architecture.md §9).
    #[error("set up a recovery secret first (parapet recovery setup)")]
    RecoverySetupRequired,
    /// The recovery secret (its auth key) does not match the user's; counted against the user
    /// and the IP. The answer never says which factor of a recovery was wrong.
    #[error("the recovery secret was not accepted")]
    RecoverySecretRejected,
    /// A recovery was refused: wrong secret or code, or no such user. The answer never says
    /// which.
    #[error("recovery refused")]
    RecoveryRefused,
    /// The user has an open recovery already.
    #[error("a recovery is already open for this user")]
    RecoveryInProgress,
    /// The recovery cannot be completed or cancelled now (its delay has not passed, or it ended).
    #[error("recovery not possible now: {0}")]
    RecoveryNotCompletable(String),
    /// The device's recovery public key is not the user's.
    #[error("the device's recovery key is not this user's")]
    RecoveryKeyMismatch,
    /// A device transfer is not in the state this step needs (not approved yet, already sealed
    /// or received, expired, or refused).
    #[error("device transfer not possible now: {0}")]
    TransferNotReady(String),

    // ---- the gateway's side ----
    #[error("request timed out")]
    Timeout,
    /// Every slot for this kind of costly work (large decodes, recovery-secret hashing) is taken,
    /// and none came free in time: nothing was done; retry shortly (`Retry-After`).
    #[error("busy: too many {0} at once; retry shortly")]
    Busy(&'static str),
    /// The audit log could not commit in time: no decision may be returned (fail closed).
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// The app store could not answer a key lookup: the caller cannot be identified, so the
    /// request is refused (fail closed) and may be retried.
    #[error("app store unavailable")]
    StoreUnavailable,
    /// The HSM did not answer (module error, token removed, session lost): nothing that needs a
    /// key can proceed, and the request may be retried. The detail stays in the log.
    #[error("HSM unavailable: {0}")]
    HsmUnavailable(String),
    /// A trusted OIDC issuer's keys could not be read: the login cannot be checked.
    #[error("identity provider unavailable")]
    IssuerUnavailable,
    #[error("database: {0}")]
    Database(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),

    // ---- the decision's own ----
    /// Decoding or deciding refused (`parapet_decide::Error`): its message and code unchanged.
    #[error(transparent)]
    Decide(#[from] parapet_decide::Error),
}

impl Error {
    /// Stable snake_case code for the JSON body; part of the API contract.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) | Error::PageRefused(_) => "forbidden",
            Error::AppFrozen => "app_frozen",
            Error::NotFound => "not_found",
            Error::SessionInvalid => "session_invalid",
            Error::SessionExpired => "session_expired",
            Error::LoginFailed => "login_failed",
            Error::ConsentRequired => "consent_required",
            Error::IdentityInUse => "identity_in_use",
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded { quota, .. } => quota.code(),
            Error::BodyTooLarge => "body_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::PasskeyCeremonyUnknown => "passkey_ceremony_unknown",
            Error::PasskeyCeremonyExpired => "passkey_ceremony_expired",
            Error::PasskeyRejected => "passkey_rejected",
            Error::PasskeyRevoked => "passkey_revoked",
            Error::PasskeyCloneSuspected => "passkey_clone_suspected",
            Error::PasskeyAlreadyRegistered => "passkey_already_registered",
            Error::PasskeyRequired => "passkey_required",
            Error::PasskeyLoginRequired => "passkey_login_required",
            Error::LastPasskey => "last_passkey",
            Error::IdempotencyKeyRequired => "idempotency_key_required",
            Error::IdempotencyConflict => "idempotency_conflict",
            Error::IdempotencyInProgress => "idempotency_in_progress",
            Error::PolicyDenied => "policy_denied",
            Error::RefreshRequired => "refresh_required",
            Error::NotSignable(_) => "not_signable",
            Error::DeviceNotAllowed => "device_not_allowed",
            Error::StepUpRequired => "step_up_required",
            Error::StepUpMismatch => "step_up_mismatch",
            Error::CeremonyFailed(_) => "ceremony_failed",
            Error::CeremonyTimeout => "ceremony_timeout",
            Error::RecoverySetupRequired => "recovery_setup_required",
            Error::RecoverySecretRejected => "recovery_secret_rejected",
            Error::RecoveryRefused => "recovery_refused",
            Error::RecoveryInProgress => "recovery_in_progress",
            Error::RecoveryNotCompletable(_) => "recovery_not_completable",
            Error::RecoveryKeyMismatch => "recovery_key_mismatch",
            Error::TransferNotReady(_) => "transfer_not_ready",
            Error::Timeout => "timeout",
            Error::Busy(_) => "busy",
            Error::AuditUnavailable => "audit_unavailable",
            Error::StoreUnavailable => "store_unavailable",
            Error::HsmUnavailable(_) => "hsm_unavailable",
            Error::IssuerUnavailable => "issuer_unavailable",
            // One code for every failure of the store, whichever route met it: the caller can
            // only retry, and the detail is in the gateway's log.
            Error::Database(_) => "store_unavailable",
            Error::Config(_) => "configuration_error",
            Error::Internal(_) => "internal",
            Error::Decide(e) => e.code(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized
            | Error::PasskeyRejected
            | Error::PasskeyRevoked
            | Error::PasskeyCloneSuspected
            | Error::SessionInvalid
            | Error::SessionExpired
            | Error::LoginFailed => StatusCode::UNAUTHORIZED,
            Error::PasskeyAlreadyRegistered
            | Error::IdentityInUse
            | Error::IdempotencyConflict
            | Error::IdempotencyInProgress
            | Error::RefreshRequired
            | Error::RecoverySetupRequired
            | Error::RecoveryKeyMismatch
            | Error::RecoveryInProgress
            | Error::RecoveryNotCompletable(_)
            | Error::TransferNotReady(_)
            | Error::LastPasskey
            | Error::NotSignable(_) => StatusCode::CONFLICT,
            Error::Forbidden(_)
            | Error::PageRefused(_)
            | Error::AppFrozen
            | Error::ConsentRequired
            | Error::PasskeyRequired
            | Error::PasskeyLoginRequired
            | Error::PolicyDenied
            | Error::DeviceNotAllowed
            | Error::StepUpRequired
            | Error::StepUpMismatch
            | Error::RecoverySecretRejected
            | Error::RecoveryRefused => StatusCode::FORBIDDEN,
            Error::CeremonyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::RateLimited { .. } | Error::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Timeout
            | Error::Busy(_)
            | Error::AuditUnavailable
            | Error::StoreUnavailable
            | Error::Database(_)
            | Error::HsmUnavailable(_)
            | Error::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::InvalidRequest(_)
            | Error::PasskeyCeremonyUnknown
            | Error::PasskeyCeremonyExpired
            | Error::IdempotencyKeyRequired
            | Error::CeremonyFailed(_) => StatusCode::BAD_REQUEST,
            Error::Decide(e) => match e.kind() {
                DecideKind::Request => StatusCode::BAD_REQUEST,
                DecideKind::PolicySet => StatusCode::UNPROCESSABLE_ENTITY,
                DecideKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The message a caller may see. Server-side errors are summarised; their detail is logged.
    pub fn public_message(&self) -> String {
        match self {
            Error::Config(_) | Error::Internal(_) => {
                "internal error; see the gateway log".to_owned()
            }
            Error::Decide(e) if e.kind() == DecideKind::Internal => {
                "internal error; see the gateway log".to_owned()
            }
            Error::Database(_) => "store unavailable; retry later".to_owned(),
            // Never PKCS#11 codes in a body (docs/architecture.md §10).
            Error::HsmUnavailable(_) => "HSM unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Which quota an [`Error::QuotaExceeded`] ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// New accounts registered on the page from one client IP (IPv6: one /64).
    RegistrationIp,
    /// New accounts registered on the page in the last day, gateway-wide.
    RegistrationDaily,
    /// Key generations started by one device in the last hour.
    KeygenDevice,
    /// Key generations started by all of one person's devices in the last hour.
    KeygenPerson,
}

impl Quota {
    /// The stable code of the error (one per kind of work, so that a client can tell a person
    /// what to do; the message says which quota).
    pub fn code(self) -> &'static str {
        match self {
            Quota::RegistrationIp | Quota::RegistrationDaily => "registration_limited",
            Quota::KeygenDevice | Quota::KeygenPerson => "keygen_quota",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Quota::RegistrationIp => "too many new accounts from this network",
            Quota::RegistrationDaily => "the gateway takes no more new accounts today",
            Quota::KeygenDevice => "this device started too many key generations in the last hour",
            Quota::KeygenPerson => {
                "this person's devices started too many key generations in the last hour"
            }
        }
    }
}

impl Error {
    /// Seconds for `Retry-After`, for the errors that have one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited {
                retry_after_secs, ..
            }
            | Error::QuotaExceeded {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            // Slots come free in milliseconds.
            Error::Busy(_) => Some(1),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_failure_is_one_retryable_answer_without_its_detail() {
        let e = Error::Database("inserting an event: disk I/O error".to_owned());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), Error::StoreUnavailable.code());
        assert!(!e.public_message().contains("disk"));
    }
}
