//! A decision's JSON forms (the facts, the Cedar request, the dynamic entities), written as
//! text once, straight from the typed context.
//!
//! Nothing on the request path looks inside them: the response carries the facts, the audit
//! event carries the Cedar request and the entities as strings. Building them as
//! `serde_json::Value` trees first, to print them a moment later and free the trees, was a
//! sixth of a decision's cost. The text is exactly what `serde_json` prints for the tree the
//! decision used to build (compact, keys in the order written); replay, which does start from
//! a tree, prints it with `serde_json`, and the tests hold a decision equal to its replay.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::context::Val;
use super::names;

/// JSON text, written once and shared (cheap to clone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(Arc<str>);

impl JsonText {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as a tree, for callers that do look inside (tests, tools); `Null` if it
    /// did not parse, which text from this module or `serde_json` always does.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// What `serde_json` prints for `v`.
    pub fn from_value(v: &Value) -> JsonText {
        JsonText(Arc::from(v.to_string()))
    }

    fn from_buf(w: Writer) -> JsonText {
        // Every piece written is UTF-8 (`str`s and `serde_json`'s output), so the lossy
        // conversion never replaces anything; it only spares a fallible signature.
        JsonText(Arc::from(String::from_utf8_lossy(&w.0)))
    }
}

impl Serialize for JsonText {
    /// The text as it is, as a JSON value of the document it is written into. The text came
    /// from this module or from `serde_json`, so it parses; if it ever did not, serialising
    /// fails rather than writing broken JSON.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Compact JSON text being written (bytes, so that `serde_json` writes each escaped string
/// straight into it instead of into a string of its own).
struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(n: usize) -> Writer {
        Writer(Vec::with_capacity(n))
    }

    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A JSON string, escaped by `serde_json` itself.
    fn string(&mut self, s: &str) {
        // Writing to a `Vec` cannot fail; there is no error to handle.
        let _ = serde_json::to_writer(&mut self.0, s);
    }

    fn long(&mut self, n: i64) {
        use std::io::Write;
        let _ = write!(self.0, "{n}");
    }

    fn key(&mut self, k: &str) {
        self.string(k);
        self.0.push(b':');
    }

    /// `{"type":…,"id":…}`.
    fn uid(&mut self, ty: &str, id: &str) {
        self.raw("{\"type\":");
        self.string(ty);
        self.raw(",\"id\":");
        self.string(id);
        self.raw("}");
    }

    /// `v` in Cedar's JSON value form (entity and extension escapes spelt out), which
    /// `Context::from_json_value` and `Entity::from_json_value` read back.
    fn cedar(&mut self, v: &Val) {
        match v {
            Val::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            Val::Long(n) => self.long(*n),
            Val::Str(s) => self.string(s),
            Val::Entity(kind, id) => {
                self.raw("{\"__entity\":");
                self.uid(kind.type_str(), id);
                self.raw("}");
            }
            Val::Set(items) => self.list(items, Writer::cedar),
            Val::Record(fields) => self.record(fields, Writer::cedar),
            Val::Datetime(s) => {
                self.raw("{\"__extn\":{\"fn\":\"datetime\",\"arg\":");
                self.string(s);
                self.raw("}}");
            }
        }
    }

    /// `v` as plain JSON: entities as their id, datetimes as their string.
    fn plain(&mut self, v: &Val) {
        match v {
            Val::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            Val::Long(n) => self.long(*n),
            Val::Str(s) | Val::Entity(_, s) | Val::Datetime(s) => self.string(s),
            Val::Set(items) => self.list(items, Writer::plain),
            Val::Record(fields) => self.record(fields, Writer::plain),
        }
    }

    fn list(&mut self, items: &[Val], value: fn(&mut Writer, &Val)) {
        self.raw("[");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            value(self, item);
        }
        self.raw("]");
    }

    fn record(&mut self, fields: &[(&'static str, Val)], value: fn(&mut Writer, &Val)) {
        self.raw("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.key(k);
            value(self, v);
        }
        self.raw("}");
    }
}

/// The facts: the context as plain JSON.
pub(crate) fn facts(fields: &[(&'static str, Val)]) -> JsonText {
    let mut w = Writer::with_capacity(768);
    w.record(fields, Writer::plain);
    JsonText::from_buf(w)
}

/// `{principal, action, resource, context}` in Cedar's JSON form.
pub(crate) fn cedar_request(
    app: &str,
    action: &str,
    wallet: &str,
    fields: &[(&'static str, Val)],
) -> JsonText {
    let mut w = Writer::with_capacity(1536);
    w.raw("{\"principal\":");
    w.uid(names::APP, app);
    w.raw(",\"action\":");
    w.uid(names::ACTION, action);
    w.raw(",\"resource\":");
    w.uid(names::WALLET, wallet);
    w.raw(",\"context\":");
    w.record(fields, Writer::cedar);
    w.raw("}");
    JsonText::from_buf(w)
}

/// One dynamic entity in Cedar's JSON entity form: its uid, attributes and parents.
pub(crate) struct EntityText<'a> {
    pub ty: &'a str,
    pub id: &'a str,
    pub attrs: &'a [(&'static str, Val)],
    pub parent_ty: &'a str,
    pub parents: &'a [String],
}

/// The entities' JSON array.
pub(crate) fn entities(items: &[EntityText<'_>]) -> JsonText {
    let mut w = Writer::with_capacity(512);
    w.raw("[");
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            w.raw(",");
        }
        w.raw("{\"uid\":");
        w.uid(e.ty, e.id);
        w.raw(",\"attrs\":");
        w.record(e.attrs, Writer::cedar);
        w.raw(",\"parents\":[");
        for (j, p) in e.parents.iter().enumerate() {
            if j > 0 {
                w.raw(",");
            }
            w.uid(e.parent_ty, p);
        }
        w.raw("]}");
    }
    w.raw("]");
    JsonText::from_buf(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::{self, Kind};

    fn every_kind() -> Vec<(&'static str, Val)> {
        vec![
            ("chain_id", Val::Long(-7)),
            (
                "to",
                Val::Entity(
                    Kind::Address,
                    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48".to_owned(),
                ),
            ),
            (
                "odd",
                Val::Str("q\" b\\ c\u{1} t\t n\n é 𝄞 \u{7f}".to_owned()),
            ),
            ("yes", Val::Bool(true)),
            ("no", Val::Bool(false)),
            ("empty", Val::Set(Vec::new())),
            (
                "set",
                Val::Set(vec![
                    Val::Entity(Kind::User, "u".to_owned()),
                    Val::Str("s".to_owned()),
                ]),
            ),
            (
                "record",
                Val::Record(vec![
                    ("z", Val::Long(i64::MAX)),
                    ("a", Val::Record(Vec::new())),
                ]),
            ),
            ("now", Val::Datetime("2026-11-25T12:00:00.000Z".to_owned())),
        ]
    }

    #[test]
    fn the_text_is_what_serde_json_prints_for_the_tree() {
        let fields = every_kind();
        assert_eq!(
            facts(&fields).as_str(),
            context::to_json(&fields, false).to_string()
        );
        let mut tree = serde_json::Map::new();
        tree.insert("principal".into(), names::uid_json(names::APP, "app\"1"));
        tree.insert("action".into(), names::uid_json(names::ACTION, "sign"));
        tree.insert("resource".into(), names::uid_json(names::WALLET, "0xab"));
        tree.insert("context".into(), context::to_json(&fields, true));
        assert_eq!(
            cedar_request("app\"1", "sign", "0xab", &fields).as_str(),
            Value::Object(tree).to_string()
        );
    }

    #[test]
    fn entities_are_cedar_entity_json() {
        let attrs = every_kind();
        let parents = ["g1".to_owned(), "g\"2".to_owned()];
        let text = entities(&[
            EntityText {
                ty: names::WALLET,
                id: "0xab",
                attrs: &attrs,
                parent_ty: names::WALLET_GROUP,
                parents: &parents,
            },
            EntityText {
                ty: names::USER,
                id: "u",
                attrs: &[],
                parent_ty: names::APP_GROUP,
                parents: &[],
            },
        ]);
        let expected = serde_json::json!([
            {
                "uid": names::uid_json(names::WALLET, "0xab"),
                "attrs": context::to_json(&attrs, true),
                "parents": [names::uid_json(names::WALLET_GROUP, "g1"), names::uid_json(names::WALLET_GROUP, "g\"2")],
            },
            {"uid": names::uid_json(names::USER, "u"), "attrs": {}, "parents": []},
        ]);
        assert_eq!(text.as_str(), expected.to_string());
        // Cedar reads it back.
        assert!(cedar_policy::Entities::from_json_str(text.as_str(), None).is_ok());
    }

    #[test]
    fn the_text_serialises_as_the_value_it_is() {
        let text = facts(&every_kind());
        let doc = serde_json::json!({"facts": text.clone()});
        assert_eq!(doc["facts"], text.to_value());
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            format!("{{\"facts\":{}}}", text.as_str())
        );
    }
}
