//! Slicing: evaluate only the policies that can apply to the calling app.
//!
//! A policy whose principal constraint is `principal == Parapet::App::"x"` (or
//! `principal in Parapet::App::"x"`) can only be satisfied for app `x`; one constrained by
//! `principal in Parapet::AppGroup::"g"` only for apps in group `g` (app groups do not nest,
//! so an app's ancestors are exactly its groups). Everything else — no constraint, `is`, or a
//! condition in `when`/`unless` — is kept for every app. Dropping a policy that cannot be
//! satisfied changes neither a permit's nor a forbid's outcome, and it cannot hide an error
//! either: Cedar checks the scope before evaluating conditions, so such a policy never errors.
//!
//! Permits whose `@scope` the user has not approved are dropped too: for this request they do
//! not exist. Forbids are never dropped by scope.
//!
//! Slices are built on first use and cached per (app if it has policies of its own, its groups
//! that have policies, approved scopes that exist), so apps without app-specific policies all
//! share one slice.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{Policy, PolicySet, PrincipalConstraint};
use parking_lot::RwLock;

use super::load::PolicyMeta;
use super::names::Names;
use crate::error::{Error, Result};

/// More keys than this and the cache starts over; slices are cheap to rebuild and the number
/// of distinct keys in practice is the number of apps with policies of their own.
const MAX_CACHED_SLICES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Always,
    App(String),
    Group(String),
}

pub(crate) fn target(policy: &Policy, names: &Names) -> Target {
    let uid = match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid) => uid,
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => return Target::Always,
    };
    let id = uid.id().unescaped().to_owned();
    if uid.type_name() == &names.app {
        Target::App(id)
    } else if uid.type_name() == &names.app_group
        && !matches!(policy.principal_constraint(), PrincipalConstraint::Eq(_))
    {
        Target::Group(id)
    } else {
        // Cannot match an app at all (strict validation refuses most of these); keeping it
        // everywhere is the conservative choice.
        Target::Always
    }
}

#[derive(Debug, Default)]
pub(crate) struct SliceIndex {
    always: Vec<usize>,
    by_app: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
}

impl SliceIndex {
    pub(crate) fn new(targets: impl IntoIterator<Item = Target>) -> SliceIndex {
        let mut index = SliceIndex::default();
        for (i, t) in targets.into_iter().enumerate() {
            match t {
                Target::Always => index.always.push(i),
                Target::App(a) => index.by_app.entry(a).or_default().push(i),
                Target::Group(g) => index.by_group.entry(g).or_default().push(i),
            }
        }
        index
    }

    /// The normalised cache key: only what can change the slice.
    pub(crate) fn key(
        &self,
        app: &str,
        groups: &[String],
        scopes: &[String],
        known_scopes: &impl Fn(&str) -> bool,
    ) -> SliceKey {
        let mut g: Vec<String> = groups
            .iter()
            .filter(|g| self.by_group.contains_key(g.as_str()))
            .cloned()
            .collect();
        g.sort_unstable();
        g.dedup();
        let mut s: Vec<String> = scopes.iter().filter(|s| known_scopes(s)).cloned().collect();
        s.sort_unstable();
        s.dedup();
        SliceKey {
            app: self.by_app.contains_key(app).then(|| app.to_owned()),
            groups: g,
            scopes: s,
        }
    }

    /// Indices of the policies in the slice, in load order.
    fn members(&self, key: &SliceKey) -> Vec<usize> {
        let mut out = self.always.clone();
        if let Some(app) = &key.app {
            out.extend(self.by_app.get(app).into_iter().flatten());
        }
        for g in &key.groups {
            out.extend(self.by_group.get(g).into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SliceKey {
    app: Option<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
}

impl SliceKey {
    pub(crate) fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// Builds the policy set for `members` of `policies`, keeping permits only when their scope
/// is in `scopes`.
pub(crate) fn build_set(
    policies: &[PolicyMeta],
    members: impl IntoIterator<Item = usize>,
    scopes: &[String],
) -> Result<PolicySet> {
    let mut set = PolicySet::new();
    for i in members {
        let Some(meta) = policies.get(i) else {
            continue;
        };
        if !meta.in_scopes(scopes) {
            continue;
        }
        set.add(meta.policy.clone())
            .map_err(|e| Error::Internal(format!("slice: {e}")))?;
    }
    Ok(set)
}

#[derive(Debug, Default)]
pub(crate) struct SliceCache {
    map: RwLock<HashMap<SliceKey, Arc<PolicySet>>>,
}

impl SliceCache {
    pub(crate) fn get_or_build(
        &self,
        index: &SliceIndex,
        policies: &[PolicyMeta],
        key: SliceKey,
    ) -> Result<Arc<PolicySet>> {
        if let Some(s) = self.map.read().get(&key) {
            return Ok(Arc::clone(s));
        }
        let set = Arc::new(build_set(policies, index.members(&key), key.scopes())?);
        let mut map = self.map.write();
        if map.len() >= MAX_CACHED_SLICES {
            tracing::debug!(slices = map.len(), "policy slice cache full; starting over");
            map.clear();
        }
        Ok(Arc::clone(map.entry(key).or_insert(set)))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}
