//! One decision: build the Cedar request from typed values, evaluate the app's slice, and turn
//! Cedar's answer into ours (deny by default, forbid wins, any error denies).

use cedar_policy::{Context, Entities, Entity, EntityUid, PolicySet, Request};
use serde_json::Value;

use super::context::{self, Val};
use super::entities::Store;
use super::json_text::{self, JsonText};
use super::names::{self, address_id};
use super::slice::{Slice, Want};
use super::{
    BASIC_SCOPE, DEFAULT_DENY_ID, DEFAULT_DENY_REASON, Decision, DecisionInput, DeterminingPolicy,
    Effect, LoadedPolicies, SCOPE_NOT_APPROVED_ID, SCOPE_NOT_APPROVED_REASON,
};
use crate::error::{Error, Result};
use crate::facts::Action;

/// A request ready to evaluate, with its audit forms.
struct Built {
    request: Request,
    /// The context it was built from, kept to build the same request with other scopes.
    fields: Vec<(&'static str, Val)>,
    store: Store,
    /// Context attributes present, for slicing.
    present: u32,
    facts: JsonText,
    cedar_request: JsonText,
    entities: JsonText,
}

fn build(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Result<Built> {
    let names = &set.names;
    let fields: Vec<(&'static str, Val)> = context::build(input);
    let context = super::values::context(&fields, names)?;
    let wallet_id = address_id(&input.wallet.address);
    let action = input.facts.action.as_str();
    let request = Request::new(
        names.uid(&names.app, &input.app.id),
        names.action(input.facts.action)?,
        names.uid(&names.wallet, &wallet_id),
        context,
        None,
    )
    .map_err(|e| Error::Internal(format!("request: {e}")))?;
    let mut addresses = Vec::new();
    for (_, v) in &fields {
        v.collect_addresses(&mut addresses);
    }
    let (store, entities) = set
        .statics
        .for_request(names, &set.stores, input, addresses)?;
    Ok(Built {
        request,
        present: context::presence(&fields),
        store,
        facts: json_text::facts(&fields),
        cedar_request: json_text::cedar_request(&input.app.id, action, &wallet_id, &fields),
        entities,
        fields,
    })
}

/// `built`'s request with `context.scopes` replaced: what [`decide_in`] evaluates, for a
/// default deny, with every offered scope approved. Only the context differs; the entities
/// and the audit forms stay the first request's.
fn with_scopes(set: &LoadedPolicies, built: &Built, scopes: &[String]) -> Result<Request> {
    let fields: Vec<(&'static str, Val)> = built
        .fields
        .iter()
        .map(|(k, v)| match *k {
            context::SCOPES => (*k, context::scopes(scopes)),
            _ => (*k, v.clone()),
        })
        .collect();
    let context = super::values::context(&fields, &set.names)?;
    let known = |uid: Option<&EntityUid>| {
        uid.cloned()
            .ok_or_else(|| Error::Internal("request: an unknown entity".to_owned()))
    };
    let r = &built.request;
    Request::new(
        known(r.principal())?,
        known(r.action())?,
        known(r.resource())?,
        context,
        None,
    )
    .map_err(|e| Error::Internal(format!("request: {e}")))
}

struct Verdict {
    allowed: bool,
    determining: Vec<DeterminingPolicy>,
    errors: Vec<String>,
    scope_not_approved: Vec<String>,
}

impl Verdict {
    /// A deny that nothing forbade, nothing permitted and nothing errored.
    fn is_default_deny(&self) -> bool {
        !self.allowed
            && self.errors.is_empty()
            && self
                .determining
                .iter()
                .all(|d| d.effect == Effect::DefaultDeny)
    }

    /// `self` is a default deny and `all` is the verdict with every offered scope approved:
    /// when `all` allows, the deny becomes a [`SCOPE_NOT_APPROVED_ID`] deny naming the scopes
    /// of the permits that would have allowed it.
    fn with_unapproved(
        mut self,
        all: &Verdict,
        set: &LoadedPolicies,
        approved: &[String],
    ) -> Verdict {
        if !all.allowed {
            return self;
        }
        let mut missing: Vec<String> = all
            .determining
            .iter()
            .filter_map(|d| set.policy(&d.id).and_then(|m| m.effective_scope()))
            .filter(|s| !approved.iter().any(|a| a == s))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.determining = vec![DeterminingPolicy {
                id: SCOPE_NOT_APPROVED_ID.to_owned(),
                effect: Effect::ScopeNotApproved,
                reason: SCOPE_NOT_APPROVED_REASON.to_owned(),
            }];
            self.scope_not_approved = missing;
        }
        self
    }
}

fn evaluate(
    set: &LoadedPolicies,
    request: &Request,
    slice: &PolicySet,
    store: &Entities,
) -> Verdict {
    let response = set.authorizer.is_authorized(request, slice, store);
    let mut errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(ToString::to_string)
        .collect();
    errors.sort();
    let cedar_allows = response.decision() == cedar_policy::Decision::Allow;
    let allowed = cedar_allows && errors.is_empty();
    let mut determining: Vec<DeterminingPolicy> = if cedar_allows && !allowed {
        // Permits were satisfied but something errored: no policy determined this deny.
        Vec::new()
    } else {
        response
            .diagnostics()
            .reason()
            .filter_map(|id| set.policy(AsRef::<str>::as_ref(id)))
            .map(|m| DeterminingPolicy {
                id: m.id.clone(),
                effect: m.effect,
                reason: m.reason.clone(),
            })
            .collect()
    };
    determining.sort_by(|a, b| a.id.cmp(&b.id));
    if !allowed && determining.is_empty() && errors.is_empty() {
        determining.push(DeterminingPolicy {
            id: DEFAULT_DENY_ID.to_owned(),
            effect: Effect::DefaultDeny,
            reason: DEFAULT_DENY_REASON.to_owned(),
        });
    }
    Verdict {
        allowed,
        determining,
        errors,
        scope_not_approved: Vec::new(),
    }
}

/// The approved scopes that count for this app: known, offered to it, sorted, without
/// duplicates. `basic` is always among them.
fn effective_scopes(
    set: &LoadedPolicies,
    app: &str,
    groups: &[String],
    approved: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = set
        .offered_scopes_to(app, groups)
        .map(|(id, _)| id)
        .filter(|id| *id == BASIC_SCOPE || approved.iter().any(|a| a == id))
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

/// Every scope offered to the app.
fn offered(set: &LoadedPolicies, app: &str, groups: &[String]) -> Vec<String> {
    set.offered_scopes_to(app, groups)
        .map(|(id, _)| id.to_owned())
        .collect()
}

fn slice_for(set: &LoadedPolicies, want: &Want<'_>) -> Result<std::sync::Arc<Slice>> {
    let key = set.index.key(want, &|s: &str| set.scopes.contains_key(s));
    set.slices.get_or_build(&set.index, &set.metas, key)
}

fn finish(built: Built, v: Verdict) -> Decision {
    Decision {
        allowed: v.allowed,
        determining: v.determining,
        errors: v.errors,
        scope_not_approved: v.scope_not_approved,
        facts: built.facts,
        cedar_request: built.cedar_request,
        entities: built.entities,
    }
}

fn failed(set: &LoadedPolicies, e: &Error) -> Decision {
    tracing::error!(policy_version = %set.version, error = %e, "could not build the Cedar request; denying");
    Decision::failed(vec![format!("request could not be evaluated: {e}")])
}

/// The policies `input` is evaluated against: the app's slice, or the whole set.
fn policies_for(
    set: &LoadedPolicies,
    input: &DecisionInput<'_>,
    present: u32,
    whole: bool,
) -> Result<std::sync::Arc<Slice>> {
    if whole {
        let key = set
            .index
            .whole_key(input.scopes, &|s: &str| set.scopes.contains_key(s));
        set.slices.get_or_build(&set.index, &set.metas, key)
    } else {
        slice_for(
            set,
            &Want {
                action: input.facts.action,
                app: &input.app.id,
                groups: &input.app.groups,
                scopes: input.scopes,
                present,
            },
        )
    }
}

/// Builds and evaluates `input` against the app's slice (or the whole set); also gives the
/// number of policies evaluated.
fn verdict(
    set: &LoadedPolicies,
    input: &DecisionInput<'_>,
    whole: bool,
) -> Result<(Built, Verdict, usize)> {
    let built = build(set, input)?;
    let policies = policies_for(set, input, built.present, whole)?;
    let v = evaluate(set, &built.request, &policies, built.store.entities());
    Ok((built, v, policies.len()))
}

fn decide_in(set: &LoadedPolicies, input: &DecisionInput<'_>, whole: bool) -> Decision {
    let run = || -> Result<Decision> {
        let approved = effective_scopes(set, &input.app.id, &input.app.groups, input.scopes);
        let input = DecisionInput {
            scopes: &approved,
            ..*input
        };
        let (built, mut v, evaluated) = verdict(set, &input, whole)?;
        if v.is_default_deny() {
            let all = offered(set, &input.app.id, &input.app.groups);
            if all.len() > approved.len() {
                let input = DecisionInput {
                    scopes: &all,
                    ..input
                };
                let policies = policies_for(set, &input, built.present, whole)?;
                // The same policies as the first evaluation (no permit of the other scopes
                // applies to this request): the same default deny, so nothing to evaluate.
                if policies.len() > evaluated {
                    let request = with_scopes(set, &built, &all)?;
                    let with_all = evaluate(set, &request, &policies, built.store.entities());
                    v = v.with_unapproved(&with_all, set, &approved);
                }
            }
        }
        Ok(finish(built, v))
    };
    run().unwrap_or_else(|e| failed(set, &e))
}

pub(crate) fn decide(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Decision {
    decide_in(set, input, false)
}

pub(crate) fn decide_unsliced(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Decision {
    decide_in(set, input, true)
}

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("replay: {what}: {e}"))
}

fn uid_field(req: &Value, key: &str, ty: &cedar_policy::EntityTypeName) -> Result<EntityUid> {
    let v = req.get(key).ok_or_else(|| bad(key, "missing"))?;
    let uid = EntityUid::from_json(v.clone()).map_err(|e| bad(key, e))?;
    if uid.type_name() != ty {
        return Err(bad(key, format!("expected a {ty}, got {uid}")));
    }
    Ok(uid)
}

pub(crate) fn replay(
    set: &LoadedPolicies,
    cedar_request: &Value,
    entities: &Value,
) -> Result<Decision> {
    let names = &set.names;
    let principal = uid_field(cedar_request, "principal", &names.app)?;
    let action_ty: cedar_policy::EntityTypeName = names::ACTION
        .parse()
        .map_err(|e| Error::Internal(format!("action type: {e}")))?;
    let action = uid_field(cedar_request, "action", &action_ty)?;
    let resource = uid_field(cedar_request, "resource", &names.wallet)?;
    let context_json = cedar_request
        .get("context")
        .ok_or_else(|| bad("context", "missing"))?;
    let request_with = |context_json: &Value| -> Result<Request> {
        let context = Context::from_json_value(context_json.clone(), Some((&set.schema, &action)))
            .map_err(|e| bad("context", e))?;
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            Some(&set.schema),
        )
        .map_err(|e| bad("request", e))
    };
    let request = request_with(context_json)?;

    let items = entities
        .as_array()
        .ok_or_else(|| bad("entities", "expected an array"))?;
    let mut dynamic = Vec::with_capacity(items.len());
    let mut groups: Vec<String> = Vec::new();
    for item in items {
        let e = Entity::from_json_value(item.clone(), Some(&set.schema))
            .map_err(|e| bad("entities", e))?;
        let ty = e.uid().type_name().clone();
        if ty != names.app && ty != names.wallet && ty != names.user {
            return Err(bad(
                "entities",
                format!("{} is not an app, wallet or user", e.uid()),
            ));
        }
        if e.uid() == principal {
            groups = e
                .clone()
                .into_inner()
                .2
                .into_iter()
                .filter(|p| p.type_name() == &names.app_group)
                .map(|p| p.id().unescaped().to_owned())
                .collect();
        }
        dynamic.push(e);
    }
    let scopes: Vec<String> = context_json
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let store = set.statics.for_replay(dynamic)?;
    let action_id = action.id().unescaped().to_owned();
    let action_kind = Action::ALL
        .iter()
        .copied()
        .find(|a| a.as_str() == action_id)
        .ok_or_else(|| bad("action", format!("unknown action {action_id:?}")))?;
    let present = context_json
        .as_object()
        .map(|m| m.keys().fold(0, |bits, k| bits | context::attribute_bit(k)))
        .unwrap_or(0);
    let app_id = principal.id().unescaped();
    let approved = effective_scopes(set, app_id, &groups, &scopes);
    let want = Want {
        action: action_kind,
        app: app_id,
        groups: &groups,
        scopes: &approved,
        present,
    };
    let slice = slice_for(set, &want)?;
    let mut v = evaluate(set, &request, &slice, &store);
    if v.is_default_deny() {
        let all = offered(set, app_id, &groups);
        if all.len() > approved.len() {
            let mut with_all = context_json.clone();
            if let Some(m) = with_all.as_object_mut() {
                m.insert("scopes".to_owned(), Value::from(all.clone()));
            }
            let request = request_with(&with_all)?;
            let slice = slice_for(
                set,
                &Want {
                    scopes: &all,
                    ..want
                },
            )?;
            let all_v = evaluate(set, &request, &slice, &store);
            v = v.with_unapproved(&all_v, set, &approved);
        }
    }
    Ok(Decision {
        allowed: v.allowed,
        determining: v.determining,
        errors: v.errors,
        scope_not_approved: v.scope_not_approved,
        facts: JsonText::from_value(&context::cedar_json_to_plain(context_json)),
        cedar_request: JsonText::from_value(cedar_request),
        entities: JsonText::from_value(entities),
    })
}
