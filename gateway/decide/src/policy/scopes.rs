//! Consent scopes (`policies/scopes.json`, docs/architecture.md §3).
//!
//! ```json
//! {
//!   "basic": { "name": "…", "description": "…", "required": true },
//!   "nft_operators": { "name": "…", "description": "…", "required": false,
//!                      "apps": ["app_…", "group:marketplaces"] }
//! }
//! ```
//!
//! A scope is offered to every app unless `apps` lists the app ids and `group:<AppGroup>`s it is
//! offered to. `basic` must exist, be required and be offered to every app: it holds every
//! permit without `@scope` and is all that applies without a user session. A permit in a scope
//! that is not offered to an app never applies to that app.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::BASIC_SCOPE;

/// Longest `name` a scope may have: it is a heading on a consent screen.
pub const MAX_SCOPE_NAME: usize = 80;
/// Longest `description`.
pub const MAX_SCOPE_DESCRIPTION: usize = 1000;

/// One consent scope of `policies/scopes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeDef {
    /// Plain-language name shown to users ("Manage your NFTs").
    pub name: String,
    /// Plain-language description of what approving the scope lets the app do.
    pub description: String,
    /// A required scope is part of every consent; `basic` must be required.
    pub required: bool,
    /// App ids and `group:<AppGroup>`s the scope is offered to; absent: every app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<String>>,
}

impl ScopeDef {
    /// Whether the scope is offered to the app `app_id` in `groups`.
    pub fn offered_to(&self, app_id: &str, groups: &[String]) -> bool {
        match &self.apps {
            None => true,
            Some(apps) => apps.iter().any(|a| match a.strip_prefix("group:") {
                Some(g) => groups.iter().any(|x| x == g),
                None => a == app_id,
            }),
        }
    }
}

/// Scope ids: 1–64 lower-case letters, digits, `_ . : -`.
pub(crate) fn valid_scope_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}

/// App ids and group names as the app store accepts them (letters, digits, `_ - .`).
fn valid_app_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// The entries in file order, duplicates kept (a JSON map would silently keep the last one).
struct Entries(Vec<(String, ScopeDef)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping scope ids to scopes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, ScopeDef>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V).map_err(de::Error::custom)
    }
}

/// Line of the first `"id":` key in `text` (1 when it cannot be found).
fn line_of_key(text: &str, id: &str) -> usize {
    let quoted = format!("\"{id}\"");
    let mut from = 0;
    while let Some(at) = text.get(from..).and_then(|t| t.find(&quoted)) {
        let end = from + at + quoted.len();
        let rest = text.get(end..).unwrap_or_default().trim_start();
        if rest.starts_with(':') {
            return super::diag::line_of(text, from + at);
        }
        from = end;
    }
    1
}

/// Parses and checks `policies/scopes.json`; every problem is pushed as `file:line: message`.
pub(crate) fn parse_scopes(
    rel: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<BTreeMap<String, ScopeDef>> {
    let entries = match serde_json::from_str::<Entries>(text) {
        Ok(e) => e.0,
        Err(e) => {
            problems.push(format!("{rel}:{}: {e}", e.line()));
            return None;
        }
    };
    let before = problems.len();
    let mut scopes = BTreeMap::new();
    for (id, def) in entries {
        let at = format!("{rel}:{}", line_of_key(text, &id));
        if !valid_scope_id(&id) {
            problems.push(format!(
                "{at}: scope id {id:?}: use 1–64 lower-case letters, digits, '_', '.', ':' or '-'"
            ));
        }
        let name = def.name.trim();
        if name.is_empty() || name.chars().count() > MAX_SCOPE_NAME || name.contains('\n') {
            problems.push(format!(
                "{at}: scope {id:?}: \"name\" must be one line of 1–{MAX_SCOPE_NAME} characters (users read it)"
            ));
        }
        let description = def.description.trim();
        if description.is_empty() || description.chars().count() > MAX_SCOPE_DESCRIPTION {
            problems.push(format!(
                "{at}: scope {id:?}: \"description\" must be 1–{MAX_SCOPE_DESCRIPTION} characters (users read it)"
            ));
        }
        if let Some(apps) = &def.apps {
            if apps.is_empty() {
                problems.push(format!(
                    "{at}: scope {id:?}: \"apps\" is empty (it would be offered to no app); leave it out to offer the scope to every app"
                ));
            }
            for (i, a) in apps.iter().enumerate() {
                let ok = match a.strip_prefix("group:") {
                    Some(g) => valid_app_ref(g),
                    None => valid_app_ref(a),
                };
                if !ok {
                    problems.push(format!(
                        "{at}: scope {id:?}: apps entry {a:?}: write an app id or group:<AppGroup> (letters, digits, '_', '-', '.')"
                    ));
                } else if apps.get(..i).is_some_and(|prev| prev.contains(a)) {
                    problems.push(format!("{at}: scope {id:?}: apps lists {a:?} twice"));
                }
            }
        }
        match scopes.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => {
                problems.push(format!("{at}: scope {:?} is declared twice", e.key()));
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(def);
            }
        }
    }
    match scopes.get(BASIC_SCOPE) {
        Some(b) => {
            let at = format!("{rel}:{}", line_of_key(text, BASIC_SCOPE));
            if !b.required {
                problems.push(format!("{at}: scope \"basic\" must be required"));
            }
            if b.apps.is_some() {
                problems.push(format!(
                    "{at}: scope \"basic\" is offered to every app: remove \"apps\""
                ));
            }
        }
        None => problems.push(format!("{rel}: scope \"basic\" is missing")),
    }
    (problems.len() == before).then_some(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut p = Vec::new();
        let _ = parse_scopes("policies/scopes.json", text, &mut p);
        p
    }

    const BASIC: &str = r#""basic": {"name": "Basic", "description": "d", "required": true}"#;

    #[test]
    fn a_good_file_loads() {
        let text = format!(
            "{{{BASIC},\n\"nft\": {{\"name\": \"NFTs\", \"description\": \"d\", \"required\": false, \"apps\": [\"app_x\", \"group:g\"]}}}}"
        );
        let mut p = Vec::new();
        let scopes = parse_scopes("s", &text, &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        let nft = &scopes["nft"];
        assert!(nft.offered_to("app_x", &[]));
        assert!(nft.offered_to("app_y", &["g".to_owned()]));
        assert!(!nft.offered_to("app_y", &["h".to_owned()]));
        assert!(!nft.offered_to("g", &[]));
        assert!(scopes["basic"].offered_to("anything", &[]));
    }

    #[test]
    fn mistakes_are_refused_with_a_line() {
        let p = problems(&format!(
            "{{{BASIC},\n\"x\": {{\"name\": \"\", \"description\": \"d\", \"required\": false}}}}"
        ));
        assert!(
            p.iter()
                .any(|m| m.starts_with("policies/scopes.json:2:") && m.contains("\"name\"")),
            "{p:?}"
        );
        let p = problems(&format!(
            "{{{BASIC},\n\"x\": {{\"name\": \"X\", \"description\": \"d\", \"required\": false, \"apps\": []}}}}"
        ));
        assert!(p.iter().any(|m| m.contains("is empty")), "{p:?}");
        let p = problems(&format!(
            "{{{BASIC},\n\"x\": {{\"name\": \"X\", \"description\": \"d\", \"required\": false, \"apps\": [\"group:\", \"a b\"]}}}}"
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        let p = problems(&format!("{{{BASIC},\n{BASIC}}}"));
        assert!(
            p.iter()
                .any(|m| m.contains("declared twice") && m.contains(":1:")),
            "{p:?}"
        );
        let p = problems(
            r#"{"basic": {"name": "B", "description": "d", "required": true, "apps": ["a"]}}"#,
        );
        assert!(p.iter().any(|m| m.contains("remove \"apps\"")), "{p:?}");
        let p = problems("{\n\"basic\": {\"description\": \"d\", \"required\": true}}");
        assert!(
            p.iter()
                .any(|m| m.starts_with("policies/scopes.json:2:") && m.contains("name")),
            "{p:?}"
        );
        let p = problems(
            "{\n\"basic\": {\"name\": \"B\", \"description\": \"d\", \"required\": true, \"color\": 1}}",
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("policies/scopes.json:2:") && m.contains("unknown field")),
            "{p:?}"
        );
    }
}
