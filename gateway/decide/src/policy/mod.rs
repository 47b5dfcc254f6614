//! Authorization with Cedar (docs/architecture.md §3–§4).
//!
//! A policy set is loaded and strictly validated as a whole ([`LoadedPolicies::load`]), then
//! shared read-only by every request until a reload swaps it ([`Engine`]). Decisions are deny
//! by default, any satisfied `forbid` wins, and any evaluation error is a deny: Cedar skips a
//! policy that errors, which would silently fail open for a `forbid`.
//!
//! Only the calling app's slice of the set is evaluated (policies whose principal constraint
//! names the app or one of its groups, plus the unconstrained ones); see [`slice`]. The
//! request is built from typed values, never from JSON, because building it dominates the
//! cost of a decision otherwise.

mod cases;
mod context;
mod decide;
mod diag;
mod entities;
mod format;
mod json_text;
mod load;
mod meta;
mod names;
mod scopes;
mod slice;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod values;
mod version;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

pub use json_text::JsonText;

use crate::decode::Registry;
use crate::error::Result;
use crate::facts::Facts;
use crate::ledger::Velocity;
use crate::records::{AppRecord, SessionFacts, WalletRecord};

pub use cases::{
    CaseExpect, CaseResult, DEFAULT_CASE_NOW, format_case_table, run_cases, run_cases_with,
};
pub use format::format_policies;
pub use meta::PolicyMeta;
pub use scopes::{MAX_SCOPE_DESCRIPTION, MAX_SCOPE_NAME, ScopeDef};

/// The id reported for a deny that no `forbid` caused: nothing permitted the request.
/// Reserved: no policy may use it as its `@id`.
pub const DEFAULT_DENY_ID: &str = "default-deny";
/// The reason reported with [`DEFAULT_DENY_ID`].
pub const DEFAULT_DENY_REASON: &str = "not permitted by any policy";
/// The id reported for a deny that no `forbid` caused and that only permits in consent scopes
/// the user has not approved for this app would have allowed (`Decision::scope_not_approved`
/// names those scopes). Reserved like [`DEFAULT_DENY_ID`].
pub const SCOPE_NOT_APPROVED_ID: &str = "scope-not-approved";
/// The reason reported with [`SCOPE_NOT_APPROVED_ID`].
pub const SCOPE_NOT_APPROVED_REASON: &str =
    "permitted only in consent scopes the user has not approved for this app";
/// The consent scope every permit without `@scope` belongs to; always required.
pub const BASIC_SCOPE: &str = "basic";

/// Where a policy set lives: `policies/` (.cedar, entities/, scopes.json, tests/) and `schemas/`
/// (parapet.cedarschema, tokens.json, abis/).
#[derive(Debug, Clone)]
pub struct PolicyPaths {
    pub policies: PathBuf,
    pub schemas: PathBuf,
}

/// Everything one decision reads besides the loaded policy set.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    pub app: &'a AppRecord,
    pub wallet: &'a WalletRecord,
    pub facts: &'a Facts,
    pub velocity: &'a Velocity,
    pub session: Option<&'a SessionFacts>,
    pub step_up: bool,
    /// Scopes the user approved for this app; `basic` only without a session. Scopes that
    /// are unknown or not offered to the app are ignored and `basic` is always added, so
    /// `context.scopes` holds exactly the approved scopes that count.
    pub scopes: &'a [String],
    pub now: OffsetDateTime,
}

/// How a determining policy decided: `default_deny` when nothing forbade and nothing permitted
/// the request (id `default-deny`); `scope_not_approved` when only permits in consent scopes the
/// person has not approved for this app would allow it (id `scope-not-approved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Permit,
    Forbid,
    /// No policy forbade the request and none permitted it. Kept apart from `Forbid` so that
    /// callers (step-up, reports) never mistake the absence of a permit for a policy's verdict.
    DefaultDeny,
    /// No policy forbade the request, and only permits in consent scopes the user has not
    /// approved would have allowed it (see [`Decision::scope_not_approved`]).
    ScopeNotApproved,
}

/// A policy that determined a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeterminingPolicy {
    /// The policy's `@id`, or [`DEFAULT_DENY_ID`].
    pub id: String,
    pub effect: Effect,
    /// The policy's `@reason`, or "not permitted by any policy" for the default deny.
    pub reason: String,
}

/// One decision. `determining` is sorted by id:
/// - allow: the permits that were satisfied (in an approved scope);
/// - deny by policy: the forbids that were satisfied;
/// - deny because nothing permitted it (and nothing errored): exactly one entry with id
///   [`DEFAULT_DENY_ID`], effect [`Effect::DefaultDeny`] and reason [`DEFAULT_DENY_REASON`];
/// - the same, but permits in scopes offered to the app and not approved would have allowed
///   it (with nothing erroring then either): exactly one entry with id
///   [`SCOPE_NOT_APPROVED_ID`], effect [`Effect::ScopeNotApproved`] and reason
///   [`SCOPE_NOT_APPROVED_REASON`], and `scope_not_approved` naming those scopes;
/// - deny because of evaluation errors: the satisfied forbids, if any, and `errors` non-empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub determining: Vec<DeterminingPolicy>,
    /// Evaluation errors (any error makes the decision a deny).
    pub errors: Vec<String>,
    /// Scope ids, sorted, whose permits would have allowed the request had the user approved
    /// them; empty unless the determining entry is [`SCOPE_NOT_APPROVED_ID`].
    pub scope_not_approved: Vec<String>,
    /// The Cedar context as sent, in plain JSON (addresses as "0x…" strings): the `facts`.
    pub facts: JsonText,
    /// `{principal, action, resource, context}` in Cedar's JSON form, for audit and replay.
    pub cedar_request: JsonText,
    /// The dynamic entities (app, wallet, users) in Cedar's JSON entity form, for audit and
    /// replay.
    pub entities: JsonText,
}

impl Decision {
    /// A deny that is reported as such, e.g. when the request could not even be built.
    fn failed(errors: Vec<String>) -> Decision {
        Decision {
            allowed: false,
            determining: Vec::new(),
            errors,
            scope_not_approved: Vec::new(),
            facts: JsonText::from_value(&serde_json::Value::Object(serde_json::Map::new())),
            cedar_request: JsonText::from_value(&serde_json::Value::Null),
            entities: JsonText::from_value(&serde_json::Value::Array(Vec::new())),
        }
    }
}

/// One loaded, validated policy set.
#[derive(Debug)]
pub struct LoadedPolicies {
    version: String,
    registry: Registry,
    files: Vec<(String, Vec<u8>)>,
    schema: cedar_policy::Schema,
    metas: Vec<PolicyMeta>,
    meta_by_id: HashMap<String, usize>,
    scopes: BTreeMap<String, ScopeDef>,
    index: slice::SliceIndex,
    slices: slice::SliceCache,
    statics: entities::StaticEntities,
    stores: entities::StoreCache,
    names: names::Names,
    authorizer: cedar_policy::Authorizer,
}

impl LoadedPolicies {
    /// Reads, parses and strictly validates every file of the set; any problem refuses the
    /// whole set with `Error::PolicySetInvalid` listing `file:line: message` entries.
    pub fn load(paths: &PolicyPaths) -> Result<LoadedPolicies> {
        load::load(paths)
    }

    /// SHA-256 (hex) of the RFC 8785 manifest of every file of the set.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every file the version covers, as `(path relative to the project root, bytes)`, sorted
    /// by path, so that the exact set can be stored alongside decisions made with it.
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }

    /// Every policy with its annotations and location, in load order (files by name).
    pub fn policies(&self) -> &[PolicyMeta] {
        &self.metas
    }

    /// A policy by `@id`.
    pub fn policy(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta_by_id.get(id).and_then(|i| self.metas.get(*i))
    }

    /// The consent scopes of `policies/scopes.json`.
    pub fn scopes(&self) -> &BTreeMap<String, ScopeDef> {
        &self.scopes
    }

    pub fn schema(&self) -> &cedar_policy::Schema {
        &self.schema
    }

    /// Decides one request. Never fails: a request that cannot even be built is a deny with
    /// the reason in `errors`.
    pub fn decide(&self, input: &DecisionInput<'_>) -> Decision {
        decide::decide(self, input)
    }

    /// Re-evaluates a recorded decision (`cedar_request` and `entities` exactly as a
    /// [`Decision`] carried them) against this set, so an auditor can check what was decided.
    pub fn replay(
        &self,
        cedar_request: &serde_json::Value,
        entities: &serde_json::Value,
    ) -> Result<Decision> {
        decide::replay(self, cedar_request, entities)
    }

    /// Evaluates against the whole set (its permits still limited to the approved scopes)
    /// instead of the app's slice. Slower; exists so that tests can prove slicing never
    /// changes an answer, and benches can show what slicing saves.
    pub fn decide_unsliced(&self, input: &DecisionInput<'_>) -> Decision {
        decide::decide_unsliced(self, input)
    }

    /// True when `decision` is a deny that only `@step_up` forbids caused
    /// (docs/architecture.md §6): the caller may then re-evaluate with `step_up: true` to see
    /// whether a step-up would help.
    pub fn step_up_may_help(&self, decision: &Decision) -> bool {
        !decision.allowed
            && decision.errors.is_empty()
            && !decision.determining.is_empty()
            && decision.determining.iter().all(|d| {
                d.effect == Effect::Forbid && self.policy(&d.id).is_some_and(|m| m.step_up)
            })
    }

    /// The consent scopes offered to `app` (docs/architecture.md §3), by id: those without `apps`,
    /// and those whose `apps` name the app or one of its groups.
    pub fn offered_scopes<'a>(
        &'a self,
        app: &'a AppRecord,
    ) -> impl Iterator<Item = (&'a str, &'a ScopeDef)> + 'a {
        self.offered_scopes_to(&app.id, &app.groups)
    }

    pub(crate) fn offered_scopes_to<'a>(
        &'a self,
        app: &'a str,
        groups: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a ScopeDef)> + 'a {
        self.scopes
            .iter()
            .filter(move |(_, d)| d.offered_to(app, groups))
            .map(|(id, d)| (id.as_str(), d))
    }

    /// The hash a user's consent to `app` is bound to (docs/architecture.md §3): over the scopes
    /// offered to the app, their ids, required flags and the text of their permits that can apply
    /// to the app. Editing a name or a description keeps consent; editing such a permit, a required
    /// flag or which scopes are offered asks users again.
    pub fn consent_hash(&self, app: &AppRecord) -> Result<String> {
        load::consent_hash(self, &app.id, &app.groups)
    }

    /// Number of cached slices; for tests and metrics.
    pub fn cached_slices(&self) -> usize {
        self.slices.len()
    }
}

/// The active policy set, swapped atomically on reload.
#[derive(Debug)]
pub struct Engine {
    paths: PolicyPaths,
    current: arc_swap::ArcSwap<LoadedPolicies>,
}

impl Engine {
    pub fn new(paths: PolicyPaths) -> Result<Engine> {
        let loaded = LoadedPolicies::load(&paths)?;
        Ok(Engine {
            paths,
            current: arc_swap::ArcSwap::from_pointee(loaded),
        })
    }
    pub fn current(&self) -> Arc<LoadedPolicies> {
        self.current.load_full()
    }
    /// Validates the files again and swaps them in; an invalid set leaves the old one active.
    pub fn reload(&self) -> Result<String> {
        let loaded = LoadedPolicies::load(&self.paths)?;
        let v = loaded.version().to_owned();
        tracing::info!(policy_version = %v, "policy set reloaded");
        self.current.store(Arc::new(loaded));
        Ok(v)
    }
}
