//! RFC 8785 (JCS) text written straight into one buffer, for the two places that produce it per
//! event: the writer (each event's canonical form) and `verify` (each event parsed and written
//! again). `serde_json_canonicalizer` gives the same text but buffers every key and every value
//! in a vector of its own and sorts through UTF-16 copies: under load that was about 7 % of the
//! gateway's CPU, and most of `verify`'s.
//!
//! What is written here is JCS by construction for the values the log holds: objects with keys
//! in UTF-16 order, strings escaped as `serde_json` escapes them (the same set JCS names: `\b`
//! `\t` `\n` `\f` `\r`, `\"`, `\\`, other controls as lower-case `\u00xx`, everything else
//! as itself), and integers within ±2^53 in decimal. Any other number (a fraction, an exponent,
//! a larger integer) is handed to `serde_json_canonicalizer`, whose ES6 number form is the one
//! JCS prescribes. The tests compare the two over every shape the log writes.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::io::Write as _;

use serde_json::{Number, Value};

/// The largest integer JCS writes in decimal as itself (2^53).
const SAFE_INTEGER: u64 = 1 << 53;

/// A JCS text being written.
pub(crate) struct Jcs {
    buf: Vec<u8>,
}

/// A number, string or object the writer could not write (only a number the canonicaliser
/// itself refuses).
#[derive(Debug, thiserror::Error)]
#[error("canonicalising: {0}")]
pub(crate) struct JcsError(String);

impl Jcs {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Jcs {
            buf: Vec::with_capacity(n),
        }
    }

    pub(crate) fn raw(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A JSON string, escaped as JCS escapes it.
    pub(crate) fn string(&mut self, s: &str) {
        // Writing a `&str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, s);
    }

    /// `"key":` after a `{` or a `,` the caller wrote.
    pub(crate) fn key(&mut self, k: &str) {
        self.string(k);
        self.buf.push(b':');
    }

    pub(crate) fn opt_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.string(s),
            None => self.raw("null"),
        }
    }

    pub(crate) fn strings(&mut self, items: &[String]) {
        self.buf.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.string(s);
        }
        self.buf.push(b']');
    }

    /// Any JSON value, objects with their keys sorted.
    pub(crate) fn value(&mut self, v: &Value) -> Result<(), JcsError> {
        self.tree(&Json::from_value(v))
    }

    fn number(&mut self, n: &Number) -> Result<(), JcsError> {
        if let Some(u) = n.as_u64()
            && u <= SAFE_INTEGER
        {
            let _ = write!(self.buf, "{u}");
        } else if let Some(i) = n.as_i64()
            && i.unsigned_abs() <= SAFE_INTEGER
        {
            let _ = write!(self.buf, "{i}");
        } else {
            let text =
                serde_json_canonicalizer::to_string(n).map_err(|e| JcsError(e.to_string()))?;
            self.raw(&text);
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> String {
        // Only `&str`s and ASCII were written; the check is a fast scan.
        String::from_utf8(self.buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

/// A parsed JSON text whose strings borrow from it where they hold no escape: what `verify`
/// parses each event into. Objects keep their members in text order, duplicates included, so
/// that writing the tree again shows any duplicate key (JCS text has none).
#[derive(Debug, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    pub(crate) fn parse(text: &'a str) -> Result<Json<'a>, JcsError> {
        serde_json::from_str(text).map_err(|e| JcsError(e.to_string()))
    }

    /// The member `key` of an object (the first, if the text repeats it).
    pub(crate) fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A view of a `serde_json` value, borrowing its strings.
    pub(crate) fn from_value(v: &'a Value) -> Json<'a> {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::Str(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Json<'de>, E> {
        Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<Key<'de>, Json<'de>>()? {
            members.push((k.0, v));
        }
        Ok(Json::Object(members))
    }
}

/// An object key, borrowed from the text when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Jcs {
    /// A parsed tree, written as JCS; a duplicate key is an error.
    pub(crate) fn tree(&mut self, v: &Json<'_>) -> Result<(), JcsError> {
        match v {
            Json::Null => self.raw("null"),
            Json::Bool(true) => self.raw("true"),
            Json::Bool(false) => self.raw("false"),
            Json::Number(n) => self.number(n)?,
            Json::Str(s) => self.string(s),
            Json::Array(items) => {
                self.buf.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.tree(item)?;
                }
                self.buf.push(b']');
            }
            Json::Object(members) => {
                let mut entries: Vec<&(Cow<'_, str>, Json<'_>)> = members.iter().collect();
                entries.sort_by(|a, b| utf16_order(&a.0, &b.0));
                if entries
                    .windows(2)
                    .any(|w| matches!(w, [a, b] if a.0 == b.0))
                {
                    return Err(JcsError("a key appears twice in one object".to_owned()));
                }
                self.buf.push(b'{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.key(k);
                    self.tree(v)?;
                }
                self.buf.push(b'}');
            }
        }
        Ok(())
    }
}

/// Whether `text` is exactly the JCS form of what it parses to; the parsed tree when it is.
pub(crate) fn parse_canonical(text: &str) -> Result<Json<'_>, JcsError> {
    let tree = Json::parse(text)?;
    let mut w = Jcs::with_capacity(text.len());
    w.tree(&tree)?;
    if w.buf != text.as_bytes() {
        return Err(JcsError("not in RFC 8785 canonical form".to_owned()));
    }
    Ok(tree)
}

/// JCS orders keys by their UTF-16 code units (which differs from byte order only past the
/// Basic Multilingual Plane).
fn utf16_order(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// The JCS text of `v`.
#[cfg(test)]
pub(crate) fn to_string(v: &Value) -> Result<String, JcsError> {
    let mut w = Jcs::with_capacity(256);
    w.value(v)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same(v: &Value) {
        let ours = to_string(v).unwrap();
        let theirs = serde_json_canonicalizer::to_string(v).unwrap();
        assert_eq!(ours, theirs, "for {v}");
    }

    #[test]
    fn agrees_with_the_canonicaliser_on_every_shape() {
        same(&json!(null));
        same(&json!({"b": 1, "a": [true, false, null], "": {"z": "", "y": -0}}));
        same(&json!({"n": [0, 1, -1, 9007199254740992u64, -9007199254740992i64]}));
        // Past 2^53, fractions and exponents: ES6 number forms, from the canonicaliser.
        same(
            &json!({"n": [9007199254740993u64, u64::MAX, i64::MIN, 1.5, 1e21, 1e-7, 0.1, -0.0, 123456789.125]}),
        );
        // Every control character, quotes, backslashes, DEL, non-ASCII and astral text.
        let controls: String = (0u8..0x20).map(char::from).collect();
        same(&json!({"s": controls, "q": "\"\\/\u{7f}é€😀\u{2028}"}));
        // Keys ordered by UTF-16 code units: U+FB01 sorts after U+1F600's surrogates.
        same(&json!({"\u{fb01}": 1, "😀": 2, "é": 3, "e": 4, "E": 5, "ab": 6, "a": 7}));
    }

    #[test]
    fn a_parsed_tree_is_canonical_exactly_when_the_library_says_so() {
        for text in [
            r#"{"a":1,"b":[true,null,"x\u0001\n"],"c":{"d":"é😀"}}"#,
            r#"{"n":[0,-1,9007199254740992,1.5,1e+21,1e-7]}"#,
            r#"{"big":9007199254740993}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":1.0}"#,
            r#"{"a": 1}"#,
            r#"{"\ufb01":1,"😀":2}"#,
            r#"{"😀":2,"\ufb01":1}"#,
            r#"["x","\/"]"#,
        ] {
            let by_library = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| serde_json_canonicalizer::to_string(&v).ok())
                .is_some_and(|again| again == text);
            assert_eq!(parse_canonical(text).is_ok(), by_library, "for {text}");
        }
    }

    #[test]
    fn agrees_on_a_parsed_decision_event() {
        let text = r#"{"z":{"__entity":{"type":"Parapet::Address","id":"0xab"}},"a":"{\"x\":1}","m":[{"k":"v","c":2}],"big":"18446744073709551615"}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        same(&v);
    }
}
