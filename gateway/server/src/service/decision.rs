//! Decide, record, then answer: the one path every decision takes, whether an app asks for a dry
//! run (`/v1/authorize`), creates a signing request or a person's passkey approves one
//! (docs/architecture.md §7).
//!
//! The order is the contract: an input the decoder refuses is recorded as a refusal before it is
//! answered; a decision is recorded (with the signing request it creates or authorizes, in the
//! same transaction) before it is answered; when the log cannot take the record, the caller gets
//! `503 audit_unavailable` and no decision. A database read that fails on the way is
//! `503 store_unavailable` on every route alike.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::record::{self, DecisionRecord, Refused};
use crate::audit::store::Attachment;
use crate::error::Error;
use crate::facts::Facts;
use crate::metrics::Stage;
use crate::policy::LoadedPolicies;
use crate::records::AppRecord;
use crate::request::AuthorizeRequest;
use crate::service::pipeline::{self, Outcome};
use crate::state::AppState;

/// Who asks, for whom, about what: the parts of a decision every record names.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub request_id: &'a str,
    /// The app whose decision it is (for a step-up, the app that created the request).
    pub app: &'a AppRecord,
    /// The person the app acts for, when it acts for one.
    pub user: Option<uuid::Uuid>,
}

impl Asking<'_> {
    fn user_id(&self) -> Option<String> {
        self.user.map(|u| u.to_string())
    }
}

/// A request decoded into its facts, and how long decoding took.
#[derive(Debug)]
pub struct Decoded {
    pub facts: Facts,
    pub decode_time: Duration,
}

impl Decoded {
    /// The stage input [`pipeline::decide`] takes.
    pub fn stage(&self) -> pipeline::Decided<'_> {
        pipeline::Decided {
            facts: &self.facts,
            decode_time: self.decode_time,
        }
    }
}

/// Records `error` as the refusal of `req` (`None` when the body was not even a request) and
/// gives back what to answer: `error` itself, or the audit log's failure when it could not take
/// the record.
pub async fn refuse(
    state: &AppState,
    policies: &LoadedPolicies,
    asking: Asking<'_>,
    req: Option<&AuthorizeRequest>,
    error: Error,
) -> Error {
    state
        .metrics
        .decisions_refused
        .fetch_add(1, Ordering::Relaxed);
    let refused = Refused {
        request_id: asking.request_id,
        app: &asking.app.id,
        user: asking.user_id(),
        req,
        error: &error,
    };
    match record::commit_refusal(&state.audit, policies, refused, state.clock.now()).await {
        Ok(()) => error,
        Err(audit_error) => audit_error,
    }
}

/// Decodes `req` for `wallet`, heavy payloads on the bounded pool; an input the decoder refuses
/// is recorded as a refusal, and that refusal is the error.
pub async fn decode(
    state: &AppState,
    policies: &Arc<LoadedPolicies>,
    asking: Asking<'_>,
    wallet: alloy::primitives::Address,
    req: &AuthorizeRequest,
) -> Result<Decoded, Error> {
    match pipeline::decode_bounded(&state.decode_pool, policies, wallet, req).await {
        Ok((facts, decode_time)) => Ok(Decoded { facts, decode_time }),
        Err(error) => Err(refuse(state, policies, asking, Some(req), error).await),
    }
}

/// The scopes the person approved for this app (only `basic` without a person): the permits of
/// other scopes do not count for them.
pub async fn scopes(
    state: &AppState,
    policies: &LoadedPolicies,
    asking: Asking<'_>,
) -> Result<Vec<String>, Error> {
    crate::accounts::consent::approved_scopes(&state.store, policies, asking.app, asking.user)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "reading a consent failed");
            Error::StoreUnavailable
        })
}

/// Records `outcome` as `asking`'s decision on `req`, with `attached` (the signing request it
/// creates or authorizes) in the same transaction, under the policy set it was decided with;
/// then counts and logs it. Until this returns `Ok`, nothing may be answered or signed.
pub async fn record(
    state: &AppState,
    policies: &LoadedPolicies,
    asking: Asking<'_>,
    req: &AuthorizeRequest,
    outcome: &Outcome,
    attached: Option<Box<dyn Attachment>>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    state
        .audit
        .ensure_policy_version(policies.version(), policies.files(), now)
        .await?;
    let decision = DecisionRecord {
        request_id: asking.request_id,
        app: &asking.app.id,
        user: asking.user_id(),
        req,
        outcome,
    };
    record::commit_decision(&state.audit, decision, attached, now).await?;
    state.metrics.stage(Stage::Decode, outcome.timings.decode);
    state.metrics.stage(Stage::Policy, outcome.timings.policy);
    state.metrics.count_decision(outcome.decision);
    tracing::info!(
        request_id = %asking.request_id,
        decision = outcome.decision.as_str(),
        action = outcome.action.as_str(),
        policy_version = %outcome.policy_version,
        "decision"
    );
    Ok(())
}
