//! Replay: re-evaluates a recorded decision's exact Cedar request and entities against the
//! policy-set version it was decided under, read back from the store — never against today's
//! files or today's app and wallet records.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::chain::StoredEvent;
use super::store::Store;
use crate::error::{Error, Result};
use crate::policy::{LoadedPolicies, PolicyPaths};

/// Which event to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Seq(i64),
    RequestId(String),
}

impl Target {
    /// A decimal number is a sequence number; anything else a request id.
    pub fn parse(s: &str) -> Target {
        match s.parse::<i64>() {
            Ok(n) => Target::Seq(n),
            Err(_) => Target::RequestId(s.to_owned()),
        }
    }
}

/// A decision as recorded or as replayed, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionSummary {
    pub decision: String,
    /// Determining policy ids, sorted.
    pub determining: Vec<String>,
    /// Evaluation errors, sorted.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub seq: String,
    pub request_id: String,
    pub policy_version: String,
    pub recorded: DecisionSummary,
    pub replayed: DecisionSummary,
    pub matches: bool,
}

/// Replays events, loading each stored policy version once.
#[derive(Debug)]
pub struct Replayer {
    store: Store,
    sets: HashMap<String, Arc<LoadedPolicies>>,
}

fn str_list(v: Option<&Value>, field: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = v
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| match field {
                    Some(f) => x.get(f).and_then(Value::as_str),
                    None => x.as_str(),
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Replayer {
    pub fn new(store: Store) -> Replayer {
        Replayer {
            store,
            sets: HashMap::new(),
        }
    }

    pub async fn find(&self, target: &Target) -> Result<StoredEvent> {
        let found = match target {
            Target::Seq(n) => self.store.by_seq(*n).await?,
            Target::RequestId(id) => self.store.by_request_id(id).await?,
        };
        found.ok_or(Error::NotFound)
    }

    pub async fn replay(&mut self, target: &Target) -> Result<Replayed> {
        let row = self.find(target).await?;
        self.replay_event(&row).await
    }

    /// Replays one stored event.
    pub async fn replay_event(&mut self, row: &StoredEvent) -> Result<Replayed> {
        let ev: Value = serde_json::from_str(&row.canonical)
            .map_err(|e| Error::Database(format!("event {} is not JSON: {e}", row.seq)))?;
        let field = |k: &str| ev.get(k).and_then(Value::as_str);
        if field("kind") != Some("decision") {
            return Err(Error::InvalidRequest(format!(
                "event {} is not a decision and cannot be replayed",
                row.seq
            )));
        }
        let version = field("policy_version")
            .ok_or_else(|| {
                Error::InvalidRequest(format!("event {} has no policy version", row.seq))
            })?
            .to_owned();
        let parse = |k: &str| -> Result<Value> {
            let text = field(k)
                .ok_or_else(|| Error::InvalidRequest(format!("event {} has no {k}", row.seq)))?;
            serde_json::from_str(text)
                .map_err(|e| Error::InvalidRequest(format!("event {}: {k}: {e}", row.seq)))
        };
        let cedar_request = parse("cedar_request")?;
        let entities = parse("entities")?;
        let set = self.policy_set(&version).await?;
        let d = set.replay(&cedar_request, &entities)?;
        let mut determining: Vec<String> = d.determining.iter().map(|p| p.id.clone()).collect();
        determining.sort();
        let mut errors = d.errors.clone();
        errors.sort();
        let replayed = DecisionSummary {
            decision: if d.allowed { "allow" } else { "deny" }.to_owned(),
            determining,
            errors,
        };
        let recorded = DecisionSummary {
            decision: field("decision").unwrap_or_default().to_owned(),
            determining: str_list(ev.get("determining_policies"), Some("id")),
            errors: str_list(ev.get("errors"), None),
        };
        Ok(Replayed {
            seq: row.seq.to_string(),
            request_id: field("request_id").unwrap_or_default().to_owned(),
            policy_version: version,
            matches: recorded == replayed,
            recorded,
            replayed,
        })
    }

    /// The policy set of a stored version, materialised from the store's files.
    pub async fn policy_set(&mut self, version: &str) -> Result<Arc<LoadedPolicies>> {
        if let Some(s) = self.sets.get(version) {
            return Ok(s.clone());
        }
        let stored = self.store.policy_version(version).await?.ok_or_else(|| {
            Error::InvalidRequest(format!("policy version {version} is not in the store"))
        })?;
        let files = stored.files;
        let expected = version.to_owned();
        let set = tokio::task::spawn_blocking(move || load_from_files(&files, &expected))
            .await
            .map_err(|e| Error::Internal(format!("loading a stored policy set: {e}")))??;
        let set = Arc::new(set);
        self.sets.insert(version.to_owned(), set.clone());
        Ok(set)
    }
}

/// Loads a policy set from `(relative path, content)` pairs by laying them out in a scratch
/// directory, and checks that it is the version it claims to be.
pub fn load_from_files(
    files: &[(String, Vec<u8>)],
    expected_version: &str,
) -> Result<LoadedPolicies> {
    let root = std::env::temp_dir().join(format!("parapet-replay-{}", uuid::Uuid::new_v4()));
    let result = (|| -> Result<LoadedPolicies> {
        for (rel, content) in files {
            let path = safe_join(&root, rel)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Internal(format!("replay scratch: {e}")))?;
            }
            std::fs::write(&path, content)
                .map_err(|e| Error::Internal(format!("replay scratch: {e}")))?;
        }
        for d in ["policies", "schemas"] {
            std::fs::create_dir_all(root.join(d))
                .map_err(|e| Error::Internal(format!("replay scratch: {e}")))?;
        }
        Ok(LoadedPolicies::load(&PolicyPaths {
            policies: root.join("policies"),
            schemas: root.join("schemas"),
        })?)
    })();
    let _ = std::fs::remove_dir_all(&root);
    let set = result?;
    if set.version() != expected_version {
        return Err(Error::Internal(format!(
            "stored policy files load as version {} instead of {expected_version}",
            set.version()
        )));
    }
    Ok(set)
}

fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(root.join(p))
    } else {
        Err(Error::Internal(format!(
            "stored policy path {rel:?} is not relative"
        )))
    }
}
