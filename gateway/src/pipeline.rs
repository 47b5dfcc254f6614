//! The decision pipeline without HTTP: payload → facts → velocity → Cedar → explained decision.
//! `/v1/authorize`, `parapet decide` and `parapet policy test` all run exactly this.

use std::sync::Arc;

use alloy::primitives::Address;
use serde::Serialize;
use time::OffsetDateTime;

use crate::decode;
use crate::error::{Error, Result};
use crate::facts::{Action, Facts};
use crate::ledger::{Ledger, Velocity};
use crate::policy::{DecisionInput, DeterminingPolicy, LoadedPolicies};
use crate::records::{AppRecord, LabelsSource, SessionFacts, WalletRecord};
use crate::request::AuthorizeRequest;

/// The answer of `/v1/authorize` (without `request_id`, which the HTTP layer adds).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub decision: &'static str,
    pub action: Action,
    pub determining_policies: Vec<DeterminingPolicy>,
    pub errors: Vec<String>,
    /// Consent scopes whose permits would have allowed a denied request had the user approved
    /// them for this app (determining entry `scope-not-approved`); empty otherwise.
    pub scope_not_approved: Vec<String>,
    pub policy_version: String,
    pub digest: String,
    pub labels_source: LabelsSource,
    pub facts: serde_json::Value,
    #[serde(skip)]
    pub cedar_request: serde_json::Value,
    #[serde(skip)]
    pub entities: serde_json::Value,
    #[serde(skip)]
    pub timings: StageTimings,
    /// A deny that only `@step_up` forbids caused, without errors (DESIGN §6).
    #[serde(skip)]
    pub step_up_may_help: bool,
}

/// How long each stage took, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub decode: std::time::Duration,
    pub policy: std::time::Duration,
}

/// Parses a wallet address in any casing.
pub fn parse_address(s: &str) -> Result<Address> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| Error::InvalidAddress("expected 0x followed by 40 hex digits".to_owned()))?;
    if hex.len() != 40 {
        return Err(Error::InvalidAddress(
            "expected 0x followed by 40 hex digits".to_owned(),
        ));
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex, &mut out)
        .map_err(|_| Error::InvalidAddress("expected 0x followed by 40 hex digits".to_owned()))?;
    Ok(Address::from(out))
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
/// bound to this very request (DESIGN §6).
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
    let payload = req.payload()?;
    let started = std::time::Instant::now();
    let facts = decode::decode(payload, req.chain_id, wallet.address, policies.registry())?;
    let decoded_at = std::time::Instant::now();
    let token = facts.decoded.token.as_ref().map(|t| t.contract);
    let totals = ledger.totals(wallet.address, facts.decoded.chain_id, token, now);
    let velocity = Velocity::including(&totals, &facts);
    let decision = policies.decide(&DecisionInput {
        app,
        wallet,
        facts: &facts,
        velocity: &velocity,
        session,
        step_up,
        scopes,
        now,
    });
    let step_up_may_help = policies.step_up_may_help(&decision);
    let timings = StageTimings {
        decode: decoded_at - started,
        policy: decoded_at.elapsed(),
    };
    let outcome = Outcome {
        decision: if decision.allowed { "allow" } else { "deny" },
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
    };
    Ok((facts, outcome))
}

/// Scopes that apply without a user session.
pub fn basic_scopes() -> Vec<String> {
    vec![crate::policy::BASIC_SCOPE.to_owned()]
}

/// Shared handle type for the ledger.
pub type SharedLedger = Arc<dyn Ledger>;
