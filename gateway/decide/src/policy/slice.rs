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
//! The same holds for the action scope: a policy constrained to other actions than the
//! request's is dropped (Cedar would spend about a microsecond per policy only to find that out).
//!
//! Permits whose `@scope` the user has not approved are dropped too: for this request they do
//! not exist. Forbids are never dropped by scope.
//!
//! Slices are built on first use and cached per (action, app if it has policies of its own, its
//! groups that have policies, approved scopes that exist), so apps without app-specific
//! policies all share one slice per action.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{ActionConstraint, Entities, Policy, PolicySet, PrincipalConstraint};
use parking_lot::RwLock;
use serde_json::Value;

use super::meta::PolicyMeta;
use super::names::Names;
use crate::error::{Error, Result};
use crate::facts::Action;

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

/// Bit `i` set: the policy's action scope admits `Action::ALL[i]`.
pub(crate) fn action_mask(policy: &Policy, names: &Names, actions: &Entities) -> Result<u16> {
    let mut mask = 0u16;
    for (i, a) in Action::ALL.iter().enumerate() {
        let uid = names.action(*a)?;
        let admits = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(u) => u == uid,
            ActionConstraint::In(us) => us
                .iter()
                .any(|u| *u == uid || actions.is_ancestor_of(u, &uid)),
        };
        if admits {
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// Index of `action` in [`Action::ALL`].
pub(crate) fn action_index(action: Action) -> usize {
    Action::ALL.iter().position(|a| *a == action).unwrap_or(0)
}

/// Top-level context attributes the policy's first `when` clause tests with leading
/// `context has …` conjuncts. When one of them is absent the policy is false before anything
/// that could error is evaluated (`&&` short-circuits left to right and scope constraints
/// never error), so it can be left out. Conjuncts after the first other one are ignored: an
/// earlier conjunct might error, and dropping the policy would then hide that error.
pub(crate) fn required_context(policy: &Policy) -> Vec<String> {
    let Ok(est) = policy.to_json() else {
        return Vec::new();
    };
    let Some(first) = est
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Vec::new();
    };
    if first.get("kind").and_then(Value::as_str) != Some("when") {
        return Vec::new();
    }
    let mut conjuncts = Vec::new();
    if let Some(body) = first.get("body") {
        flatten_and(body, &mut conjuncts);
    }
    conjuncts.iter().map_while(|c| context_has(c)).collect()
}

fn flatten_and<'a>(e: &'a Value, out: &mut Vec<&'a Value>) {
    match e.get("&&") {
        Some(and) => {
            if let Some(l) = and.get("left") {
                flatten_and(l, out);
            }
            if let Some(r) = and.get("right") {
                flatten_and(r, out);
            }
        }
        None => out.push(e),
    }
}

fn context_has(e: &Value) -> Option<String> {
    let has = e.get("has")?;
    if has.get("left")?.get("Var")?.as_str()? != "context" {
        return None;
    }
    match has.get("attr")? {
        Value::String(a) => Some(a.clone()),
        Value::Array(path) => path.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// What the index knows about one policy.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub target: Target,
    /// See [`action_mask`].
    pub actions: u16,
    /// Context attributes (as `context::presence` bits) the policy needs to be satisfiable.
    pub requires: u32,
}

/// What a request brings to slicing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub action: Action,
    pub app: &'a str,
    pub groups: &'a [String],
    pub scopes: &'a [String],
    /// Context attributes present (as `context::presence` bits).
    pub present: u32,
}

#[derive(Debug, Default)]
pub(crate) struct SliceIndex {
    /// Per policy, in load order.
    profiles: Vec<Profile>,
    always: Vec<usize>,
    by_app: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
    /// Presence bits any policy depends on; the others do not belong in a key.
    relevant: u32,
}

impl SliceIndex {
    pub(crate) fn new(profiles: Vec<Profile>) -> SliceIndex {
        let mut index = SliceIndex::default();
        for (i, p) in profiles.iter().enumerate() {
            index.relevant |= p.requires;
            match &p.target {
                Target::Always => index.always.push(i),
                Target::App(a) => index.by_app.entry(a.clone()).or_default().push(i),
                Target::Group(g) => index.by_group.entry(g.clone()).or_default().push(i),
            }
        }
        index.profiles = profiles;
        index
    }

    /// The normalised cache key: only what can change the slice.
    pub(crate) fn key(&self, want: &Want<'_>, known_scopes: &impl Fn(&str) -> bool) -> SliceKey {
        let mut g: Vec<String> = want
            .groups
            .iter()
            .filter(|g| self.by_group.contains_key(g.as_str()))
            .cloned()
            .collect();
        g.sort_unstable();
        g.dedup();
        let mut s: Vec<String> = want
            .scopes
            .iter()
            .filter(|s| known_scopes(s))
            .cloned()
            .collect();
        s.sort_unstable();
        s.dedup();
        SliceKey {
            whole: false,
            action: action_index(want.action),
            present: want.present & self.relevant,
            app: self
                .by_app
                .contains_key(want.app)
                .then(|| want.app.to_owned()),
            groups: g,
            scopes: s,
        }
    }

    /// The key of the whole set for these scopes.
    pub(crate) fn whole_key(
        &self,
        scopes: &[String],
        known_scopes: &impl Fn(&str) -> bool,
    ) -> SliceKey {
        let mut s: Vec<String> = scopes.iter().filter(|s| known_scopes(s)).cloned().collect();
        s.sort_unstable();
        s.dedup();
        SliceKey {
            whole: true,
            action: 0,
            present: 0,
            app: None,
            groups: Vec::new(),
            scopes: s,
        }
    }

    /// Whether policy `i` (load order) can apply to the app `app` in `groups` at all, by its
    /// principal constraint.
    pub(crate) fn may_apply_to(&self, i: usize, app: &str, groups: &[String]) -> bool {
        match self.profiles.get(i).map(|p| &p.target) {
            Some(Target::Always) | None => true,
            Some(Target::App(a)) => a == app,
            Some(Target::Group(g)) => groups.iter().any(|x| x == g),
        }
    }

    /// Indices of the policies in the slice, in load order.
    fn members(&self, key: &SliceKey) -> Vec<usize> {
        if key.whole {
            return (0..self.profiles.len()).collect();
        }
        let mut out = self.always.clone();
        if let Some(app) = &key.app {
            out.extend(self.by_app.get(app).into_iter().flatten());
        }
        for g in &key.groups {
            out.extend(self.by_group.get(g).into_iter().flatten());
        }
        out.retain(|i| {
            self.profiles.get(*i).is_some_and(|p| {
                p.actions & (1 << key.action) != 0 && p.requires & !key.present == 0
            })
        });
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SliceKey {
    /// The whole set (scopes still apply): what slicing is compared against.
    whole: bool,
    action: usize,
    present: u32,
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

/// A slice's policy set, and how many policies it kept: slices of one request that differ
/// only in their scopes hold the same policies exactly when they kept as many (more scopes
/// only ever keep more permits).
#[derive(Debug)]
pub(crate) struct Slice {
    set: PolicySet,
    len: usize,
}

impl Slice {
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl std::ops::Deref for Slice {
    type Target = PolicySet;

    fn deref(&self) -> &PolicySet {
        &self.set
    }
}

#[derive(Debug, Default)]
pub(crate) struct SliceCache {
    map: RwLock<HashMap<SliceKey, Arc<Slice>>>,
}

impl SliceCache {
    pub(crate) fn get_or_build(
        &self,
        index: &SliceIndex,
        policies: &[PolicyMeta],
        key: SliceKey,
    ) -> Result<Arc<Slice>> {
        if let Some(s) = self.map.read().get(&key) {
            return Ok(Arc::clone(s));
        }
        let set = build_set(policies, index.members(&key), key.scopes())?;
        let len = set.policies().count();
        let set = Arc::new(Slice { set, len });
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn policy(src: &str) -> Policy {
        Policy::from_str(src).unwrap()
    }

    #[test]
    fn principal_constraints_pick_the_target() {
        let names = Names::new().unwrap();
        let cases = [
            ("permit (principal, action, resource);", Target::Always),
            (
                "permit (principal is Parapet::App, action, resource);",
                Target::Always,
            ),
            (
                "permit (principal == Parapet::App::\"a\", action, resource);",
                Target::App("a".to_owned()),
            ),
            (
                "permit (principal in Parapet::App::\"a\", action, resource);",
                Target::App("a".to_owned()),
            ),
            (
                "permit (principal in Parapet::AppGroup::\"g\", action, resource);",
                Target::Group("g".to_owned()),
            ),
            (
                "permit (principal is Parapet::App in Parapet::AppGroup::\"g\", action, resource);",
                Target::Group("g".to_owned()),
            ),
            (
                "permit (principal, action, resource) when { principal == Parapet::App::\"a\" };",
                Target::Always,
            ),
        ];
        for (src, want) in cases {
            assert_eq!(target(&policy(src), &names), want, "{src}");
        }
    }

    #[test]
    fn only_leading_context_has_tests_are_required() {
        let req = |src: &str| required_context(&policy(src));
        assert_eq!(
            req(
                "forbid (principal, action, resource) when { context has to && context has value && context.value.scaled > 1 };"
            ),
            ["to", "value"]
        );
        assert_eq!(
            req(
                "forbid (principal, action, resource) when { context has typed_data.verifying_contract };"
            ),
            ["typed_data"]
        );
        // After a test that may error, a `has` no longer allows dropping the policy.
        assert!(
            req("forbid (principal, action, resource) when { context.chain_id + 1 > 0 && context has nft };")
                .is_empty()
        );
        // `unless` and nested `has` say nothing about presence.
        assert!(req("forbid (principal, action, resource) unless { context has nft };").is_empty());
        assert!(
            req("forbid (principal, action, resource) when { context.velocity has count_1h };")
                .is_empty()
        );
        assert!(req("forbid (principal, action, resource) when { context has nft || context has token };").is_empty());
    }
}
