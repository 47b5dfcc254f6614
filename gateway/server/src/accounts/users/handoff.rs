//! The app hand-off (docs/architecture.md §2): after a passkey login on the gateway's page that
//! began for an app, the page sends the user back to one of the app's registered redirect URIs with
//! a one-time code; the app's backend exchanges it, with its key, for a session of its own.
//!
//! A code is 256 random bits, stored hashed, valid for [`CODE_TTL`], bound to the app, the user,
//! the exact redirect URI and how the user logged in. The first exchange attempt deletes it,
//! whatever the outcome, so a code is never good twice.

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::key_hash;
use crate::audit::Store;
use crate::audit::event::{format_time, parse_time};
use crate::error::{Error, Result};
use crate::store::db::{db, with_pool};

/// The redirect URI link codes are bound to: they are redeemed by the gateway's own page, never
/// sent to an app.
pub const PAGE_LINK: &str = "parapet:page-link";

/// How long a login code can be exchanged.
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// What a code carries over to the app's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrant {
    pub user: Uuid,
    pub method: String,
    pub user_verified: bool,
    pub credential_id: Option<String>,
}

/// A fresh code: `pc_` + 256 random bits in hex.
fn new_code() -> String {
    format!("pc_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Stores a code for `app_id` and `redirect_uri` (already checked against the app's list).
pub async fn issue_code(
    store: &Store,
    app_id: &str,
    redirect_uri: &str,
    grant: &CodeGrant,
    now: OffsetDateTime,
) -> Result<String> {
    let code = new_code();
    let hash = key_hash(&code);
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO login_codes (code_hash, app_id, user_id, redirect_uri, method, user_verified, credential_id, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(hash.as_slice())
            .bind(app_id)
            .bind(grant.user.to_string())
            .bind(redirect_uri)
            .bind(grant.method.as_str())
            .bind(grant.user_verified)
            .bind(grant.credential_id.as_deref())
            .bind(format_time(now + CODE_TTL))
            .execute(pool)
            .await
            .map_err(db("storing a login code"))?;
    });
    Ok(code)
}

/// Consumes `code`: it must exist, be unexpired, belong to `app_id` and name `redirect_uri`
/// exactly. Every failure is the same [`Error::LoginFailed`]; the code is gone either way.
pub async fn consume_code(
    store: &Store,
    app_id: &str,
    code: &str,
    redirect_uri: &str,
    now: OffsetDateTime,
) -> Result<CodeGrant> {
    let hash = key_hash(code);
    let row = with_pool!(store, pool => {
        let row = sqlx::query("DELETE FROM login_codes WHERE code_hash = $1 RETURNING app_id, user_id, redirect_uri, method, user_verified, credential_id, expires_at")
            .bind(hash.as_slice())
            .fetch_optional(pool)
            .await
            .map_err(db("consuming a login code"))?;
        match row {
            None => None,
            Some(r) => {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(db("reading a login code"));
                Some((
                    get("app_id")?,
                    get("user_id")?,
                    get("redirect_uri")?,
                    get("method")?,
                    r.try_get::<bool, _>("user_verified").map_err(db("reading a login code"))?,
                    r.try_get::<Option<String>, _>("credential_id").map_err(db("reading a login code"))?,
                    get("expires_at")?,
                ))
            }
        }
    });
    let Some((app, user, uri, method, user_verified, credential_id, expires)) = row else {
        return Err(Error::LoginFailed);
    };
    let expires = parse_time(&expires).map_err(|_| Error::LoginFailed)?;
    if app != app_id || uri != redirect_uri || now >= expires {
        return Err(Error::LoginFailed);
    }
    let user = Uuid::parse_str(&user).map_err(|_| Error::LoginFailed)?;
    Ok(CodeGrant {
        user,
        method,
        user_verified,
        credential_id,
    })
}

/// The user a live, unexpired code of `app_id` for `redirect_uri` names, without consuming it:
/// the page asks the person "log in as …?" before it redeems a page link. Any other code (made
/// up, expired, another app's) is [`Error::LoginFailed`].
pub async fn peek_code(
    store: &Store,
    app_id: &str,
    code: &str,
    redirect_uri: &str,
    now: OffsetDateTime,
) -> Result<Uuid> {
    let hash = key_hash(code);
    let row = with_pool!(store, pool => {
        sqlx::query("SELECT app_id, user_id, redirect_uri, expires_at FROM login_codes WHERE code_hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(pool)
            .await
            .map_err(db("reading a login code"))?
            .map(|r| -> Result<[String; 4]> {
                let get = |c: &str| r.try_get::<String, _>(c).map_err(db("reading a login code"));
                Ok([get("app_id")?, get("user_id")?, get("redirect_uri")?, get("expires_at")?])
            })
            .transpose()?
    });
    let Some([app, user, uri, expires]) = row else {
        return Err(Error::LoginFailed);
    };
    let live = parse_time(&expires).is_ok_and(|e| now < e);
    if app != app_id || uri != redirect_uri || !live {
        return Err(Error::LoginFailed);
    }
    Uuid::parse_str(&user).map_err(|_| Error::LoginFailed)
}
