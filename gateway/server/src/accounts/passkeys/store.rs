//! The passkey tables (migration 0006) over SQLite and PostgreSQL with one set of portable
//! statements.

use crate::audit::Store;
use crate::error::Result;
use crate::store::db::{RowLike, db, with_pool};

/// A ceremony row as taken out of the table.
#[derive(Debug, Clone)]
pub(crate) struct CeremonyRow {
    pub kind: String,
    pub user_id: String,
    pub state: String,
    pub expires_at: String,
}

/// A credential row.
#[derive(Debug, Clone)]
pub(crate) struct CredentialRow {
    pub credential_id: String,
    pub user_id: String,
    pub passkey: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

macro_rules! credential_columns {
    () => {
        "credential_id, user_id, passkey, sign_count, backup_eligible, backup_state, created_at, last_used_at, revoked_at"
    };
}

fn row_to_credential(r: &impl RowLike) -> std::result::Result<CredentialRow, sqlx::Error> {
    Ok(CredentialRow {
        credential_id: r.text("credential_id")?,
        user_id: r.text("user_id")?,
        passkey: r.text("passkey")?,
        sign_count: r.int("sign_count")?,
        backup_eligible: r.flag("backup_eligible")?,
        backup_state: r.flag("backup_state")?,
        created_at: r.text("created_at")?,
        last_used_at: r.opt_text("last_used_at")?,
        revoked_at: r.opt_text("revoked_at")?,
    })
}

pub(crate) async fn insert_ceremony(
    store: &Store,
    id_hash: &str,
    kind: &str,
    user_id: &str,
    state: &str,
    created_at: &str,
    expires_at: &str,
) -> Result<()> {
    with_pool!(store, pool => {
        sqlx::query("INSERT INTO passkey_ceremonies (id_hash, kind, user_id, state, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id_hash)
            .bind(kind)
            .bind(user_id)
            .bind(state)
            .bind(created_at)
            .bind(expires_at)
            .execute(pool)
            .await
            .map_err(db("storing a passkey ceremony"))?;
    });
    Ok(())
}

/// Deletes ceremonies that expired before `now` (fixed-width RFC 3339 text compares as time).
pub(crate) async fn sweep_ceremonies(store: &Store, now: &str) -> Result<()> {
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at < $1")
            .bind(now)
            .execute(pool)
            .await
            .map_err(db("sweeping passkey ceremonies"))?;
    });
    Ok(())
}

/// Takes a ceremony out of the table in one statement: whoever deletes it owns it, so two
/// concurrent finish attempts cannot both see it.
pub(crate) async fn take_ceremony(store: &Store, id_hash: &str) -> Result<Option<CeremonyRow>> {
    const SQL: &str = "DELETE FROM passkey_ceremonies WHERE id_hash = $1 RETURNING kind, user_id, state, expires_at";
    with_pool!(store, pool => {
        let row = sqlx::query(SQL)
            .bind(id_hash)
            .fetch_optional(pool)
            .await
            .map_err(db("taking a passkey ceremony"))?;
        let Some(row) = row else { return Ok(None) };
        let get = || -> std::result::Result<CeremonyRow, sqlx::Error> {
            Ok(CeremonyRow {
                kind: row.text("kind")?,
                user_id: row.text("user_id")?,
                state: row.text("state")?,
                expires_at: row.text("expires_at")?,
            })
        };
        Ok(get().map(Some).map_err(db("taking a passkey ceremony"))?)
    })
}

pub(crate) async fn credentials_of(store: &Store, user_id: &str) -> Result<Vec<CredentialRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        credential_columns!(),
        " FROM passkey_credentials WHERE user_id = $1 ORDER BY created_at, credential_id"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(user_id).fetch_all(pool).await.map_err(db("listing passkeys"))?;
        Ok(rows.iter().map(row_to_credential).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing passkeys"))?)
    })
}

/// Whether `user_id` has at least one passkey that is not revoked.
pub(crate) async fn has_live(store: &Store, user_id: &str) -> Result<bool> {
    with_pool!(store, pool => {
        let row = sqlx::query("SELECT 1 FROM passkey_credentials WHERE user_id = $1 AND revoked_at IS NULL LIMIT 1")
            .bind(user_id).fetch_optional(pool).await.map_err(db("looking for a live passkey"))?;
        Ok(row.is_some())
    })
}

pub(crate) async fn credential(
    store: &Store,
    credential_id: &str,
) -> Result<Option<CredentialRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        credential_columns!(),
        " FROM passkey_credentials WHERE credential_id = $1"
    );
    with_pool!(store, pool => {
        let row = sqlx::query(SQL).bind(credential_id).fetch_optional(pool).await.map_err(db("reading a passkey"))?;
        Ok(row.as_ref().map(row_to_credential).transpose().map_err(db("reading a passkey"))?)
    })
}

/// Inserts a new credential; `false` when that credential id is already registered (to anyone).
pub(crate) async fn insert_credential(store: &Store, c: &CredentialRow) -> Result<bool> {
    const SQL: &str = "INSERT INTO passkey_credentials (credential_id, user_id, passkey, sign_count, backup_eligible, backup_state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (credential_id) DO NOTHING";
    let done = with_pool!(store, pool => {
        sqlx::query(SQL)
            .bind(c.credential_id.as_str())
            .bind(c.user_id.as_str())
            .bind(c.passkey.as_str())
            .bind(c.sign_count)
            .bind(c.backup_eligible)
            .bind(c.backup_state)
            .bind(c.created_at.as_str())
            .execute(pool)
            .await
            .map_err(db("storing a passkey"))?
            .rows_affected()
    });
    Ok(done == 1)
}

pub(crate) async fn delete_credential(store: &Store, credential_id: &str) -> Result<()> {
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM passkey_credentials WHERE credential_id = $1")
            .bind(credential_id)
            .execute(pool)
            .await
            .map_err(db("removing a passkey"))?;
    });
    Ok(())
}

/// Saves a credential after a login, only if it is still live and its stored counter is still
/// below the new one (or both are zero): a compare-and-set, so that two logins racing with
/// copies of one credential cannot both move the counter. `false` when nothing was saved.
pub(crate) async fn save_after_login(
    store: &Store,
    credential_id: &str,
    passkey: &str,
    sign_count: i64,
    backup_eligible: bool,
    backup_state: bool,
    last_used_at: &str,
) -> Result<bool> {
    const SQL: &str = "UPDATE passkey_credentials SET passkey = $2, sign_count = $3, backup_eligible = $4, backup_state = $5, last_used_at = $6 WHERE credential_id = $1 AND revoked_at IS NULL AND (sign_count < $3 OR (sign_count = 0 AND $3 = 0))";
    let done = with_pool!(store, pool => {
        sqlx::query(SQL)
            .bind(credential_id)
            .bind(passkey)
            .bind(sign_count)
            .bind(backup_eligible)
            .bind(backup_state)
            .bind(last_used_at)
            .execute(pool)
            .await
            .map_err(db("saving a passkey after login"))?
            .rows_affected()
    });
    Ok(done == 1)
}

/// Marks a live credential of `user_id` revoked; `false` when there is none.
pub(crate) async fn revoke_credential(
    store: &Store,
    user_id: &str,
    credential_id: &str,
    revoked_at: &str,
) -> Result<bool> {
    const SQL: &str = "UPDATE passkey_credentials SET revoked_at = $3 WHERE credential_id = $1 AND user_id = $2 AND revoked_at IS NULL";
    let done = with_pool!(store, pool => {
        sqlx::query(SQL)
            .bind(credential_id)
            .bind(user_id)
            .bind(revoked_at)
            .execute(pool)
            .await
            .map_err(db("revoking a passkey"))?
            .rows_affected()
    });
    Ok(done == 1)
}
