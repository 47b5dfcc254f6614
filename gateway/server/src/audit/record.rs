//! Turning what a route decided into an event: the allowlisted request summary and the
//! decision's exact Cedar request and entities, never credentials (they travel in headers and
//! are not passed here).

use time::OffsetDateTime;

use super::event::{AuditEvent, EventKind, Refusal, policy_refs, request_summary};
use super::store::Attachment;
use super::{Appended, AuditLog};
use crate::error::Error;
use crate::policy::LoadedPolicies;
use crate::request::AuthorizeRequest;
use crate::service::pipeline::Outcome;

fn wallet_of(req: &AuthorizeRequest) -> Option<String> {
    crate::service::pipeline::parse_address(&req.wallet.address)
        .ok()
        .map(|a| format!("{a:#x}"))
}

/// The event for a decision `/v1/authorize` made.
pub fn decision(
    now: OffsetDateTime,
    request_id: &str,
    app: &str,
    req: &AuthorizeRequest,
    outcome: &Outcome,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Decision, now, request_id);
    e.app = Some(app.to_owned());
    e.wallet = wallet_of(req);
    e.chain_id = Some(req.chain_id);
    e.action = Some(outcome.action.as_str().to_owned());
    e.decision = Some(outcome.decision.as_str().to_owned());
    e.determining_policies = policy_refs(&outcome.determining_policies);
    e.errors = outcome.errors.clone();
    e.scope_not_approved = outcome.scope_not_approved.clone();
    e.digest = Some(outcome.digest.to_ascii_lowercase());
    e.policy_version = Some(outcome.policy_version.clone());
    e.cedar_request = Some(outcome.cedar_request.as_str().to_owned());
    e.entities = Some(outcome.entities.as_str().to_owned());
    e.request = Some(request_summary(req));
    e
}

/// The event for an input refused before Cedar (decoder or request validation). `req` is
/// `None` when the body was not even a request.
pub fn refusal(
    now: OffsetDateTime,
    request_id: &str,
    app: &str,
    req: Option<&AuthorizeRequest>,
    policy_version: &str,
    error: &Error,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Refused, now, request_id);
    e.app = Some(app.to_owned());
    e.decision = Some("refused".to_owned());
    e.policy_version = Some(policy_version.to_owned());
    if let Some(req) = req {
        e.wallet = wallet_of(req);
        e.chain_id = Some(req.chain_id);
        e.request = Some(request_summary(req));
    }
    let message: String = error.public_message().chars().take(512).collect();
    e.refusal = Some(Refusal {
        code: error.code().to_owned(),
        message,
    });
    e
}

/// A request refused before or while it was decided, as both `/v1/authorize` and signing
/// requests commit it.
#[derive(Debug)]
pub struct Refused<'a> {
    pub request_id: &'a str,
    pub app: &'a str,
    pub user: Option<String>,
    pub req: Option<&'a AuthorizeRequest>,
    pub error: &'a Error,
}

/// Commits a refusal before it is answered (docs/architecture.md §7): the policy set it was
/// refused under, then the event. The one place a refusal of a decision route is recorded; an
/// error here is what the caller gets instead (`503 audit_unavailable`).
pub async fn commit_refusal(
    audit: &AuditLog,
    policies: &LoadedPolicies,
    refused: Refused<'_>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    audit
        .ensure_policy_version(policies.version(), policies.files(), now)
        .await?;
    let mut event = refusal(
        now,
        refused.request_id,
        refused.app,
        refused.req,
        policies.version(),
        refused.error,
    );
    event.user = refused.user;
    audit.append(event).await?;
    Ok(())
}

/// A decision as `/v1/authorize`, a new signing request and a completed step-up commit it.
#[derive(Debug)]
pub struct DecisionRecord<'a> {
    pub request_id: &'a str,
    pub app: &'a str,
    pub user: Option<String>,
    pub req: &'a AuthorizeRequest,
    pub outcome: &'a Outcome,
}

/// Commits a decision before it is answered (docs/architecture.md §7), with `attached` (the
/// signing request it creates or authorizes) in the same transaction. The caller has recorded
/// the policy set it decided under ([`AuditLog::ensure_policy_version`]) before deciding. The
/// one place a decision of these routes reaches the log; an error is the caller's answer
/// instead (`503 audit_unavailable`), and nothing was decided in the log's eyes.
pub async fn commit_decision(
    audit: &AuditLog,
    record: DecisionRecord<'_>,
    attached: Option<Box<dyn Attachment>>,
    now: OffsetDateTime,
) -> Result<Appended, Error> {
    let mut event = decision(
        now,
        record.request_id,
        record.app,
        record.req,
        record.outcome,
    );
    event.user = record.user;
    audit.append_with(event, attached).await
}
