//! Signing requests over HTTP (docs/architecture.md §6): `POST /v1/wallets/{address}/sign` (app
//! key, the owner's session, an `Idempotency-Key`), `GET /v1/signing-requests/{id}` (the creating
//! app or the owner), `GET /v1/device/signing-requests/{id}` (the owner's device) and the ceremony
//! WebSocket. The decision, with its reservation, is committed to the audit log before the
//! answer; the ceremony signs only what was committed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::Caller;
use super::body::json_body;
use super::error::{ApiError, json_answer};
use super::extract::{AppSession, AuthedDevice, StrictJson};
use super::request_id::ReqId;
use crate::audit::record as audit_record;
use crate::audit::store::Attachment;
use crate::cosign::idempotency::{self, Claim};
use crate::cosign::signing::SteppedUp;
use crate::cosign::signing::{self, SigningRequest, SigningState};
use crate::cosign::velocity::{Snapshot, WalletGuard};
use crate::cosign::{hex0x, stamp};
use crate::error::Error;
use crate::facts::{Action, Facts};
use crate::pipeline::{self, Outcome};
use crate::records::{AppRecord, SessionFacts};
use crate::request::AuthorizeRequest;
use crate::users::ActiveSession;
use crate::wallets::{self, StoredWallet};

type Answer = Result<Response, ApiError>;

fn store_down(error: Error) -> Error {
    match error {
        Error::Database(e) => {
            tracing::warn!(error = %e, "signing request store");
            Error::StoreUnavailable
        }
        other => other,
    }
}

/// The answer for a request: 201 with the request when authorized; 403 `policy_denied` with the
/// decision when denied; 403 `step_up_required` with fresh WebAuthn options bound to this
/// request when the owner's passkey can lift the deny (or `passkey_required` when they have
/// none). A retry with the same Idempotency-Key gets the same answer.
async fn answer(state: &AppState, r: &SigningRequest, request_id: &str) -> Response {
    let now = state.clock.now();
    let mut body = r.to_json(now);
    let refusal = |error: Error, extra: Vec<(&str, Value)>, body: &mut Value| {
        let decision = body.get_mut("decision").map(Value::take);
        refused(&error, request_id, &r.id, decision, extra)
    };
    match r.state_at(now) {
        SigningState::Denied => refusal(Error::PolicyDenied, Vec::new(), &mut body),
        SigningState::PendingStepUp => {
            match state
                .passkeys
                .start_step_up(r.owner, &signing::step_up_context(r), now)
                .await
            {
                Ok(step_up) => {
                    refusal(Error::StepUpRequired, vec![("step_up", step_up)], &mut body)
                }
                Err(Error::PasskeyRequired) => {
                    refusal(Error::PasskeyRequired, Vec::new(), &mut body)
                }
                Err(error) => ApiError {
                    error: store_down(error),
                    request_id: request_id.to_owned(),
                }
                .into_response(),
            }
        }
        _ => {
            set(&mut body, "request_id", Value::from(request_id));
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
    }
}

/// A refusal of a signing request: the error's code and message, the request's id and the
/// decision that refused it, plus `extra` fields.
fn refused(
    error: &Error,
    request_id: &str,
    signing_request: &str,
    decision: Option<Value>,
    extra: Vec<(&str, Value)>,
) -> Response {
    let mut out = serde_json::json!({
        "code": error.code(),
        "message": error.to_string(),
        "request_id": request_id,
        "signing_request": signing_request,
        "decision": decision,
    });
    for (k, v) in extra {
        set(&mut out, k, v);
    }
    (error.status(), axum::Json(out)).into_response()
}

fn set(body: &mut Value, key: &str, value: Value) {
    if let Some(o) = body.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

pub async fn sign(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    AppSession(session): AppSession,
    Path(address): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let user = session.facts.user;
    if let Err(refusal) = state.limits.check_user(user) {
        state.metrics.count_rate_limited(refusal.limiter);
        return Err(fail(refusal.into_error()));
    }
    let key = idempotency::check_key(headers.get("idempotency-key").and_then(|v| v.to_str().ok()))
        .map_err(fail)?
        .to_owned();
    let raw: Value = json_body(&headers, body).map_err(fail)?;
    if raw.get("wallet").is_some() {
        return Err(fail(Error::InvalidRequest(
            "the path names the wallet: remove the wallet field".to_owned(),
        )));
    }
    let canonical = serde_json_canonicalizer::to_vec(&raw)
        .map_err(|e| fail(Error::InvalidRequest(e.to_string())))?;
    let body_hash = hex::encode(Sha256::digest(&canonical));
    let wallet = wallets::owned_by(&state.store, &address, user)
        .await
        .map_err(|e| fail(store_down(e)))?;
    if wallet.refresh_required {
        return Err(fail(Error::RefreshRequired));
    }
    let parsed = pipeline::parse_address(&wallet.address).map_err(|e| fail(e.into()))?;
    if let Err(refusal) = state.limits.check_wallet(parsed.into_array()) {
        state.metrics.count_rate_limited(refusal.limiter);
        return Err(fail(refusal.into_error()));
    }
    let mut with_wallet = raw;
    if let Some(o) = with_wallet.as_object_mut() {
        o.insert(
            "wallet".to_owned(),
            serde_json::json!({ "address": wallet.address }),
        );
    }
    let req: AuthorizeRequest = serde_json::from_value(with_wallet.clone())
        .map_err(|e| fail(Error::InvalidRequest(e.to_string())))?;
    let now = state.clock.now();
    let scope = (caller.id.as_str(), wallet.address.as_str());
    let claim = idempotency::claim(&state.store, scope, &key, &body_hash, &request_id, now)
        .await
        .map_err(|e| fail(store_down(e)))?;
    if let Claim::Existing {
        body_hash: earlier,
        request_id: earlier_id,
    } = claim
    {
        if earlier != body_hash {
            return Err(fail(Error::IdempotencyConflict));
        }
        return match signing::get(&state.store, &earlier_id)
            .await
            .map_err(|e| fail(store_down(e)))?
        {
            Some(r) => Ok(answer(&state, &r, &request_id).await),
            None => Err(fail(Error::IdempotencyInProgress)),
        };
    }
    let decided = decide_and_reserve(
        &state,
        &caller,
        &session,
        &wallet,
        &req,
        &with_wallet,
        &request_id,
    )
    .await;
    match decided {
        Ok(r) => Ok(answer(&state, &r, &request_id).await),
        Err(error) => {
            idempotency::release(&state.store, scope, &key, &request_id).await;
            Err(fail(error))
        }
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

/// A decision taken under the wallet's lock; the lock is held until the caller committed the
/// decision's event (and with it the reservation) and released it.
struct Locked<'a> {
    guard: WalletGuard<'a>,
    facts: Facts,
    outcome: Outcome,
    /// For a deny that only `@step_up` forbids caused: the decision with `step_up: true`.
    with_step_up: Option<Outcome>,
    now: time::OffsetDateTime,
}

/// Takes the wallet's lock, reads velocity (signed and reserved, from the database), decides.
/// An input the decoder refuses is audited as a refusal and returned as the error.
async fn decide_locked<'a>(
    state: &'a AppState,
    caller: &AppRecord,
    session: &SessionFacts,
    wallet: &StoredWallet,
    req: &AuthorizeRequest,
    request_id: &str,
    step_up: bool,
) -> Result<Locked<'a>, Error> {
    let store = &state.store;
    let policies = state.engine.current();
    let record = wallet.record()?;
    // Decoding needs no lock: a heavy payload waiting for a decoder slot must not hold up the
    // wallet's other requests.
    let (facts, decode_time) =
        match pipeline::decode_bounded(&state.decode_pool, &policies, record.address, req).await {
            Ok(ok) => ok,
            Err(error) => {
                let refused = audit_record::Refused {
                    request_id,
                    app: &caller.id,
                    user: Some(session.user.to_string()),
                    req: Some(req),
                    error: &error,
                };
                audit_record::commit_refusal(&state.audit, &policies, refused, state.clock.now())
                    .await?;
                return Err(error);
            }
        };
    let guard = state.wallet_locks.lock(store, &wallet.address).await?;
    let now = state.clock.now();
    let entries = signing::reserved(store, record.address, now)
        .await
        .map_err(store_down)?;
    let ledger = Snapshot {
        entries,
        local: state.ledger.as_ref(),
    };
    let scopes = crate::consent::approved_scopes(store, &policies, caller, Some(session.user))
        .await
        .map_err(store_down)?;
    state
        .audit
        .ensure_policy_version(policies.version(), policies.files(), now)
        .await?;
    let decided = pipeline::Decided {
        facts: &facts,
        decode_time,
    };
    let evaluate = |step_up: bool| {
        pipeline::decide(
            &policies,
            &ledger,
            &decided,
            caller,
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
        facts,
        outcome,
        with_step_up,
        now,
    })
}

/// Decides a new request and commits the decision's event with the request (its reservation,
/// when authorized) in one transaction. A deny that the owner's passkey can lift becomes a
/// request pending step-up.
async fn decide_and_reserve(
    state: &AppState,
    caller: &AppRecord,
    session: &ActiveSession,
    wallet: &StoredWallet,
    req: &AuthorizeRequest,
    body: &Value,
    request_id: &str,
) -> Result<SigningRequest, Error> {
    let locked = decide_locked(
        state,
        caller,
        &session.facts,
        wallet,
        req,
        request_id,
        false,
    )
    .await?;
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
    let record = audit_record::DecisionRecord {
        request_id,
        app: &caller.id,
        user: Some(session.facts.user.to_string()),
        req,
        outcome,
    };
    let committed =
        audit_record::commit_decision(&state.audit, record, Some(Box::new(request.clone())), now)
            .await;
    locked.guard.release().await;
    committed?;
    state.metrics.count_decision(locked.outcome.decision);
    tracing::info!(request_id, decision = locked.outcome.decision.as_str(), state = request_state.as_str(), action = locked.outcome.action.as_str(), wallet = %wallet.address, "signing request");
    Ok(request)
}

/// The request with its signature and, for transactions, the signed transaction and its hash.
fn full_view(state: &AppState, r: &SigningRequest) -> Value {
    let mut body = r.to_json(state.clock.now());
    let Some(rsv) = r.signature.as_deref().and_then(|s| hex::decode(s).ok()) else {
        return body;
    };
    let (Some(rb), Some(sb), Some(&v)) = (rsv.get(..32), rsv.get(32..64), rsv.get(64)) else {
        return body;
    };
    let (mut rr, mut ss) = ([0u8; 32], [0u8; 32]);
    rr.copy_from_slice(rb);
    ss.copy_from_slice(sb);
    let y_parity = v == 28;
    set(
        &mut body,
        "signature",
        serde_json::json!({
            "r": hex0x(&rr), "s": hex0x(&ss), "y_parity": y_parity,
            "rsv": hex0x(&rsv),
        }),
    );
    let signed = serde_json::from_str::<AuthorizeRequest>(&r.body)
        .ok()
        .and_then(|req| {
            let wallet = pipeline::parse_address(&r.wallet).ok()?;
            let payload = req.payload().ok()?;
            crate::decode::signed_transaction(payload, req.chain_id, wallet, rr, ss, y_parity)
                .map_err(|error| tracing::warn!(%error, "rebuilding a signed transaction"))
                .ok()
                .flatten()
        });
    if let Some((raw, hash)) = signed {
        set(&mut body, "signed_transaction", Value::from(hex0x(&raw)));
        set(&mut body, "tx_hash", Value::from(format!("{hash:#x}")));
    }
    body
}

/// `GET /v1/signing-requests/{id}`: the creating app, or the owner through any app.
pub async fn get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(Caller(caller)): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let r = signing::get(&state.store, &id)
        .await
        .map_err(|e| fail(store_down(e)))?
        .ok_or_else(|| fail(Error::NotFound))?;
    let allowed = if r.app_id == caller.id {
        true
    } else {
        match super::auth::user_session(&state, &caller, &headers).await {
            Ok(s) => s.facts.user == r.owner,
            Err(_) => false,
        }
    };
    if !allowed {
        return Err(fail(Error::NotFound));
    }
    Ok(json_answer(full_view(&state, &r), &request_id))
}

/// `GET /v1/device/signing-requests/{id}`: the owner's device. Besides the request's view it
/// carries `body`, the request as it was decided (`chain_id`, `wallet` and the one payload), so
/// that the device decodes it itself, shows the person what it is and recomputes the digest
/// before it joins the ceremony: the device signs what it checked, not what it is told.
pub async fn device_get(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AuthedDevice(device): AuthedDevice,
    Path(id): Path<String>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    let r = signing::get(&state.store, &id)
        .await
        .map_err(|e| fail(store_down(e)))?
        .filter(|r| r.owner == device.user_id)
        .ok_or_else(|| fail(Error::NotFound))?;
    let mut view = full_view(&state, &r);
    let body: Value = serde_json::from_str(&r.body)
        .map_err(|e| fail(Error::Internal(format!("a stored request body: {e}"))))?;
    set(&mut view, "body", body);
    Ok(json_answer(view, &request_id))
}

/// `GET /v1/signing-requests/{id}/ceremony`: the owner's device joins the signing ceremony.
pub async fn ceremony(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Answer {
    super::ceremony_routes::signing(state, &request_id, id, &headers, ws)
}

/// A step-up assertion: the ceremony it answers and the authenticator's response.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    pub(super) ceremony_id: String,
    pub(super) credential: webauthn_rs::prelude::PublicKeyCredential,
}

/// `POST /v1/signing-requests/{id}/step-up`: the owner's passkey assertion, made for this
/// request's step-up ceremony (bound to its id and digest, single-use, expiring), lets the
/// request be decided again with `context.step_up = true`. An allow authorizes it (the
/// reservation commits with the decision's event); anything else answers as a deny.
pub async fn step_up(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    AppSession(session): AppSession,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<StepUp>,
) -> Answer {
    let fail = ApiError::of(&request_id);
    complete_step_up(
        &state,
        &session.facts,
        &id,
        &req.ceremony_id,
        &req.credential,
        &request_id,
    )
    .await
    .map_err(fail)
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

/// Checks the assertion is the owner's, for this request's step-up ceremony, then decides the
/// request again with `step_up: true` as its creating app; an allow authorizes it.
pub async fn complete_step_up(
    state: &AppState,
    session: &SessionFacts,
    id: &str,
    ceremony_id: &str,
    credential: &webauthn_rs::prelude::PublicKeyCredential,
    request_id: &str,
) -> Result<Response, Error> {
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
    crate::identity::app_may_act(store, &r.app_id, state.dev_app_acting())
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
        crate::identity::get_app(store, &r.app_id)
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
    let locked = decide_locked(state, &app, session, &wallet, &parsed, request_id, true).await?;
    let (outcome, now) = (&locked.outcome, locked.now);
    let allowed = outcome.decision.is_allow() && hex0x(locked.facts.digest.as_slice()) == r.digest;
    let ttl = time::Duration::try_from(state.signing_request_ttl)
        .map_err(|e| Error::Config(e.to_string()))?;
    let record = audit_record::DecisionRecord {
        request_id,
        app: &app.id,
        user: Some(session.user.to_string()),
        req: &parsed,
        outcome,
    };
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
    let committed = audit_record::commit_decision(&state.audit, record, attached, now).await;
    locked.guard.release().await;
    committed?;
    state.metrics.count_decision(outcome.decision);
    if !allowed {
        let decision = serde_json::to_value(outcome).ok();
        return Ok(refused(
            &Error::PolicyDenied,
            request_id,
            &r.id,
            decision,
            Vec::new(),
        ));
    }
    let r = signing::get(store, id)
        .await
        .map_err(store_down)?
        .ok_or(Error::NotFound)?;
    Ok(answer(state, &r, request_id).await)
}
