//! The Cedar context of docs/architecture.md §4, built once as a small typed tree and rendered
//! three ways: as Cedar values for evaluation, as Cedar JSON for the audit record and replay, and
//! as plain JSON (`facts`) for callers. One source for all three keeps them from drifting apart.

#[cfg(test)]
use cedar_policy::{Context, RestrictedExpression};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use super::DecisionInput;
use super::names;
#[cfg(test)]
use super::names::Names;
#[cfg(test)]
use crate::error::{Error, Result};
use crate::facts::Amount;

/// Entity types that may appear as values in the context or in entity attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Address,
    User,
}

impl Kind {
    pub(crate) fn type_str(self) -> &'static str {
        match self {
            Kind::Address => names::ADDRESS,
            Kind::User => names::USER,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Bool(bool),
    Long(i64),
    Str(String),
    Entity(Kind, String),
    Set(Vec<Val>),
    Record(Vec<(&'static str, Val)>),
    Datetime(String),
}

impl Val {
    /// The restricted expression `cedar-policy` takes: the route [`super::values`] replaces,
    /// kept as the reference its tests compare with.
    #[cfg(test)]
    pub(crate) fn to_expr(&self, names: &Names) -> Result<RestrictedExpression> {
        Ok(match self {
            Val::Bool(b) => RestrictedExpression::new_bool(*b),
            Val::Long(n) => RestrictedExpression::new_long(*n),
            Val::Str(s) => RestrictedExpression::new_string(s.clone()),
            Val::Entity(kind, id) => {
                let ty = match kind {
                    Kind::Address => &names.address,
                    Kind::User => &names.user,
                };
                RestrictedExpression::new_entity_uid(names.uid(ty, id))
            }
            Val::Set(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(|v| v.to_expr(names))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Val::Record(fields) => RestrictedExpression::new_record(
                fields
                    .iter()
                    .map(|(k, v)| Ok(((*k).to_owned(), v.to_expr(names)?)))
                    .collect::<Result<Vec<_>>>()?,
            )
            .map_err(|e| Error::Internal(format!("context record: {e}")))?,
            Val::Datetime(s) => RestrictedExpression::new_datetime(s),
        })
    }

    /// Cedar's JSON value form as a tree: the reference [`super::json_text`] is held to.
    #[cfg(test)]
    pub(crate) fn to_cedar_json(&self) -> Value {
        match self {
            Val::Bool(b) => Value::Bool(*b),
            Val::Long(n) => Value::from(*n),
            Val::Str(s) => Value::String(s.clone()),
            Val::Entity(kind, id) => {
                let mut m = Map::with_capacity(1);
                m.insert("__entity".to_owned(), names::uid_json(kind.type_str(), id));
                Value::Object(m)
            }
            Val::Set(items) => Value::Array(items.iter().map(Val::to_cedar_json).collect()),
            Val::Record(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_cedar_json()))
                    .collect(),
            ),
            Val::Datetime(s) => {
                let mut call = Map::with_capacity(2);
                call.insert("fn".to_owned(), Value::String("datetime".to_owned()));
                call.insert("arg".to_owned(), Value::String(s.clone()));
                let mut m = Map::with_capacity(1);
                m.insert("__extn".to_owned(), Value::Object(call));
                Value::Object(m)
            }
        }
    }

    /// Plain JSON as a tree: entities as their id (addresses "0x…"), datetimes as their
    /// string; the reference [`super::json_text`] is held to.
    #[cfg(test)]
    pub(crate) fn to_plain_json(&self) -> Value {
        match self {
            Val::Bool(b) => Value::Bool(*b),
            Val::Long(n) => Value::from(*n),
            Val::Str(s) | Val::Entity(_, s) | Val::Datetime(s) => Value::String(s.clone()),
            Val::Set(items) => Value::Array(items.iter().map(Val::to_plain_json).collect()),
            Val::Record(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_plain_json()))
                    .collect(),
            ),
        }
    }

    /// Every address this value refers to, for picking the Address entities a request needs.
    pub(crate) fn collect_addresses<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Val::Entity(Kind::Address, id) => out.push(id),
            Val::Set(items) => items.iter().for_each(|v| v.collect_addresses(out)),
            Val::Record(fields) => fields.iter().for_each(|(_, v)| v.collect_addresses(out)),
            _ => {}
        }
    }
}

fn addr(a: &alloy::primitives::Address) -> Val {
    Val::Entity(Kind::Address, names::address_id(a))
}

fn amount(a: &Amount) -> Val {
    Val::Record(vec![
        ("scaled", Val::Long(a.scaled)),
        ("saturated", Val::Bool(a.saturated)),
        ("exact", Val::Bool(a.exact)),
        ("raw", Val::Str(a.raw.clone())),
    ])
}

/// `now` in Cedar's `datetime` syntax, UTC, truncated to the second (written with `.000`
/// milliseconds, the form callers already see). Policies reason in minutes and hours; the
/// second is also what lets consecutive requests share one built value (see
/// [`super::values`]).
pub(crate) fn cedar_datetime(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The attribute holding the approved scopes.
pub(crate) const SCOPES: &str = "scopes";

/// `context.scopes` for `scopes`.
pub(crate) fn scopes(scopes: &[String]) -> Val {
    Val::Set(scopes.iter().map(|s| Val::Str(s.clone())).collect())
}

/// Every context attribute, in docs/architecture.md §4 order; the position is its [`presence`] bit.
pub(crate) const ATTRIBUTES: [&str; 18] = [
    "chain_id",
    "tx_type",
    "to",
    "value",
    "gas_limit",
    "selector",
    "data_len",
    "token",
    "nft",
    "delegates",
    "call",
    "typed_data",
    "message",
    "session",
    "step_up",
    "velocity",
    "scopes",
    "now",
];

/// The bit of one attribute name; `0` for a name the context never has.
pub(crate) fn attribute_bit(name: &str) -> u32 {
    ATTRIBUTES
        .iter()
        .position(|a| *a == name)
        .map_or(0, |i| 1 << i)
}

/// Which attributes a built context has.
pub(crate) fn presence(fields: &[(&'static str, Val)]) -> u32 {
    fields.iter().fold(0, |m, (k, _)| m | attribute_bit(k))
}

/// The context attributes in docs/architecture.md §4 order; absent attributes are simply not
/// listed.
pub(crate) fn build(input: &DecisionInput<'_>) -> Vec<(&'static str, Val)> {
    let d = &input.facts.decoded;
    let mut c: Vec<(&'static str, Val)> = Vec::with_capacity(20);
    c.push(("chain_id", Val::Long(d.chain_id)));
    if let Some(t) = d.tx_type {
        c.push(("tx_type", Val::Long(t)));
    }
    if let Some(to) = &d.to {
        c.push(("to", addr(to)));
    }
    if let Some(v) = &d.value {
        c.push(("value", amount(v)));
    }
    if let Some(g) = d.gas_limit {
        c.push(("gas_limit", Val::Long(g)));
    }
    if let Some(s) = &d.selector {
        c.push(("selector", Val::Str(s.clone())));
    }
    if let Some(n) = d.data_len {
        c.push(("data_len", Val::Long(n)));
    }
    if let Some(t) = &d.token {
        c.push((
            "token",
            Val::Record(vec![
                ("contract", addr(&t.contract)),
                ("standard", Val::Str(t.standard.clone())),
                ("symbol", Val::Str(t.symbol.clone())),
                ("known", Val::Bool(t.known)),
                ("amount", amount(&t.amount)),
                ("counterparty", addr(&t.counterparty)),
                ("unlimited", Val::Bool(t.unlimited)),
            ]),
        ));
    }
    if let Some(n) = &d.nft {
        c.push((
            "nft",
            Val::Record(vec![
                ("contract", addr(&n.contract)),
                ("standard", Val::Str(n.standard.clone())),
                ("token_id", Val::Str(n.token_id.clone())),
                ("counterparty", addr(&n.counterparty)),
                ("approved", Val::Bool(n.approved)),
            ]),
        ));
    }
    if let Some(ds) = &d.delegates {
        c.push(("delegates", Val::Set(ds.iter().map(addr).collect())));
    }
    if let Some(call) = &d.call {
        c.push((
            "call",
            Val::Record(vec![("function", Val::Str(call.function.clone()))]),
        ));
    }
    if let Some(td) = &d.typed_data {
        let mut r = vec![
            ("primary_type", Val::Str(td.primary_type.clone())),
            ("domain_name", Val::Str(td.domain_name.clone())),
        ];
        if let Some(vc) = &td.verifying_contract {
            r.push(("verifying_contract", addr(vc)));
        }
        if let Some(id) = td.domain_chain_id {
            r.push(("domain_chain_id", Val::Long(id)));
        }
        c.push(("typed_data", Val::Record(r)));
    }
    if let Some(m) = &d.message {
        c.push((
            "message",
            Val::Record(vec![
                ("encoding", Val::Str(m.encoding.clone())),
                ("len", Val::Long(m.len)),
            ]),
        ));
    }
    if let Some(s) = input.session {
        c.push((
            "session",
            Val::Record(vec![
                ("user", Val::Entity(Kind::User, s.user.to_string())),
                ("method", Val::Str(s.method.clone())),
                ("user_verified", Val::Bool(s.user_verified)),
                ("age_secs", Val::Long(s.age_secs)),
            ]),
        ));
    }
    c.push(("step_up", Val::Bool(input.step_up)));
    c.push((
        "velocity",
        Val::Record(vec![
            ("native_24h", amount(&input.velocity.native_24h)),
            ("token_24h", amount(&input.velocity.token_24h)),
            ("count_1h", Val::Long(input.velocity.count_1h)),
        ]),
    ));
    c.push((SCOPES, scopes(input.scopes)));
    c.push(("now", Val::Datetime(cedar_datetime(input.now))));
    c
}

/// The context through restricted expressions (the reference for [`super::values::context`]).
#[cfg(test)]
pub(crate) fn to_context(fields: &[(&'static str, Val)], names: &Names) -> Result<Context> {
    let pairs = fields
        .iter()
        .map(|(k, v)| Ok(((*k).to_owned(), v.to_expr(names)?)))
        .collect::<Result<Vec<_>>>()?;
    Context::from_pairs(pairs).map_err(|e| Error::Internal(format!("context: {e}")))
}

#[cfg(test)]
pub(crate) fn to_json(fields: &[(&'static str, Val)], cedar: bool) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| {
                let j = if cedar {
                    v.to_cedar_json()
                } else {
                    v.to_plain_json()
                };
                ((*k).to_owned(), j)
            })
            .collect(),
    )
}

/// Plain JSON from a Cedar JSON value (as recorded), for replayed decisions' `facts`.
pub(crate) fn cedar_json_to_plain(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(e)) = m.get("__entity")
                && let Some(id) = e.get("id")
            {
                return id.clone();
            }
            if let Some(Value::Object(x)) = m.get("__extn")
                && let Some(arg) = x.get("arg")
            {
                return arg.clone();
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), cedar_json_to_plain(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(cedar_json_to_plain).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_is_utc_to_the_second() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_923_456_789).unwrap();
        assert_eq!(cedar_datetime(t), "2023-11-14T22:13:20.000Z");
        let shifted = t.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(cedar_datetime(shifted), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn plain_and_cedar_json_agree_on_shape() {
        let v = Val::Record(vec![
            ("to", Val::Entity(Kind::Address, "0xab".to_owned())),
            ("now", Val::Datetime("2024-01-01T00:00:00Z".to_owned())),
            ("n", Val::Long(3)),
        ]);
        let cedar = v.to_cedar_json();
        assert_eq!(
            cedar["to"],
            serde_json::json!({"__entity": {"type": "Parapet::Address", "id": "0xab"}})
        );
        assert_eq!(cedar_json_to_plain(&cedar), v.to_plain_json());
    }
}
