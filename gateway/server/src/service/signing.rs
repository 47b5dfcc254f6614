//! Deciding signing requests (docs/architecture.md §6): a new request is decided under its
//! wallet's lock against what the wallet has signed and reserved, and the decision commits with
//! the request (its reservation, when authorized) in one transaction; a request pending step-up
//! is decided again, as its creating app, once the owner's passkey approved exactly it. Both go
//! through [`decision`], so they are recorded the same way `/v1/authorize` is.

use std::sync::Arc;

use serde_json::Value;

use crate::accounts::wallets::{self, StoredWallet};
use crate::audit::store::Attachment;
use crate::cosign::signing::{self, SigningRequest, SigningState, SteppedUp};
use crate::cosign::velocity::{Snapshot, WalletGuard};
use crate::cosign::{hex0x, stamp};
use crate::error::Error;
use crate::facts::{Action, Facts};
use crate::policy::LoadedPolicies;
use crate::records::{AppRecord, SessionFacts};
use crate::request::AuthorizeRequest;
use crate::service::decision::{self, Asking};
use crate::service::pipeline::{self, Outcome};
use crate::state::AppState;

/// A database failure of a signing route, logged once and answered as `store_unavailable`.
pub(crate) fn store_down(error: Error) -> Error {
    match error {
        Error::Database(e) => {
            tracing::warn!(error = %e, "signing request store");
            Error::StoreUnavailable
        }
        other => other,
    }
}

/// What a decided request reserves: native value always, the token amount of an ERC-20
/// transfer.
fn reservation(facts: &Facts) -> (String, Option<String>, Option<String>) {
    let native = facts
        .decoded
        .value
        .as_ref()
        .map_or_else(|| "0".to_owned(), |a| a.raw.clone());
    match (&facts.decoded.token, facts.action) {
        (Some(t), Action::Erc20Transfer) => (
            native,
            Some(format!("{:#x}", t.contract)),
            Some(t.amount.raw.clone()),
        ),
        _ => (native, None, None),
    }
}

/// A decision taken under the wallet's lock; the lock is held until the decision is recorded
/// (and with it the reservation), by [`Locked::record`].
struct Locked<'a> {
    guard: WalletGuard<'a>,
    /// The policy set it was decided with, which its record names.
    policies: Arc<LoadedPolicies>,
    asking: Asking<'a>,
    facts: Facts,
    outcome: Outcome,
    /// For a deny that only `@step_up` forbids caused: the decision with `step_up: true`.
    with_step_up: Option<Outcome>,
    now: time::OffsetDateTime,
}

impl Locked<'_> {
    /// Records the decision with `attached`, then releases the wallet's lock, whether or not the
    /// record was taken.
    async fn record(
        self,
        state: &AppState,
        req: &AuthorizeRequest,
        attached: Option<Box<dyn Attachment>>,
    ) -> Result<(), Error> {
        let recorded = decision::record(
            state,
            &self.policies,
            self.asking,
            req,
            &self.outcome,
            attached,
            self.now,
        )
        .await;
        self.guard.release().await;
        recorded
    }
}

/// Takes the wallet's lock, reads velocity (signed and reserved, from the database), decides.
/// An input the decoder refuses is recorded as a refusal and returned as the error.
async fn decide_locked<'a>(
    state: &'a AppState,
    asking: Asking<'a>,
    session: &SessionFacts,
    wallet: &StoredWallet,
    req: &AuthorizeRequest,
    step_up: bool,
) -> Result<Locked<'a>, Error> {
    let store = &state.store;
    let policies = state.engine.current();
    let record = wallet.record()?;
    // Decoding needs no lock: a heavy payload waiting for a decoder slot must not hold up the
    // wallet's other requests.
    let decoded = decision::decode(state, &policies, asking, record.address, req).await?;
    let guard = state.wallet_locks.lock(store, &wallet.address).await?;
    let now = state.clock.now();
    let entries = signing::reserved(store, record.address, now)
        .await
        .map_err(store_down)?;
    let ledger = Snapshot {
        entries,
        local: state.ledger.as_ref(),
    };
    let scopes = decision::scopes(state, &policies, asking).await?;
    let evaluate = |step_up: bool| {
        pipeline::decide(
            &policies,
            &ledger,
            &decoded.stage(),
            asking.app,
            &record,
            Some(session),
            &scopes,
            step_up,
            now,
        )
    };
    let outcome = evaluate(step_up);
    let with_step_up = (!step_up && outcome.step_up_may_help).then(|| evaluate(true));
    Ok(Locked {
        guard,
        policies,
        asking,
        facts: decoded.facts,
        outcome,
        with_step_up,
        now,
    })
}

/// Decides a new request and records the decision with the request (its reservation, when
/// authorized) in one transaction. A deny that the owner's passkey can lift becomes a request
/// pending step-up.
pub async fn decide_and_reserve(
    state: &AppState,
    caller: &AppRecord,
    session: &SessionFacts,
    wallet: &StoredWallet,
    req: &AuthorizeRequest,
    body: &Value,
    request_id: &str,
) -> Result<SigningRequest, Error> {
    let asking = Asking {
        request_id,
        app: caller,
        user: Some(session.user),
    };
    let locked = decide_locked(state, asking, session, wallet, req, false).await?;
    let (facts, outcome, now) = (&locked.facts, &locked.outcome, locked.now);
    let request_state = if outcome.decision.is_allow() {
        SigningState::Authorized
    } else if locked
        .with_step_up
        .as_ref()
        .is_some_and(|o| o.decision.is_allow())
    {
        SigningState::PendingStepUp
    } else {
        SigningState::Denied
    };
    let (native, token, token_amount) = reservation(facts);
    let ttl = time::Duration::try_from(state.signing_request_ttl)
        .map_err(|e| Error::Config(e.to_string()))?;
    let request = SigningRequest {
        id: request_id.to_owned(),
        app_id: caller.id.clone(),
        wallet: wallet.address.clone(),
        owner: wallet.owner,
        chain_id: facts.decoded.chain_id,
        action: outcome.action.as_str().to_owned(),
        digest: hex0x(facts.digest.as_slice()),
        epoch: wallet.epoch,
        body: serde_json_canonicalizer::to_string(body)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?,
        outcome: serde_json::to_string(outcome).map_err(|e| Error::Internal(e.to_string()))?,
        state: request_state,
        native,
        token,
        token_amount,
        final_sent: false,
        signature: None,
        failure: None,
        created_at: stamp(now),
        expires_at: stamp(now + ttl),
        updated_at: stamp(now),
    };
    locked
        .record(state, req, Some(Box::new(request.clone())))
        .await?;
    tracing::info!(request_id, state = request_state.as_str(), wallet = %wallet.address, "signing request");
    Ok(request)
}

/// The owner's pending requests for the page: id, app, wallet, state, the decoded facts and the
/// decision's reasons.
pub async fn pending_of(state: &AppState, user: uuid::Uuid) -> Result<Value, Error> {
    let now = state.clock.now();
    let list = signing::pending_of(&state.store, user, now)
        .await
        .map_err(store_down)?;
    Ok(Value::Array(list.iter().map(|r| r.to_json(now)).collect()))
}

/// Starts the owner's step-up ceremony for a pending request (the page's "Approve").
pub async fn start_step_up(state: &AppState, user: uuid::Uuid, id: &str) -> Result<Value, Error> {
    let now = state.clock.now();
    let r = signing::get(&state.store, id)
        .await
        .map_err(store_down)?
        .filter(|r| r.owner == user)
        .ok_or(Error::NotFound)?;
    if r.state_at(now) != SigningState::PendingStepUp {
        return Err(Error::NotSignable(r.state_at(now).to_string()));
    }
    state
        .passkeys
        .start_step_up(user, &signing::step_up_context(&r), now)
        .await
        .map_err(store_down)
}

/// How a step-up ended once its decision was recorded.
#[derive(Debug)]
pub enum SteppedUpTo {
    /// The request is authorized, as it now stands.
    Authorized(Box<SigningRequest>),
    /// The decision with `step_up: true` did not allow it (or decoded to another digest): the
    /// request stays as it was.
    Denied {
        signing_request: String,
        decision: Option<Value>,
    },
}

/// Checks the assertion is the owner's, for this request's step-up ceremony, then decides the
/// request again with `step_up: true` as its creating app; an allow authorizes it.
pub async fn complete_step_up(
    state: &AppState,
    session: &SessionFacts,
    id: &str,
    ceremony_id: &str,
    credential: &webauthn_rs::prelude::PublicKeyCredential,
    request_id: &str,
) -> Result<SteppedUpTo, Error> {
    let store = &state.store;
    let r = signing::get(store, id)
        .await
        .map_err(store_down)?
        .filter(|r| r.owner == session.user)
        .ok_or(Error::NotFound)?;
    let now = state.clock.now();
    if r.state_at(now) != SigningState::PendingStepUp {
        return Err(Error::NotSignable(r.state_at(now).to_string()));
    }
    // A revoked or frozen app's request is not approved, whoever carries the assertion.
    crate::accounts::apps::app_may_act(store, &r.app_id, state.dev_app_acting())
        .await
        .map_err(store_down)?;
    state
        .passkeys
        .finish_step_up(
            ceremony_id,
            credential,
            r.owner,
            &signing::step_up_context(&r),
            now,
        )
        .await
        .map_err(store_down)?;
    // The decision is the creating app's, whichever app (or the page) carried the assertion.
    let app = if r.app_id == state.dev_app.id {
        state.dev_app.clone()
    } else {
        crate::accounts::apps::get_app(store, &r.app_id)
            .await
            .map_err(store_down)?
            .record()
    };
    let wallet = wallets::get(store, &r.wallet)
        .await
        .map_err(store_down)?
        .ok_or(Error::NotFound)?;
    let parsed: AuthorizeRequest = serde_json::from_str(&r.body)
        .map_err(|e| Error::Internal(format!("a stored request body: {e}")))?;
    let asking = Asking {
        request_id,
        app: &app,
        user: Some(session.user),
    };
    let locked = decide_locked(state, asking, session, &wallet, &parsed, true).await?;
    let (outcome, now) = (&locked.outcome, locked.now);
    let allowed = outcome.decision.is_allow() && hex0x(locked.facts.digest.as_slice()) == r.digest;
    let ttl = time::Duration::try_from(state.signing_request_ttl)
        .map_err(|e| Error::Config(e.to_string()))?;
    let decision_json =
        serde_json::to_string(outcome).map_err(|e| Error::Internal(e.to_string()))?;
    let attached = allowed.then(|| -> Box<dyn Attachment> {
        Box::new(SteppedUp {
            id: r.id.clone(),
            outcome: decision_json,
            expires_at: stamp(now + ttl),
            now: stamp(now),
        })
    });
    let decision = (!allowed).then(|| serde_json::to_value(outcome).ok());
    locked.record(state, &parsed, attached).await?;
    if let Some(decision) = decision {
        return Ok(SteppedUpTo::Denied {
            signing_request: r.id,
            decision,
        });
    }
    let r = signing::get(store, id)
        .await
        .map_err(store_down)?
        .ok_or(Error::NotFound)?;
    Ok(SteppedUpTo::Authorized(Box::new(r)))
}
