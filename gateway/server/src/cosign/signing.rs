//! Signing requests (docs/architecture.md §6) as stored. A request moves `authorized → signing →
//! signed | failed` or `authorized → expired` (or ends `denied`); every move is one conditional
//! UPDATE, so two ceremonies cannot both take a request, and an expired one is never signed.
//!
//! A request is also its own velocity reservation: it counts while `authorized` or `signing`
//! and unexpired, and for good once signed or once the gateway's final protocol message left
//! (`final_sent`), since after that the device can finish the signature alone.

use alloy::primitives::{Address, U256};
use parapet_api::SigningRequestView;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::stamp;
use crate::audit::Store;
use crate::audit::store::{Attachment, TxFuture};
use crate::error::{Error, Result};
use crate::ledger::LedgerEntry;
use crate::store::db::{BeginWrite, RowLike, db, with_pool};

/// One signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRequest {
    /// The request id of the decision that created it (UUIDv7).
    pub id: String,
    pub app_id: String,
    /// Lower-case 0x address.
    pub wallet: String,
    pub owner: Uuid,
    pub chain_id: i64,
    pub action: String,
    /// 0x hex: the one digest the ceremony may sign.
    pub digest: String,
    /// The wallet's epoch when it was authorized; a ceremony uses only that epoch's share.
    pub epoch: i64,
    /// The request body as received (canonical JSON, the wallet added).
    pub body: String,
    /// The decision as `/v1/authorize` shows it.
    pub outcome: String,
    pub state: SigningState,
    /// Native value, wei, decimal.
    pub native: String,
    /// The token contract and amount (base units, decimal) of an `erc20_transfer`.
    pub token: Option<String>,
    pub token_amount: Option<String>,
    pub final_sent: bool,
    /// `r ‖ s ‖ v` hex once signed.
    pub signature: Option<String>,
    pub failure: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub updated_at: String,
}

/// A signing request's state is part of the wire: it is defined there.
pub use parapet_api::SigningState;

use SigningState::{Authorized, PendingStepUp, Signed, Signing};

impl SigningRequest {
    /// The state as of `now`: an authorized (or step-up pending) request past its expiry is
    /// expired. Compared as times; an expiry that does not read as one counts as past.
    pub fn state_at(&self, now: OffsetDateTime) -> SigningState {
        let expired = crate::audit::event::parse_time(&self.expires_at).map_or(true, |t| t <= now);
        if (self.state == Authorized || self.state == PendingStepUp) && expired {
            SigningState::Expired
        } else {
            self.state
        }
    }

    /// `GET /v1/signing-requests/{id}`'s shape (without signed transaction fields).
    pub fn view(&self, now: OffsetDateTime) -> SigningRequestView {
        SigningRequestView {
            id: self.id.clone(),
            app: self.app_id.clone(),
            wallet: self.wallet.clone(),
            owner: self.owner.to_string(),
            chain_id: self.chain_id.to_string(),
            action: self.action.clone(),
            digest: self.digest.clone(),
            state: self.state_at(now),
            decision: serde_json::from_str(&self.outcome).unwrap_or(serde_json::Value::Null),
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
        }
    }

    /// [`Self::view`] as JSON, for answers that add fields to it.
    pub fn to_json(&self, now: OffsetDateTime) -> serde_json::Value {
        serde_json::to_value(self.view(now)).unwrap_or(serde_json::Value::Null)
    }
}

macro_rules! columns {
    () => {
        "id, app_id, wallet, owner, chain_id, action, digest, epoch, body, outcome, state, native, token, token_amount, final_sent, signature, failure, created_at, expires_at, updated_at"
    };
}

fn row(r: &impl RowLike) -> std::result::Result<SigningRequest, sqlx::Error> {
    Ok(SigningRequest {
        id: r.text("id")?,
        app_id: r.text("app_id")?,
        wallet: r.text("wallet")?,
        owner: Uuid::parse_str(&r.text("owner")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        chain_id: r.int("chain_id")?,
        action: r.text("action")?,
        digest: r.text("digest")?,
        epoch: r.int("epoch")?,
        body: r.text("body")?,
        outcome: r.text("outcome")?,
        state: {
            let name = r.text("state")?;
            SigningState::from_name(&name).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown signing request state {name:?}").into())
            })?
        },
        native: r.text("native")?,
        token: r.opt_text("token")?,
        token_amount: r.opt_text("token_amount")?,
        final_sent: r.flag("final_sent")?,
        signature: r.opt_text("signature")?,
        failure: r.opt_text("failure")?,
        created_at: r.text("created_at")?,
        expires_at: r.text("expires_at")?,
        updated_at: r.text("updated_at")?,
    })
}

/// Inserts a request inside the caller's transaction (the audit batch that commits its
/// decision), so that there is no reservation without its event and no event without it.
macro_rules! insert_request {
    ($conn:expr, $r:expr) => {
        sqlx::query("INSERT INTO signing_requests (id, app_id, wallet, owner, chain_id, action, digest, epoch, body, outcome, state, native, token, token_amount, final_sent, signature, failure, created_at, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)")
            .bind($r.id.as_str())
            .bind($r.app_id.as_str())
            .bind($r.wallet.as_str())
            .bind($r.owner.to_string())
            .bind($r.chain_id)
            .bind($r.action.as_str())
            .bind($r.digest.as_str())
            .bind($r.epoch)
            .bind($r.body.as_str())
            .bind($r.outcome.as_str())
            .bind($r.state.as_str())
            .bind($r.native.as_str())
            .bind($r.token.as_deref())
            .bind($r.token_amount.as_deref())
            .bind($r.final_sent)
            .bind($r.signature.as_deref())
            .bind($r.failure.as_deref())
            .bind($r.created_at.as_str())
            .bind($r.expires_at.as_str())
            .bind($r.updated_at.as_str())
            .execute($conn)
    };
}

/// Moves a request from pending step-up to authorized inside the caller's transaction (the
/// audit batch with the stepped-up decision).
macro_rules! authorize_stepped {
    ($conn:expr, $s:expr) => {
        sqlx::query("UPDATE signing_requests SET state = 'authorized', outcome = $2, expires_at = $3, updated_at = $4 WHERE id = $1 AND state = 'pending_step_up' AND expires_at > $4")
            .bind($s.id.as_str())
            .bind($s.outcome.as_str())
            .bind($s.expires_at.as_str())
            .bind($s.now.as_str())
            .execute($conn)
    };
}

/// A request's row commits with its decision's audit event ([`Attachment`]).
impl Attachment for SigningRequest {
    fn insert_sqlite(&self, conn: &rusqlite::Connection) -> Result<()> {
        let r = self;
        conn.prepare_cached("INSERT INTO signing_requests (id, app_id, wallet, owner, chain_id, action, digest, epoch, body, outcome, state, native, token, token_amount, final_sent, signature, failure, created_at, expires_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)")
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    r.id,
                    r.app_id,
                    r.wallet,
                    r.owner.to_string(),
                    r.chain_id,
                    r.action,
                    r.digest,
                    r.epoch,
                    r.body,
                    r.outcome,
                    r.state.as_str(),
                    r.native,
                    r.token,
                    r.token_amount,
                    r.final_sent,
                    r.signature,
                    r.failure,
                    r.created_at,
                    r.expires_at,
                    r.updated_at,
                ])
            })
            .map_err(|e| Error::Database(format!("inserting a signing request: {e}")))?;
        Ok(())
    }

    fn insert_postgres<'a>(&'a self, conn: &'a mut sqlx::PgConnection) -> TxFuture<'a> {
        Box::pin(async move {
            insert_request!(conn, self)
                .await
                .map_err(db("inserting a signing request"))?;
            Ok(())
        })
    }
}

/// A request pending step-up becomes authorized (its reservation from now on), with the
/// stepped-up decision's audit event.
#[derive(Debug, Clone)]
pub struct SteppedUp {
    pub id: String,
    /// The new decision, as JSON.
    pub outcome: String,
    pub expires_at: String,
    pub now: String,
}

impl Attachment for SteppedUp {
    fn insert_sqlite(&self, conn: &rusqlite::Connection) -> Result<()> {
        conn.prepare_cached("UPDATE signing_requests SET state = 'authorized', outcome = ?2, expires_at = ?3, updated_at = ?4 WHERE id = ?1 AND state = 'pending_step_up' AND expires_at > ?4")
            .and_then(|mut s| s.execute(rusqlite::params![self.id, self.outcome, self.expires_at, self.now]))
            .map_err(|e| Error::Database(format!("authorizing a stepped-up request: {e}")))?;
        Ok(())
    }

    fn insert_postgres<'a>(&'a self, conn: &'a mut sqlx::PgConnection) -> TxFuture<'a> {
        Box::pin(async move {
            authorize_stepped!(conn, self)
                .await
                .map_err(db("authorizing a stepped-up request"))?;
            Ok(())
        })
    }
}

/// The context a step-up passkey ceremony is started with: the request and its digest, so that
/// an assertion made for one request is worthless for any other.
pub fn step_up_context(r: &SigningRequest) -> String {
    format!("step-up:{}:{}", r.id, r.digest)
}

/// The request with this id.
pub async fn get(store: &Store, id: &str) -> Result<Option<SigningRequest>> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM signing_requests WHERE id = $1"
    );
    with_pool!(store, pool => {
        let r = sqlx::query(SQL).bind(id).fetch_optional(pool).await.map_err(db("reading a signing request"))?;
        Ok(r.as_ref().map(row).transpose().map_err(db("reading a signing request"))?)
    })
}

/// The owner's requests that wait for them (pending step-up or authorized, unexpired; or
/// signing), newest first.
pub async fn pending_of(
    store: &Store,
    owner: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<SigningRequest>> {
    const SQL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM signing_requests WHERE owner = $1 AND ((state IN ($2, $5) AND expires_at > $3) OR state = $4) ORDER BY created_at DESC LIMIT 100"
    );
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(owner.to_string()).bind(Authorized.as_str()).bind(stamp(now)).bind(Signing.as_str()).bind(PendingStepUp.as_str())
            .fetch_all(pool).await.map_err(db("listing signing requests"))?;
        Ok(rows.iter().map(row).collect::<std::result::Result<Vec<_>, _>>().map_err(db("listing signing requests"))?)
    })
}

/// Takes an authorized, unexpired request for a ceremony (`signing`, expiring at `deadline`) and
/// records that ceremony (`ceremony`, under `execution`) in the same transaction, reading the
/// taken request back from the update itself. Exactly one caller wins; everyone else gets
/// `NotSignable` with the state they found, and no ceremony row.
pub async fn take_for_ceremony(
    store: &Store,
    id: &str,
    now: OffsetDateTime,
    deadline: OffsetDateTime,
    execution: &parapet_mpc::SessionId,
    ceremony: super::ceremonies::Begin<'_>,
) -> Result<SigningRequest> {
    const SQL: &str = concat!(
        "UPDATE signing_requests SET state = $2, expires_at = $3, updated_at = $4 WHERE id = $1 AND state = $5 AND expires_at > $4 RETURNING ",
        columns!()
    );
    let execution_id = hex::encode(execution.as_bytes());
    let taken = with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("taking a signing request"))?;
        let taken = sqlx::query(SQL)
            .bind(id).bind(Signing.as_str()).bind(stamp(deadline)).bind(stamp(now)).bind(Authorized.as_str())
            .fetch_optional(&mut *tx).await.map_err(db("taking a signing request"))?;
        match taken {
            // Nothing changed: the transaction ends unwritten.
            None => None,
            Some(taken) => {
                let request = row(&taken).map_err(db("taking a signing request"))?;
                if super::ceremonies::insert_ceremony!(&mut *tx, execution_id.as_str(), ceremony, stamp(now)) != 1 {
                    return Err(super::ceremonies::reused());
                }
                tx.commit().await.map_err(db("taking a signing request"))?;
                Some(request)
            }
        }
    });
    match taken {
        Some(request) => Ok(request),
        None => {
            let request = get(store, id).await?.ok_or(Error::NotFound)?;
            Err(Error::NotSignable(request.state_at(now).to_string()))
        }
    }
}

/// A released signature, recorded as the gateway's final protocol message is about to leave:
/// the request is `signed` with its signature, and from now on its amount counts whatever
/// happens. Committed in the same transaction as the `signature.released` event
/// ([`Attachment`]), so that the log and the request never disagree about a signature, and no
/// second commit is paid per signature.
#[derive(Debug)]
pub struct FinalSent {
    pub id: String,
    pub signature: String,
    pub now: String,
}

impl FinalSent {
    pub fn new(id: &str, signature: &str, now: OffsetDateTime) -> FinalSent {
        FinalSent {
            id: id.to_owned(),
            signature: signature.to_owned(),
            now: stamp(now),
        }
    }
}

/// The statement of [`FinalSent`], with each database's placeholders.
const FINAL_SENT_SQLITE: &str = "UPDATE signing_requests SET final_sent = TRUE, signature = ?2, state = 'signed', updated_at = ?3 WHERE id = ?1 AND state = 'signing'";
const FINAL_SENT_POSTGRES: &str = "UPDATE signing_requests SET final_sent = TRUE, signature = $2, state = 'signed', updated_at = $3 WHERE id = $1 AND state = 'signing'";

impl Attachment for FinalSent {
    fn insert_sqlite(&self, conn: &rusqlite::Connection) -> Result<()> {
        conn.prepare_cached(FINAL_SENT_SQLITE)
            .and_then(|mut s| s.execute(rusqlite::params![self.id, self.signature, self.now]))
            .map_err(|e| Error::Database(format!("recording a signature: {e}")))?;
        Ok(())
    }

    fn insert_postgres<'a>(&'a self, conn: &'a mut sqlx::PgConnection) -> TxFuture<'a> {
        Box::pin(async move {
            sqlx::query(FINAL_SENT_POSTGRES)
                .bind(self.id.as_str())
                .bind(self.signature.as_str())
                .bind(self.now.as_str())
                .execute(conn)
                .await
                .map_err(db("recording a signature"))?;
            Ok(())
        })
    }
}

/// Ends a ceremony without a signature: the request is `failed`, and its reservation is
/// released unless the final message had left.
pub async fn mark_failed(store: &Store, id: &str, reason: &str, now: OffsetDateTime) -> Result<()> {
    with_pool!(store, pool => {
        sqlx::query("UPDATE signing_requests SET state = $2, failure = $3, updated_at = $4 WHERE id = $1 AND state = $5")
            .bind(id).bind(SigningState::Failed.as_str()).bind(reason).bind(stamp(now)).bind(Signing.as_str())
            .execute(pool).await.map_err(db("recording a failed ceremony"))?;
    });
    Ok(())
}

/// `(chain_id, created_at, native, token, token_amount)`.
type ReservedRow = (i64, String, String, Option<String>, Option<String>);

/// What `wallet` signed or holds reserved over the last 24 hours, as ledger entries (all chains
/// and tokens; the ledger filters).
pub async fn reserved(
    store: &Store,
    wallet: Address,
    now: OffsetDateTime,
) -> Result<Vec<LedgerEntry>> {
    let since = stamp(now - Duration::hours(24));
    let address = format!("{wallet:#x}");
    let rows: Vec<ReservedRow> = with_pool!(store, pool => {
        sqlx::query_as("SELECT chain_id, created_at, native, token, token_amount FROM signing_requests WHERE wallet = $1 AND created_at > $2 AND (state = $3 OR final_sent = $4 OR (state IN ($5, $6) AND expires_at > $7))")
            .bind(address.as_str()).bind(since.as_str()).bind(Signed.as_str()).bind(true).bind(Authorized.as_str()).bind(Signing.as_str()).bind(stamp(now))
            .fetch_all(pool).await.map_err(db("reading velocity"))?
    });
    let mut out = Vec::with_capacity(rows.len());
    for (chain_id, at, native, token, amount) in rows {
        let at = OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Database(format!("bad time in signing_requests: {e}")))?;
        // An unreadable amount counts as the largest: velocity must never read low.
        let amount_of = |s: &str| s.parse::<U256>().unwrap_or(U256::MAX);
        let token = match (token, amount) {
            (Some(t), Some(a)) => {
                Some((crate::service::pipeline::parse_address(&t)?, amount_of(&a)))
            }
            _ => None,
        };
        out.push(LedgerEntry {
            wallet,
            chain_id,
            at,
            native: amount_of(&native),
            token,
        });
    }
    Ok(out)
}

/// A new request id.
pub fn new_id() -> String {
    Uuid::now_v7().to_string()
}
