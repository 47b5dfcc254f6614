//! The decision pipeline without HTTP: payload → facts → velocity → Cedar → explained decision.
//! `/v1/authorize`, `parapet decide` and `parapet policy test` all run exactly this.

use std::sync::Arc;

use alloy::primitives::Address;
use serde::Serialize;
use time::OffsetDateTime;

use crate::decode;
use crate::error::Result;
use crate::facts::{Action, Facts};
use crate::ledger::{Ledger, Velocity};
use crate::policy::{DecisionInput, DeterminingPolicy, JsonText, LoadedPolicies};
use crate::records::{AppRecord, LabelsSource, SessionFacts, WalletRecord};
use crate::request::AuthorizeRequest;

/// What the policy set answered: shown and stored as `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }

    pub const fn is_allow(self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of `/v1/authorize` (without `request_id`, which the HTTP layer adds).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outcome {
    pub decision: Verdict,
    pub action: Action,
    pub determining_policies: Vec<DeterminingPolicy>,
    pub errors: Vec<String>,
    /// Consent scopes whose permits would have allowed a denied request had the user approved
    /// them for this app (determining entry `scope-not-approved`); empty otherwise.
    pub scope_not_approved: Vec<String>,
    /// The policy set's version: the SHA-256 of its files.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub policy_version: String,
    /// The one digest a signature for this request may sign.
    #[cfg_attr(feature = "openapi", schema(pattern = "^0x[0-9a-f]{64}$"))]
    pub digest: String,
    pub labels_source: LabelsSource,
    /// The Cedar context sent, addresses as 0x strings (see policies/README.md).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub facts: JsonText,
    #[serde(skip)]
    pub cedar_request: JsonText,
    #[serde(skip)]
    pub entities: JsonText,
    #[serde(skip)]
    pub timings: StageTimings,
    /// A deny that only `@step_up` forbids caused, without errors (docs/architecture.md §6).
    #[serde(skip)]
    pub step_up_may_help: bool,
}

/// How long each stage took, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub decode: std::time::Duration,
    pub policy: std::time::Duration,
}

/// Parses an address the way the decoder does (see [`decode::parse_address`]).
pub fn parse_address(s: &str) -> Result<Address> {
    decode::parse_address(s)
}

/// The wallet entity for a request: until wallet records exist, built from the request.
pub fn wallet_from_request(req: &AuthorizeRequest) -> Result<WalletRecord> {
    Ok(WalletRecord {
        address: parse_address(&req.wallet.address)?,
        owner: None,
        labels: req.wallet.labels.clone(),
        frozen: false,
        groups: Vec::new(),
        labels_source: LabelsSource::Request,
    })
}

/// Runs decode → velocity → Cedar for one request without a user session.
pub fn evaluate(
    policies: &LoadedPolicies,
    ledger: &dyn Ledger,
    app: &AppRecord,
    wallet: &WalletRecord,
    req: &AuthorizeRequest,
    scopes: &[String],
    now: OffsetDateTime,
) -> Result<(Facts, Outcome)> {
    evaluate_for(policies, ledger, app, wallet, req, None, scopes, now)
}

/// Runs decode → velocity → Cedar for one request, for the user of `session` when there is
/// one (Cedar's `context.session`).
#[allow(
    clippy::too_many_arguments,
    reason = "the stages' inputs, each distinct"
)]
pub fn evaluate_for(
    policies: &LoadedPolicies,
    ledger: &dyn Ledger,
    app: &AppRecord,
    wallet: &WalletRecord,
    req: &AuthorizeRequest,
    session: Option<&SessionFacts>,
    scopes: &[String],
    now: OffsetDateTime,
) -> Result<(Facts, Outcome)> {
    evaluate_stepped(
        policies, ledger, app, wallet, req, session, scopes, false, now,
    )
}

/// [`evaluate_for`] with `context.step_up` set as given: true only when a step-up assertion is
/// bound to this very request (docs/architecture.md §6).
#[allow(
    clippy::too_many_arguments,
    reason = "the stages' inputs, each distinct"
)]
pub fn evaluate_stepped(
    policies: &LoadedPolicies,
    ledger: &dyn Ledger,
    app: &AppRecord,
    wallet: &WalletRecord,
    req: &AuthorizeRequest,
    session: Option<&SessionFacts>,
    scopes: &[String],
    step_up: bool,
    now: OffsetDateTime,
) -> Result<(Facts, Outcome)> {
    let started = std::time::Instant::now();
    let facts = decode_request(policies, wallet.address, req)?;
    let outcome = decide(
        policies,
        ledger,
        &Decided {
            facts: &facts,
            decode_time: started.elapsed(),
        },
        app,
        wallet,
        session,
        scopes,
        step_up,
        now,
    );
    Ok((facts, outcome))
}

/// The decode stage alone: the request's payload read for `wallet`.
pub fn decode_request(
    policies: &LoadedPolicies,
    wallet: Address,
    req: &AuthorizeRequest,
) -> Result<Facts> {
    let payload = req.payload()?;
    decode::decode(payload, req.chain_id, wallet, policies.registry())
}

/// Payloads up to this weight ([`payload_weight`]) decode on the request's own task: a
/// transaction or a permit takes microseconds, less than handing it to another thread. Heavier
/// ones (large typed data, calldata) go to the gateway's bounded pool.
pub const INLINE_DECODE_WEIGHT: usize = 8 * 1024;

/// Roughly the bytes of a request's payload, counted only up to just past
/// [`INLINE_DECODE_WEIGHT`] (so measuring costs no more than that).
#[must_use]
pub fn payload_weight(req: &AuthorizeRequest) -> usize {
    use crate::request::Payload;
    match req.payload() {
        Ok(
            Payload::Transaction(s)
            | Payload::Message(s)
            | Payload::MessageBytes(s)
            | Payload::Hash(s),
        ) => s.len(),
        Ok(Payload::TransactionRequest(v) | Payload::TypedData(v)) => {
            json_weight(v, INLINE_DECODE_WEIGHT)
        }
        // Refused at once by the decoder.
        Err(_) => 0,
    }
}

/// Bytes of strings plus 8 per value, stopping once past `limit`.
fn json_weight(v: &serde_json::Value, limit: usize) -> usize {
    use serde_json::Value;
    let mut weight = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        weight += 8;
        match v {
            Value::String(s) => weight += s.len(),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, item) in map {
                    weight += k.len();
                    stack.push(item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        if weight > limit {
            break;
        }
    }
    weight
}

/// Facts already decoded, and what decoding them cost.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    pub facts: &'a Facts,
    pub decode_time: std::time::Duration,
}

/// Velocity → Cedar for facts already decoded: the explained decision.
#[allow(
    clippy::too_many_arguments,
    reason = "the stages' inputs, each distinct"
)]
pub fn decide(
    policies: &LoadedPolicies,
    ledger: &dyn Ledger,
    decided: &Decided<'_>,
    app: &AppRecord,
    wallet: &WalletRecord,
    session: Option<&SessionFacts>,
    scopes: &[String],
    step_up: bool,
    now: OffsetDateTime,
) -> Outcome {
    let facts = decided.facts;
    let started = std::time::Instant::now();
    let token = facts.decoded.token.as_ref().map(|t| t.contract);
    let totals = ledger.totals(wallet.address, facts.decoded.chain_id, token, now);
    let velocity = Velocity::including(&totals, facts);
    let decision = policies.decide(&DecisionInput {
        app,
        wallet,
        facts,
        velocity: &velocity,
        session,
        step_up,
        scopes,
        now,
    });
    let step_up_may_help = policies.step_up_may_help(&decision);
    let timings = StageTimings {
        decode: decided.decode_time,
        policy: started.elapsed(),
    };
    Outcome {
        decision: if decision.allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        },
        action: facts.action,
        determining_policies: decision.determining,
        errors: decision.errors,
        scope_not_approved: decision.scope_not_approved,
        policy_version: policies.version().to_owned(),
        digest: facts.digest.to_string(),
        labels_source: wallet.labels_source,
        facts: decision.facts,
        cedar_request: decision.cedar_request,
        entities: decision.entities,
        timings,
        step_up_may_help,
    }
}

/// Scopes that apply without a user session.
pub fn basic_scopes() -> Vec<String> {
    vec![crate::policy::BASIC_SCOPE.to_owned()]
}

/// Shared handle type for the ledger.
pub type SharedLedger = Arc<dyn Ledger>;
