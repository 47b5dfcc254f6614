//! What the gateway keeps of a user's recovery secret (docs/architecture.md §9): an Argon2id
//! verifier of the auth key the secret derives, and the X25519 public key backups are encrypted to.
//! Never the secret, never the auth key, never anything that decrypts a backup. Also the backups
//! themselves: each wallet's device share, HPKE-encrypted by the device to that public key, one
//! per (wallet, epoch), released only by a completed recovery.

pub mod approval;
pub mod flow;
pub mod kit_export;

use argon2::{Algorithm, Argon2, Params, Version};
use parapet_mpc::recovery::RecoveryPublicKey;
use parapet_mpc::recovery::envelope::{self, Contents};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::store::db::{BeginWrite, db, with_pool};

/// Argon2id cost of the verifier. The auth key is 256 random bits, so the verifier's cost is not
/// what stops guessing (the key's entropy is); it keeps a stolen table from being a cheap
/// oracle, and stays low enough that the per-user and per-IP limits, not the CPU, bound an
/// attacker.
const VERIFIER_MEMORY_KIB: u32 = 19 * 1024;
const VERIFIER_PASSES: u32 = 2;

/// Verifier hashes computed at once, gateway-wide. Each holds [`VERIFIER_MEMORY_KIB`] for tens of
/// milliseconds, and the routes that hash are open to strangers (`POST /v1/recovery`): without a
/// bound, a burst of attempts holds memory and threads in proportion to its size. Beyond these
/// slots a request waits up to [`HASHING_WAIT`], then answers `503 busy` having hashed nothing.
const HASHING_SLOTS: usize = 2;
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The slots every verifier hash takes one of (process-wide, like the memory they bound).
fn hashing() -> &'static crate::service::offload::Offload {
    static POOL: std::sync::LazyLock<crate::service::offload::Offload> =
        std::sync::LazyLock::new(|| {
            crate::service::offload::Offload::new(
                "recovery secrets being checked",
                HASHING_SLOTS,
                HASHING_WAIT,
            )
        });
    &POOL
}

/// A backup envelope is a share (a few KiB) plus HPKE overhead; anything bigger is not one.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// A user's stored recovery material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecovery {
    pub user_id: Uuid,
    pub public_key: RecoveryPublicKey,
    verifier: String,
    pub created_at: String,
    /// The salt the secret's keys were derived with; `None` for setups made before salts, which
    /// used the user id.
    salt: Option<Salt>,
}

impl StoredRecovery {
    /// What a device derives this person's keys with: the salt, or the user id for setups made
    /// before salts existed.
    #[must_use]
    pub fn kdf_salt(&self) -> String {
        self.salt
            .as_ref()
            .map_or_else(|| self.user_id.to_string(), |s| s.as_str().to_owned())
    }
}

/// A recovery salt: `rs_` and 32 lower-case hex digits (128 random bits, chosen by the device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt(String);

impl Salt {
    /// Parses a salt as a device sends it; anything else is a 400.
    pub fn parse(text: &str) -> Result<Salt> {
        let ok = text.strip_prefix("rs_").is_some_and(|h| {
            h.len() == 32
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Salt(text.to_owned()))
        } else {
            Err(Error::InvalidRequest(
                "salt is rs_ followed by 32 lower-case hex digits".to_owned(),
            ))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn argon(m_kib: u32, t: u32) -> Result<Argon2<'static>> {
    let params = Params::new(m_kib, t, 1, Some(32))
        .map_err(|e| Error::Internal(format!("verifier parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// `argon2id$m$t$salt$hash` (hex) for `auth_key`, computed on the blocking pool.
async fn make_verifier(auth_key: Zeroizing<[u8; 32]>) -> Result<String> {
    hashing()
        .run(move || {
            let salt: [u8; 16] = rand::random();
            let mut hash = [0u8; 32];
            argon(VERIFIER_MEMORY_KIB, VERIFIER_PASSES)?
                .hash_password_into(auth_key.as_ref(), &salt, &mut hash)
                .map_err(|e| Error::Internal(format!("verifier: {e}")))?;
            Ok(format!(
                "argon2id${VERIFIER_MEMORY_KIB}${VERIFIER_PASSES}${}${}",
                hex::encode(salt),
                hex::encode(hash)
            ))
        })
        .await?
}

impl StoredRecovery {
    /// Whether `auth_key` matches the verifier (constant-time comparison of the hashes).
    pub async fn matches(&self, auth_key: Zeroizing<[u8; 32]>) -> Result<bool> {
        let verifier = self.verifier.clone();
        hashing()
            .run(move || {
                let parts: Vec<&str> = verifier.split('$').collect();
                let [alg, m, t, salt, hash] = parts.as_slice() else {
                    return Err(Error::Internal("stored verifier is malformed".to_owned()));
                };
                let bad = || Error::Internal("stored verifier is malformed".to_owned());
                if *alg != "argon2id" {
                    return Err(bad());
                }
                let (m, t): (u32, u32) =
                    (m.parse().map_err(|_| bad())?, t.parse().map_err(|_| bad())?);
                let salt = hex::decode(salt).map_err(|_| bad())?;
                let expected = hex::decode(hash).map_err(|_| bad())?;
                let mut got = [0u8; 32];
                argon(m, t)?
                    .hash_password_into(auth_key.as_ref(), &salt, &mut got)
                    .map_err(|e| Error::Internal(format!("verifier: {e}")))?;
                Ok(bool::from(got.as_slice().ct_eq(expected.as_slice())))
            })
            .await?
    }
}

/// The failure limiter's key for recovery attempts on `user`: setup, check and opening a
/// recovery share one budget.
pub fn limiter_key(user: Uuid) -> String {
    format!("recovery:{user}")
}

/// The user's recovery material, if they have set it up.
pub async fn get(store: &Store, user: Uuid) -> Result<Option<StoredRecovery>> {
    let row: Option<(String, String, String, Option<String>)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT public_key, verifier, created_at, salt FROM recovery_keys WHERE user_id = $1")
            .bind(user.to_string()).fetch_optional(pool).await.map_err(db("reading recovery keys"))?
    });
    row.map(|(public_key, verifier, created_at, salt)| {
        Ok(StoredRecovery {
            user_id: user,
            public_key: RecoveryPublicKey::from_hex(&public_key)
                .map_err(|e| Error::Database(e.to_string()))?,
            verifier,
            created_at,
            salt: salt.map(Salt),
        })
    })
    .transpose()
}

/// The person whose keys derive with `salt`: a stored salt, or (for setups made before salts
/// existed) a user id whose setup has none. `None` when nobody's does.
pub async fn user_by_salt(store: &Store, salt: &str) -> Result<Option<Uuid>> {
    if let Ok(user) = Uuid::parse_str(salt) {
        let legacy: Option<(String,)> = with_pool!(store, pool => {
            sqlx::query_as("SELECT user_id FROM recovery_keys WHERE user_id = $1 AND salt IS NULL")
                .bind(user.to_string()).fetch_optional(pool).await.map_err(db("reading recovery keys"))?
        });
        return Ok(legacy.map(|_| user));
    }
    let Ok(salt) = Salt::parse(salt) else {
        return Ok(None);
    };
    let row: Option<(String,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT user_id FROM recovery_keys WHERE salt = $1")
            .bind(salt.as_str()).fetch_optional(pool).await.map_err(db("reading recovery keys"))?
    });
    row.map(|(u,)| Uuid::parse_str(&u).map_err(|e| Error::Database(e.to_string())))
        .transpose()
}

/// The user's recovery public key, or `recovery_setup_required`.
pub async fn public_key_of(store: &Store, user: Uuid) -> Result<RecoveryPublicKey> {
    get(store, user)
        .await?
        .map(|r| r.public_key)
        .ok_or(Error::RecoverySetupRequired)
}

/// Parses a device-supplied envelope (hex) with the size checks every stored one gets.
pub fn parse_envelope(hex_text: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(hex_text.strip_prefix("0x").unwrap_or(hex_text))
        .map_err(|_| Error::InvalidRequest("a backup is hex".to_owned()))?;
    if bytes.len() <= 48 || bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(Error::InvalidRequest(
            "a backup is an HPKE envelope of a key share".to_owned(),
        ));
    }
    Ok(bytes)
}

/// One wallet's backup as a device sends it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBackup {
    pub wallet: String,
    pub epoch: i64,
    /// HPKE envelope of the device's share (hex).
    pub device_share: String,
}

pub use parapet_api::recovery::KitEnvelope;

/// `parapet recovery setup` on a device: the first time for a user, stores the verifier and the
/// public key; after that, only with the same secret (the auth key must match the verifier, and
/// a wrong one is `recovery_secret_rejected`). Either way the device hands over the backups of
/// every wallet it holds, at the wallets' current epochs, and gets back those wallets' kits, so
/// a user whose wallets predate their secret, or a device that lost its kits, is made whole.
#[allow(
    clippy::too_many_arguments,
    reason = "the device, what its secret derived, its backups, the request"
)]
pub async fn enrol(
    cosigner: &crate::cosign::Cosigner,
    device: &crate::accounts::devices::Device,
    public_key: &RecoveryPublicKey,
    auth_key: Zeroizing<[u8; 32]>,
    salt: Option<&Salt>,
    backups: &[DeviceBackup],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Vec<KitEnvelope>> {
    let store = cosigner.audit.store();
    let existing = get(store, device.user_id).await?;
    let first = match &existing {
        None => true,
        Some(stored) => {
            if !stored.matches(auth_key.clone()).await? || stored.public_key != *public_key {
                return Err(Error::RecoverySecretRejected);
            }
            false
        }
    };
    let held = crate::accounts::backup_devices::held_by(store, device).await?;
    let mut sealed_backups = Vec::with_capacity(held.len());
    for b in backups {
        let address = crate::accounts::wallets::normalize_address(&b.wallet)?;
        if !held
            .iter()
            .any(|w| w.address == address && w.epoch == b.epoch)
        {
            return Err(Error::InvalidRequest(format!(
                "{address} at epoch {} is not a wallet this device holds at its current epoch",
                b.epoch
            )));
        }
        sealed_backups.push((address, b.epoch, parse_envelope(&b.device_share)?));
    }
    let mut kits = Vec::with_capacity(held.len());
    for w in &held {
        if !sealed_backups.iter().any(|(a, _, _)| *a == w.address) {
            return Err(Error::InvalidRequest(format!(
                "the backup of {} is missing: send one for every wallet this device holds",
                w.address
            )));
        }
        let kit = seal_gateway_share(cosigner, w, public_key).await?;
        kits.push(KitEnvelope {
            wallet: w.address.clone(),
            epoch: w.epoch,
            gateway_share: hex::encode(kit),
        });
    }
    let verifier = if first {
        Some(make_verifier(auth_key).await?)
    } else {
        None
    };
    let mut e = AuditEvent::new(EventKind::Recovery, now, request_id);
    e.user = Some(device.user_id.to_string());
    e.action = Some("recovery.setup".to_owned());
    e.request = Some(serde_json::json!({
        "device_id": device.device_id,
        "first": first,
        "public_key": public_key.to_hex(),
        "wallets": held.iter().map(|w| serde_json::json!({"address": w.address, "epoch": w.epoch})).collect::<Vec<_>>(),
    }));
    cosigner.audit.append(e).await?;
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("storing recovery keys"))?;
        if let Some(verifier) = &verifier {
            let inserted = sqlx::query("INSERT INTO recovery_keys (user_id, public_key, verifier, created_at, salt) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                .bind(device.user_id.to_string()).bind(public_key.to_hex()).bind(verifier.as_str()).bind(format_time(now))
                .bind(salt.map(Salt::as_str))
                .execute(&mut *tx).await.map_err(db("storing recovery keys"))?.rows_affected();
            if inserted != 1 {
                // Another device set one up at the same moment: this one must use that secret.
                return Err(Error::RecoverySecretRejected);
            }
        }
        for (wallet, epoch, envelope) in &sealed_backups {
            sqlx::query("DELETE FROM share_backups WHERE wallet = $1 AND epoch = $2")
                .bind(wallet.as_str()).bind(*epoch)
                .execute(&mut *tx).await.map_err(db("storing a backup"))?;
            sqlx::query("INSERT INTO share_backups (wallet, epoch, sealed, created_at) VALUES ($1, $2, $3, $4)")
                .bind(wallet.as_str()).bind(*epoch).bind(envelope.as_slice()).bind(format_time(now))
                .execute(&mut *tx).await.map_err(db("storing a backup"))?;
        }
        tx.commit().await.map_err(db("storing recovery keys"))?;
    });
    Ok(kits)
}

/// The epochs of the backups the gateway holds for `wallet`.
/// The gateway's current share of `w`, opened by custody for this moment only and sealed to the
/// user's recovery key: the gateway half of a backup kit.
pub(crate) async fn seal_gateway_share(
    cosigner: &crate::cosign::Cosigner,
    w: &crate::accounts::wallets::StoredWallet,
    public_key: &RecoveryPublicKey,
) -> Result<Vec<u8>> {
    let store = cosigner.audit.store();
    let address = crate::service::pipeline::parse_address(&w.address)?.into_array();
    let epoch = u64::try_from(w.epoch).map_err(|_| Error::Internal("negative epoch".to_owned()))?;
    let sealed = crate::accounts::wallets::sealed_share(store, &w.address, w.epoch).await?;
    let share = crate::cosign::open(
        &cosigner.custody,
        sealed,
        parapet_custody::share_aad(&address, epoch),
    )
    .await?;
    let kit = envelope::seal(
        public_key,
        Contents::GatewayShare,
        &address,
        w.epoch,
        &share,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    drop(share);
    Ok(kit)
}

pub async fn backup_epochs(store: &Store, wallet: &str) -> Result<Vec<i64>> {
    let rows: Vec<(i64,)> = with_pool!(store, pool => {
        sqlx::query_as("SELECT epoch FROM share_backups WHERE wallet = $1 ORDER BY epoch")
            .bind(wallet).fetch_all(pool).await.map_err(db("reading backups"))?
    });
    Ok(rows.into_iter().map(|(e,)| e).collect())
}
