//! TOTP (RFC 6238, `totp-rs`): a second factor a user can add to their recovery secret. Once
//! active, opening a recovery needs a current code too. The seed is sealed at rest with the
//! personal data key (AAD = `totp:` + user id); every accepted code moves `last_step` forward in
//! one conditional update, so a code (or any older one) is accepted once, even by two gateways at
//! the same moment.

use time::OffsetDateTime;
use totp_rs::{Algorithm, Totp};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::Store;
use crate::audit::event::format_time;
use crate::custody::sealing::PersonalDataKey;
use crate::error::{Error, Result};
use crate::store::db::{db, with_pool};

/// Seed length: 160 bits, RFC 4226's recommendation.
const SEED_BYTES: usize = 20;
/// Codes one step either side of now are accepted (clock drift between phone and gateway).
const SKEW: u16 = 1;
const ISSUER: &str = "Parapet";

fn aad(user: Uuid) -> Vec<u8> {
    format!("totp:{user}").into_bytes()
}

fn totp(seed: &[u8], user: Uuid) -> Result<Totp> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(SKEW)
        .with_step_duration(30)
        .with_secret(seed.to_vec())
        .with_account_name(user.to_string())
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| Error::Internal(format!("TOTP: {e}")))
}

/// Unix seconds of `now` (the gateway's clock, so that tests can move it).
fn unix(now: OffsetDateTime) -> Result<u64> {
    u64::try_from(now.unix_timestamp()).map_err(|_| Error::Internal("clock before 1970".to_owned()))
}

/// The step-up context of a TOTP enrolment: a stolen session alone must not add a factor the
/// user does not hold (it would block their recovery).
pub fn enrol_context(user: Uuid) -> String {
    format!("totp-enrol:{user}")
}

/// The step-up context of removing the TOTP factor: it is a recovery factor, so only the
/// person's passkey takes it away.
pub fn remove_context(user: Uuid) -> String {
    format!("totp-remove:{user}")
}

/// Removes the user's TOTP factor, active or half-enrolled (audited `totp.remove` first: a
/// removal that cannot be recorded is not made). `NotFound` without one.
pub async fn remove(
    audit: &crate::audit::AuditLog,
    user: Uuid,
    app: Option<&str>,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<()> {
    let store = audit.store();
    let Some(was_active) = factor(store, user).await? else {
        return Err(Error::NotFound);
    };
    let mut e = crate::audit::event::AuditEvent::new(
        crate::audit::event::EventKind::Recovery,
        now,
        request_id,
    );
    e.user = Some(user.to_string());
    e.app = app.map(str::to_owned);
    e.action = Some("totp.remove".to_owned());
    e.request = Some(serde_json::json!({ "was_active": was_active }));
    audit.append(e).await?;
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM totp_factors WHERE user_id = $1")
            .bind(user.to_string()).execute(pool).await.map_err(db("removing a TOTP factor"))?;
    });
    Ok(())
}

/// The `otpauth://` URI as an SVG QR code (ECC level M, 4-module quiet zone) for the page.
pub fn qr_svg(uri: &str) -> Result<String> {
    use qrcodegen::{QrCode, QrCodeEcc};
    let qr = QrCode::encode_text(uri, QrCodeEcc::Medium)
        .map_err(|e| Error::Internal(format!("QR code: {e:?}")))?;
    let border = 4;
    let size = qr.size() + border * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                if !path.is_empty() {
                    path.push(' ');
                }
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"0 0 {size} {size}\" stroke=\"none\"><rect width=\"100%\" height=\"100%\" fill=\"#FFFFFF\"/><path d=\"{path}\" fill=\"#000000\"/></svg>"
    ))
}

/// The user's TOTP factor, if any: whether it is active (`false` while being enrolled).
async fn factor(store: &Store, user: Uuid) -> Result<Option<bool>> {
    let row: Option<(bool,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT active FROM totp_factors WHERE user_id = $1")
            .bind(user.to_string()).fetch_optional(pool).await.map_err(db("reading a TOTP factor"))?
    });
    Ok(row.map(|(a,)| a))
}

/// Whether the user has a TOTP factor, active or being enrolled.
pub async fn exists(store: &Store, user: Uuid) -> Result<bool> {
    Ok(factor(store, user).await?.is_some())
}

/// Whether the user has an active TOTP factor.
pub async fn is_active(store: &Store, user: Uuid) -> Result<bool> {
    Ok(factor(store, user).await? == Some(true))
}

/// Starts (or restarts) enrolment: a fresh seed, sealed and stored inactive. Returns the
/// `otpauth://` URI for the authenticator app. An active factor is not replaced.
pub async fn start(
    store: &Store,
    key: &PersonalDataKey,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<Zeroizing<String>> {
    if is_active(store, user).await? {
        return Err(Error::InvalidRequest(
            "TOTP is already active for this user".to_owned(),
        ));
    }
    let seed = Zeroizing::new(rand::random::<[u8; SEED_BYTES]>());
    let uri = Zeroizing::new(
        totp(seed.as_ref(), user)?
            .to_url()
            .map_err(|e| Error::Internal(format!("TOTP URI: {e}")))?,
    );
    let sealed = key.seal_personal(seed.as_ref(), &aad(user))?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO totp_factors (user_id, sealed_seed, active, last_step, created_at) VALUES ($1, $2, $3, -1, $4) ON CONFLICT (user_id) DO UPDATE SET sealed_seed = excluded.sealed_seed, last_step = -1, created_at = excluded.created_at WHERE totp_factors.active = $3")
            .bind(user.to_string()).bind(sealed.as_slice()).bind(false).bind(format_time(now))
            .execute(pool).await.map_err(db("storing a TOTP factor"))?;
    });
    Ok(uri)
}

/// Checks `code` against the user's factor (active, or being enrolled when `enrolling`) and
/// consumes its time step. False for a wrong code, a replayed one, or no factor.
async fn consume(
    store: &Store,
    key: &PersonalDataKey,
    user: Uuid,
    code: &str,
    enrolling: bool,
    now: OffsetDateTime,
) -> Result<bool> {
    let row: Option<(Vec<u8>, bool)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT sealed_seed, active FROM totp_factors WHERE user_id = $1")
            .bind(user.to_string()).fetch_optional(pool).await.map_err(db("reading a TOTP factor"))?
    });
    let Some((sealed, active)) = row else {
        return Ok(false);
    };
    if active == enrolling {
        return Ok(false);
    }
    let seed = key.open_personal(&sealed, &aad(user))?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(false);
    }
    let Some(step) = totp(&seed, user)?.check(&code, unix(now)?) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(|_| Error::Internal("TOTP step".to_owned()))?;
    let moved = with_pool!(store, pool => {
        sqlx::query("UPDATE totp_factors SET last_step = $2, active = $3, activated_at = COALESCE(activated_at, $4) WHERE user_id = $1 AND last_step < $2")
            .bind(user.to_string()).bind(step).bind(true).bind(format_time(now))
            .execute(pool).await.map_err(db("using a TOTP code"))?.rows_affected()
    });
    Ok(moved == 1)
}

/// Finishes enrolment with a first code from the authenticator app; the factor is then active.
pub async fn confirm(
    store: &Store,
    key: &PersonalDataKey,
    user: Uuid,
    code: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    consume(store, key, user, code, true, now).await
}

/// Accepts a current code of the user's active factor once.
pub async fn verify(
    store: &Store,
    key: &PersonalDataKey,
    user: Uuid,
    code: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    consume(store, key, user, code, false, now).await
}
