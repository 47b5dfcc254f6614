//! A request's Cedar context and dynamic entities, built as Cedar values directly.
//!
//! `cedar-policy` only takes a context or an entity's attributes as restricted expressions,
//! which it then evaluates into values. For the values a decision sends (literals, entity
//! uids, sets, records) that round trip was a third of a decision's cost: every attribute
//! built as an expression tree and walked again to become the value it already was. Here the
//! values are made with `cedar-policy-core`'s constructors (the crate under `cedar-policy`, at
//! the version it pins) and handed over through its conversions into the public types. The
//! tests hold the result equal to the expression route for every kind of value.
//!
//! The one value that still goes through an expression is a `datetime`, an extension value
//! whose representation only Cedar's extension constructs; it changes once a second and is
//! built once per second and thread.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Context, Entities, EntityTypeName, RestrictedExpression};
use cedar_policy_core::ast;
use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use super::context::{Kind, Val};
use super::names::Names;
use crate::error::{Error, Result};

/// The uid `ty::"id"` as Cedar's own type.
pub(crate) fn uid(ty: &EntityTypeName, id: &str) -> ast::EntityUID {
    let ty: &ast::EntityType = ty.as_ref();
    ast::EntityUID::from_components(ty.clone(), ast::Eid::new(id), None)
}

impl Val {
    /// This value as Cedar holds it once evaluated.
    pub(crate) fn to_value(&self, names: &Names) -> Result<ast::Value> {
        Ok(match self {
            Val::Bool(b) => ast::Value::from(*b),
            Val::Long(n) => ast::Value::from(*n),
            Val::Str(s) => ast::Value::from(s.as_str()),
            Val::Entity(kind, id) => {
                let ty = match kind {
                    Kind::Address => &names.address,
                    Kind::User => &names.user,
                };
                ast::Value::from(uid(ty, id))
            }
            Val::Set(items) => ast::Value::set(
                items
                    .iter()
                    .map(|v| v.to_value(names))
                    .collect::<Result<Vec<_>>>()?,
                None,
            ),
            Val::Record(fields) => ast::Value::record(
                fields
                    .iter()
                    .map(|(k, v)| Ok((*k, v.to_value(names)?)))
                    .collect::<Result<Vec<_>>>()?,
                None,
            ),
            Val::Datetime(s) => datetime(s)?,
        })
    }
}

thread_local! {
    static LAST_DATETIME: RefCell<Option<(String, ast::Value)>> = const { RefCell::new(None) };
}

/// `datetime("…")` evaluated, reusing this thread's previous value when the text is the same
/// (building one parses the extension function's name with Cedar's parser).
fn datetime(s: &str) -> Result<ast::Value> {
    LAST_DATETIME.with(|cell| {
        let mut last = cell.borrow_mut();
        if let Some((text, value)) = last.as_ref()
            && text == s
        {
            return Ok(value.clone());
        }
        let context =
            Context::from_pairs([("now".to_owned(), RestrictedExpression::new_datetime(s))])
                .map_err(|e| Error::Internal(format!("datetime {s:?}: {e}")))?;
        let value = match context.as_ref() {
            ast::Context::Value(map) => map.get("now").cloned(),
            ast::Context::RestrictedResidual(_) => None,
        }
        .ok_or_else(|| Error::Internal(format!("datetime {s:?} did not evaluate")))?;
        *last = Some((s.to_owned(), value.clone()));
        Ok(value)
    })
}

/// The context of `fields` (no two with the same name).
pub(crate) fn context(fields: &[(&'static str, Val)], names: &Names) -> Result<Context> {
    let map = fields
        .iter()
        .map(|(k, v)| Ok(((*k).into(), v.to_value(names)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    Ok(Context::from(ast::Context::Value(Arc::new(map))))
}

/// An entity whose parents have no parents of their own in any store it joins (app, wallet
/// and user entities: their groups are not entities), so its ancestors are its parents.
pub(crate) fn entity(
    uid: ast::EntityUID,
    attrs: &[(&'static str, Val)],
    parents: HashSet<ast::EntityUID>,
    names: &Names,
) -> Result<ast::Entity> {
    let attrs = attrs
        .iter()
        .map(|(k, v)| Ok(((*k).into(), ast::PartialValue::from(v.to_value(names)?))))
        .collect::<Result<Vec<_>>>()?;
    Ok(ast::Entity::new_with_attr_partial_value(
        uid,
        attrs,
        HashSet::new(),
        parents,
        [],
    ))
}

/// `store` with `more` added, without recomputing the transitive closure: every caller adds
/// entities whose ancestors are already closed and which are no entity's parent in `store`
/// (dynamic entities, whose parents are groups with no entities; listed addresses, taken
/// from the closed store of every static entity). Recomputing it walked every entity of the
/// store and collected its ancestors into a new set, per request.
pub(crate) fn add_closed(
    store: &Entities,
    more: impl IntoIterator<Item = Arc<ast::Entity>>,
) -> Result<Entities> {
    let core: &cedar_policy_core::entities::Entities = store.as_ref();
    core.clone()
        .add_entities(
            more,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map(Entities::from)
        .map_err(|e| Error::Internal(format!("entities: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context;

    fn every_kind() -> Vec<(&'static str, Val)> {
        let addr = |s: &str| Val::Entity(Kind::Address, s.to_owned());
        vec![
            ("chain_id", Val::Long(1)),
            ("negative", Val::Long(i64::MIN)),
            ("to", addr("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")),
            ("selector", Val::Str("0xa9059cbb".to_owned())),
            ("odd", Val::Str("quote \" back \\ nul \u{0} é 𝄞".to_owned())),
            ("empty", Val::Str(String::new())),
            ("step_up", Val::Bool(false)),
            (
                "delegates",
                Val::Set(vec![addr("0x01"), addr("0x02"), addr("0x01")]),
            ),
            ("nothing", Val::Set(Vec::new())),
            (
                "session",
                Val::Record(vec![
                    (
                        "user",
                        Val::Entity(
                            Kind::User,
                            "0f8c7e2a-1d7b-4a53-9a55-5f9d0c7d4b11".to_owned(),
                        ),
                    ),
                    ("user_verified", Val::Bool(true)),
                    (
                        "nested",
                        Val::Record(vec![("raw", Val::Str("25000000".to_owned()))]),
                    ),
                ]),
            ),
            ("scopes", Val::Set(vec![Val::Str("basic".to_owned())])),
            ("now", Val::Datetime("2026-11-25T12:00:00.000Z".to_owned())),
        ]
    }

    #[test]
    fn the_built_context_is_the_one_expressions_evaluate_to() {
        let names = Names::new().unwrap();
        let fields = every_kind();
        let direct = context(&fields, &names).unwrap();
        let evaluated = context::to_context(&fields, &names).unwrap();
        assert_eq!(direct, evaluated);
        // And it differs when a value does: the comparison is not vacuous.
        let mut other = fields.clone();
        other[0].1 = Val::Long(2);
        assert_ne!(context(&other, &names).unwrap(), evaluated);
    }

    #[test]
    fn a_datetime_is_reused_only_for_the_same_text() {
        let a = datetime("2023-11-14T22:13:20.000Z").unwrap();
        let b = datetime("2023-11-14T22:13:21.000Z").unwrap();
        assert_ne!(a, b);
        assert_eq!(datetime("2023-11-14T22:13:20.000Z").unwrap(), a);
        assert!(datetime("not a time").is_err());
    }

    #[test]
    fn a_built_entity_is_the_one_cedar_builds() {
        let names = Names::new().unwrap();
        let attrs = every_kind();
        let parents = ["treasury", "ops"];
        let direct = entity(
            uid(&names.wallet, "0xab"),
            &attrs,
            parents
                .iter()
                .map(|p| uid(&names.wallet_group, p))
                .collect(),
            &names,
        )
        .unwrap();
        let evaluated = cedar_policy::Entity::new(
            names.uid(&names.wallet, "0xab"),
            attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_expr(&names).unwrap()))
                .collect(),
            parents
                .iter()
                .map(|p| names.uid(&names.wallet_group, p))
                .collect(),
        )
        .unwrap();
        assert!(direct.deep_eq(evaluated.as_ref()));
        assert!(
            !direct.deep_eq(
                cedar_policy::Entity::new_no_attrs(
                    names.uid(&names.wallet, "0xab"),
                    HashSet::new()
                )
                .as_ref()
            )
        );
    }

    #[test]
    fn adding_closed_entities_keeps_the_ancestors_they_carry() {
        let names = Names::new().unwrap();
        let wallet = entity(
            uid(&names.wallet, "0xab"),
            &[],
            [uid(&names.wallet_group, "treasury")].into(),
            &names,
        )
        .unwrap();
        let store = add_closed(&Entities::empty(), [Arc::new(wallet)]).unwrap();
        let ancestors: Vec<_> = store
            .ancestors(&names.uid(&names.wallet, "0xab"))
            .unwrap()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ancestors, [r#"Parapet::WalletGroup::"treasury""#]);
        // Two different entities under one uid are refused, as `add_entities` refuses them.
        let other = entity(
            uid(&names.wallet, "0xab"),
            &[("frozen", Val::Bool(true))],
            HashSet::new(),
            &names,
        )
        .unwrap();
        assert!(add_closed(&store, [Arc::new(other)]).is_err());
    }
}
