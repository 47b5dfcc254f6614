//! Authorization with Cedar (DESIGN §3–§4). PLACEHOLDER: replaced by the real engine.

use std::path::PathBuf;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::decode::Registry;
use crate::error::{Error, Result};
use crate::facts::Facts;
use crate::ledger::Velocity;
use crate::records::{AppRecord, SessionFacts, WalletRecord};

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
    /// Scopes the user approved for this app; `basic` only without a session.
    pub scopes: &'a [String],
    pub now: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Permit,
    Forbid,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeterminingPolicy {
    /// The policy's `@id`.
    pub id: String,
    pub effect: Effect,
    /// The policy's `@reason`, or "not permitted by any policy" for the default deny.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub determining: Vec<DeterminingPolicy>,
    /// Evaluation errors (any error makes the decision a deny).
    pub errors: Vec<String>,
    /// The Cedar context as sent, in plain JSON (addresses as "0x…" strings): the `facts`.
    pub facts: serde_json::Value,
    /// `{principal, action, resource, context}` in Cedar's JSON form, for audit and replay.
    pub cedar_request: serde_json::Value,
    /// The dynamic entities (app, wallet) in Cedar's JSON entity form, for audit and replay.
    pub entities: serde_json::Value,
}

/// One loaded, validated policy set.
#[derive(Debug)]
pub struct LoadedPolicies {
    version: String,
    registry: Registry,
}

impl LoadedPolicies {
    pub fn load(_paths: &PolicyPaths) -> Result<LoadedPolicies> {
        Err(Error::Internal("policy engine not built".to_owned()))
    }
    pub fn version(&self) -> &str {
        &self.version
    }
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    pub fn decide(&self, _input: &DecisionInput<'_>) -> Decision {
        Decision {
            allowed: false,
            determining: Vec::new(),
            errors: vec!["policy engine not built".to_owned()],
            facts: serde_json::Value::Null,
            cedar_request: serde_json::Value::Null,
            entities: serde_json::Value::Null,
        }
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
        Ok(Engine { paths, current: arc_swap::ArcSwap::from_pointee(loaded) })
    }
    pub fn current(&self) -> Arc<LoadedPolicies> {
        self.current.load_full()
    }
    /// Validates the files again and swaps them in; an invalid set leaves the old one active.
    pub fn reload(&self) -> Result<String> {
        let loaded = LoadedPolicies::load(&self.paths)?;
        let v = loaded.version().to_owned();
        self.current.store(Arc::new(loaded));
        Ok(v)
    }
}
