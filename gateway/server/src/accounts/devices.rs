//! Paired devices (docs/architecture.md §2): the `parapet wallet …` client that holds a user's key
//! shares. A logged-in user makes a one-time pairing code on the page; the device trades it for a
//! device token (`pd_` + 256 random bits, stored hashed) that it keeps in its encrypted file and
//! sends as `Authorization: Device <token>` — in a header or a first WebSocket message, never in a
//! URL. Pairing and revocation are audited before they take effect.

use std::time::Duration;

use sqlx::Row;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::apps::{Auditor, key_hash};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time, parse_time};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, db, with_pool};

/// How long a pairing code can be used.
pub const PAIRING_TTL: Duration = Duration::from_secs(600);

/// A device as its owner and operators see it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub device_id: String,
    pub user_id: Uuid,
    pub name: String,
    pub created_at: String,
    pub last_seen: Option<String>,
    pub revoked_at: Option<String>,
}

impl Device {
    /// The device as people, apps and devices read it.
    pub fn view(&self) -> parapet_api::devices::Device {
        parapet_api::devices::Device {
            device_id: self.device_id.clone(),
            user_id: self.user_id.to_string(),
            name: self.name.clone(),
            created_at: self.created_at.clone(),
            last_seen: self.last_seen.clone(),
            revoked_at: self.revoked_at.clone(),
        }
    }
}

/// Crockford base32 without I, L, O, U: easy to read out and type.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A pairing code: 12 symbols (60 bits) shown as `XXXX-XXXX-XXXX`. Guessing is bounded by the
/// per-IP failure limit and the 10-minute lifetime.
fn new_pairing_code() -> String {
    let bytes: [u8; 12] = rand::random();
    let symbols: Vec<char> = bytes
        .iter()
        .filter_map(|b| {
            CODE_ALPHABET
                .get(usize::from(b & 31))
                .map(|c| char::from(*c))
        })
        .collect();
    symbols
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The code as typed (any case, with or without dashes or spaces), in its stored form.
fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub(crate) fn new_device_token() -> String {
    format!("pd_{}", hex::encode(rand::random::<[u8; 32]>()))
}

pub(crate) fn new_device_id() -> String {
    format!("dev_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The token of an `Authorization: Device <token>` header value.
pub fn token_from_header(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("device")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn event(action: &str, device: &Device, request_id: &str, now: OffsetDateTime) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Device, now, request_id);
    e.user = Some(device.user_id.to_string());
    e.action = Some(action.to_owned());
    e.request = Some(serde_json::json!({"device_id": device.device_id, "name": device.name}));
    e
}

/// The step-up context of making a pairing code: a new device can act for the person, so once
/// they have a passkey only that passkey lets one be paired.
pub fn pair_context(user: Uuid) -> String {
    format!("device-pair:{user}")
}

/// The step-up context of removing a device (removing the only one locks the wallets until a
/// recovery, so an app's session alone cannot do it).
pub fn revoke_context(device_id: &str) -> String {
    format!("device-revoke:{device_id}")
}

/// Makes a pairing code for `user`; returns it (the only time it exists in clear) and when it
/// stops working.
pub async fn issue_pairing_code(
    store: &Store,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<(String, OffsetDateTime)> {
    let code = new_pairing_code();
    let expires = now + PAIRING_TTL;
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM device_pairings WHERE expires_at < $1")
            .bind(format_time(now)).execute(pool).await.map_err(db("sweeping pairing codes"))?;
        sqlx::query("INSERT INTO device_pairings (code_hash, user_id, expires_at) VALUES ($1, $2, $3)")
            .bind(key_hash(&normalize_code(&code)).as_slice())
            .bind(user.to_string())
            .bind(format_time(expires))
            .execute(pool).await.map_err(db("storing a pairing code"))?;
    });
    Ok((code, expires))
}

/// Pairs a device with the code's user: consumes the code (any attempt burns it), audits
/// `device.pair`, stores the device. `LoginFailed` for an unknown, used or expired code or a
/// disabled user. Returns the device and its token (the only time the token exists in clear).
pub async fn pair(
    store: &Store,
    auditor: Auditor<'_>,
    code: &str,
    name: &str,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<(Device, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "device name must be 1 to 100 printable characters".to_owned(),
        ));
    }
    let hash = key_hash(&normalize_code(code));
    let row = with_pool!(store, pool => {
        sqlx::query("DELETE FROM device_pairings WHERE code_hash = $1 RETURNING user_id, expires_at")
            .bind(hash.as_slice()).fetch_optional(pool).await.map_err(db("consuming a pairing code"))?
            .map(|r| Ok::<_, sqlx::Error>((r.try_get::<String, _>("user_id")?, r.try_get::<String, _>("expires_at")?)))
            .transpose().map_err(db("reading a pairing code"))?
    });
    let Some((user, expires)) = row else {
        return Err(Error::LoginFailed);
    };
    let expires = parse_time(&expires).map_err(|_| Error::LoginFailed)?;
    let user = Uuid::parse_str(&user).map_err(|_| Error::LoginFailed)?;
    if now >= expires
        || crate::accounts::users::store::user_disabled(store, user).await? != Some(false)
    {
        return Err(Error::LoginFailed);
    }
    let token = new_device_token();
    let device = Device {
        device_id: new_device_id(),
        user_id: user,
        name: name.to_owned(),
        created_at: format_time(now),
        last_seen: None,
        revoked_at: None,
    };
    auditor
        .record(event("device.pair", &device, request_id, now))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(device.device_id.as_str())
            .bind(user.to_string())
            .bind(device.name.as_str())
            .bind(key_hash(&token).as_slice())
            .bind(device.created_at.as_str())
            .execute(pool).await.map_err(db("storing a device"))?;
    });
    Ok((device, token))
}

/// The columns every device read selects (a macro so that statements stay `&'static str`).
macro_rules! device_columns {
    () => {
        "d.id AS id, d.user_id AS user_id, d.name AS name, d.created_at AS created_at, d.last_seen AS last_seen, d.revoked_at AS revoked_at"
    };
}

fn device_of(r: &impl crate::store::db::RowLike) -> std::result::Result<Device, sqlx::Error> {
    Ok(Device {
        device_id: r.text("id")?,
        user_id: Uuid::parse_str(&r.text("user_id")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        name: r.text("name")?,
        created_at: r.text("created_at")?,
        last_seen: r.opt_text("last_seen")?,
        revoked_at: r.opt_text("revoked_at")?,
    })
}

/// The live device `token` names, whose user is not disabled; `Unauthorized` otherwise. Notes
/// the use.
pub async fn authenticate(store: &Store, token: &str, now: OffsetDateTime) -> Result<Device> {
    let hash = key_hash(token);
    const SQL: &str = concat!(
        "SELECT ",
        device_columns!(),
        ", d.token_hash AS token_hash, u.disabled AS disabled FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = $1"
    );
    let found = with_pool!(store, pool => {
        let row = sqlx::query(SQL).bind(hash.as_slice()).fetch_optional(pool).await
            .map_err(db("reading a device"))?;
        match row {
            None => None,
            Some(r) => {
                let stored: Vec<u8> = r.try_get("token_hash").map_err(db("reading a device"))?;
                let disabled: bool = r.try_get("disabled").map_err(db("reading a device"))?;
                let d = device_of(&r).map_err(db("reading a device"))?;
                bool::from(stored.as_slice().ct_eq(hash.as_slice())).then_some((d, disabled))
            }
        }
    });
    let Some((device, disabled)) = found else {
        return Err(Error::Unauthorized);
    };
    if disabled || device.revoked_at.is_some() {
        return Err(Error::Unauthorized);
    }
    with_pool!(store, pool => {
        sqlx::query("UPDATE devices SET last_seen = $2 WHERE id = $1")
            .bind(device.device_id.as_str()).bind(format_time(now)).execute(pool).await
            .map_err(db("noting a device's use"))?;
    });
    Ok(device)
}

/// The user's devices, revoked ones included, oldest first.
pub async fn list(store: &Store, user: Uuid) -> Result<Vec<Device>> {
    const SQL: &str = concat!(
        "SELECT ",
        device_columns!(),
        " FROM devices d WHERE d.user_id = $1 ORDER BY d.created_at, d.id"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(user.to_string()).fetch_all(pool).await
            .map_err(db("listing devices"))?;
        Ok(rows.iter().map(device_of).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing devices"))?)
    })
}

/// `user`'s live (not revoked) device `device_id`; `NotFound` otherwise.
pub async fn live_of(store: &Store, user: Uuid, device_id: &str) -> Result<Device> {
    list(store, user)
        .await?
        .into_iter()
        .find(|d| d.device_id == device_id && d.revoked_at.is_none())
        .ok_or(Error::NotFound)
}

/// Revokes one of `user`'s live devices (audited first); its token stops working at once.
/// `NotFound` when the user has no such live device.
pub async fn revoke(
    store: &Store,
    auditor: Auditor<'_>,
    user: Uuid,
    device_id: &str,
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Device> {
    let mut device = live_of(store, user, device_id).await?;
    // It still holds the shares of these wallets: each must be refreshed before it signs again.
    let held: Vec<(String,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT address FROM wallets WHERE owner = $2 AND (device_id = $1 OR address IN (SELECT address FROM wallet_devices WHERE device_id = $1)) ORDER BY address")
            .bind(device_id).bind(user.to_string()).fetch_all(pool).await.map_err(db("revoking a device"))?
    });
    let held: Vec<String> = held.into_iter().map(|(a,)| a).collect();
    let mut e = event("device.revoke", &device, request_id, now);
    if let Some(serde_json::Value::Object(o)) = e.request.as_mut() {
        o.insert("refresh_required".to_owned(), serde_json::json!(held));
    }
    auditor.record(e).await?;
    device.revoked_at = Some(format_time(now));
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("revoking a device"))?;
        sqlx::query("UPDATE devices SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(device_id).bind(user.to_string()).bind(device.revoked_at.as_deref())
            .execute(&mut *tx).await.map_err(db("revoking a device"))?;
        for address in &held {
            sqlx::query("UPDATE wallets SET refresh_required = $2 WHERE address = $1")
                .bind(address.as_str()).bind(true)
                .execute(&mut *tx).await.map_err(db("revoking a device"))?;
        }
        sqlx::query("DELETE FROM wallet_devices WHERE device_id = $1")
            .bind(device_id).execute(&mut *tx).await.map_err(db("revoking a device"))?;
        sqlx::query("UPDATE device_transfers SET state = 'refused', sealed = NULL WHERE (to_device = $1 OR from_device = $1) AND state IN ('waiting', 'approved', 'sealed')")
            .bind(device_id).execute(&mut *tx).await.map_err(db("revoking a device"))?;
        tx.commit().await.map_err(db("revoking a device"))?;
    });
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_however_they_are_typed() {
        let c = new_pairing_code();
        assert_eq!(c.len(), 14, "{c}");
        assert_eq!(
            normalize_code(&c.to_lowercase().replace('-', " ")),
            normalize_code(&c)
        );
        assert!(
            normalize_code(&c)
                .bytes()
                .all(|b| CODE_ALPHABET.contains(&b))
        );
    }

    #[test]
    fn only_the_device_scheme_carries_a_token() {
        assert_eq!(token_from_header("Device pd_x"), Some("pd_x"));
        assert_eq!(token_from_header("device  pd_x "), Some("pd_x"));
        assert_eq!(token_from_header("Bearer pd_x"), None);
        assert_eq!(token_from_header("Device "), None);
    }
}
