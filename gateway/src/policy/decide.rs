//! One decision: build the Cedar request from typed values, evaluate the app's slice, and turn
//! Cedar's answer into ours (deny by default, forbid wins, any error denies).

use cedar_policy::{Context, Entities, Entity, EntityUid, PolicySet, Request};
use serde_json::{Map, Value};

use super::context::{self, Val};
use super::entities::Store;
use super::names::{self, address_id, uid_json};
use super::slice::Want;
use super::{
    DEFAULT_DENY_ID, DEFAULT_DENY_REASON, Decision, DecisionInput, DeterminingPolicy, Effect,
    LoadedPolicies,
};
use crate::error::{Error, Result};
use crate::facts::Action;

/// A request ready to evaluate, with its audit forms.
struct Built {
    request: Request,
    store: Store,
    /// Context attributes present, for slicing.
    present: u32,
    facts: Value,
    cedar_request: Value,
    entities: Value,
}

fn build(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Result<Built> {
    let names = &set.names;
    let fields: Vec<(&'static str, Val)> = context::build(input);
    let context = context::to_context(&fields, names)?;
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
    let mut cedar_request = Map::with_capacity(4);
    cedar_request.insert("principal".to_owned(), uid_json(names::APP, &input.app.id));
    cedar_request.insert("action".to_owned(), uid_json(names::ACTION, action));
    cedar_request.insert("resource".to_owned(), uid_json(names::WALLET, &wallet_id));
    cedar_request.insert("context".to_owned(), context::to_json(&fields, true));
    Ok(Built {
        request,
        present: context::presence(&fields),
        store,
        facts: context::to_json(&fields, false),
        cedar_request: Value::Object(cedar_request),
        entities,
    })
}

struct Verdict {
    allowed: bool,
    determining: Vec<DeterminingPolicy>,
    errors: Vec<String>,
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
    }
}

fn slice_for(set: &LoadedPolicies, want: &Want<'_>) -> Result<std::sync::Arc<PolicySet>> {
    let key = set.index.key(want, &|s: &str| set.scopes.contains_key(s));
    set.slices.get_or_build(&set.index, &set.metas, key)
}

fn finish(built: Built, v: Verdict) -> Decision {
    Decision {
        allowed: v.allowed,
        determining: v.determining,
        errors: v.errors,
        facts: built.facts,
        cedar_request: built.cedar_request,
        entities: built.entities,
    }
}

fn failed(set: &LoadedPolicies, e: &Error) -> Decision {
    tracing::error!(policy_version = %set.version, error = %e, "could not build the Cedar request; denying");
    Decision::failed(vec![format!("request could not be evaluated: {e}")])
}

pub(crate) fn decide(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Decision {
    let run = || -> Result<Decision> {
        let built = build(set, input)?;
        let slice = slice_for(
            set,
            &Want {
                action: input.facts.action,
                app: &input.app.id,
                groups: &input.app.groups,
                scopes: input.scopes,
                present: built.present,
            },
        )?;
        let verdict = evaluate(set, &built.request, &slice, built.store.entities());
        Ok(finish(built, verdict))
    };
    run().unwrap_or_else(|e| failed(set, &e))
}

pub(crate) fn decide_unsliced(set: &LoadedPolicies, input: &DecisionInput<'_>) -> Decision {
    let run = || -> Result<Decision> {
        let built = build(set, input)?;
        let key = set
            .index
            .whole_key(input.scopes, &|s: &str| set.scopes.contains_key(s));
        let whole = set.slices.get_or_build(&set.index, &set.metas, key)?;
        let verdict = evaluate(set, &built.request, &whole, built.store.entities());
        Ok(finish(built, verdict))
    };
    run().unwrap_or_else(|e| failed(set, &e))
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
    let context = Context::from_json_value(context_json.clone(), Some((&set.schema, &action)))
        .map_err(|e| bad("context", e))?;
    let request = Request::new(
        principal.clone(),
        action.clone(),
        resource,
        context,
        Some(&set.schema),
    )
    .map_err(|e| bad("request", e))?;

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
    let slice = slice_for(
        set,
        &Want {
            action: action_kind,
            app: principal.id().unescaped(),
            groups: &groups,
            scopes: &scopes,
            present,
        },
    )?;
    let v = evaluate(set, &request, &slice, &store);
    Ok(Decision {
        allowed: v.allowed,
        determining: v.determining,
        errors: v.errors,
        facts: context::cedar_json_to_plain(context_json),
        cedar_request: cedar_request.clone(),
        entities: entities.clone(),
    })
}
