//! Policy test cases (`policies/tests/*.json`), run by `parapet policy test`.
//!
//! A case is the exact `/v1/authorize` body plus what the request alone cannot say (the app,
//! the wallet's record, earlier velocity, approved scopes, the time) and the expected answer.
//! Cases run through [`crate::pipeline::evaluate`], decoder included, so they test what the
//! gateway would really decide. The format is documented in `policies/README.md`.

use std::path::Path;

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{LoadedPolicies, PolicyPaths};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, VelocityTotals};
use crate::pipeline;
use crate::records::{AppRecord, LabelsSource};
use crate::request::AuthorizeRequest;

/// `now` when a case does not say: fixed, so that cases never depend on when they run.
pub const DEFAULT_CASE_NOW: &str = "2026-01-15T12:00:00Z";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: AuthorizeRequest,
    #[serde(default)]
    app: Option<CaseApp>,
    #[serde(default)]
    wallet: Option<CaseWallet>,
    #[serde(default)]
    velocity: Option<CaseVelocity>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    now: Option<String>,
    expect: CaseExpect,
}

/// Overrides of the development default app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseApp {
    id: Option<String>,
    name: Option<String>,
    grants: Option<Vec<String>>,
    frozen: Option<bool>,
    groups: Option<Vec<String>>,
}

/// The wallet's record; labels come from the request's `wallet.labels`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseWallet {
    frozen: Option<bool>,
    groups: Option<Vec<String>>,
    owner: Option<Uuid>,
}

/// Totals of *earlier* requests; the gateway adds the request itself, as in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseVelocity {
    /// Wei, decimal.
    native_24h: Option<String>,
    /// Base units of the request's token, decimal.
    token_24h: Option<String>,
    count_1h: Option<i64>,
}

/// What a case expects: a decision (with, optionally, the exact determining `@id`s and
/// whether evaluation errors are expected), or an error code the request must be refused with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseExpect {
    /// "allow" | "deny"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Determining policy ids, in any order; `["default-deny"]` when nothing permitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determining: Option<Vec<String>>,
    /// The scopes a `scope-not-approved` deny names, in any order (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_not_approved: Option<Vec<String>>,
    /// Evaluation errors are expected (otherwise any error fails the case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<bool>,
    /// The request is refused before Cedar with this error code (e.g. "replayable_transaction").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    /// File relative to the project root, with `#n` for the n-th case of an array.
    pub file: String,
    pub name: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
    /// Why it failed, or evaluation errors worth seeing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Fixed totals, the way the cases state them.
#[derive(Debug)]
struct CaseLedger(VelocityTotals);

impl Ledger for CaseLedger {
    fn totals(
        &self,
        _wallet: Address,
        _chain_id: i64,
        token: Option<Address>,
        _now: OffsetDateTime,
    ) -> VelocityTotals {
        VelocityTotals {
            native_24h: self.0.native_24h,
            token_24h: if token.is_some() {
                self.0.token_24h
            } else {
                U256::ZERO
            },
            count_1h: self.0.count_1h,
        }
    }
}

fn describe(expect: &CaseExpect) -> String {
    if let Some(code) = &expect.error {
        return format!("error {code}");
    }
    let mut s = expect.decision.clone().unwrap_or_else(|| "?".to_owned());
    if let Some(d) = &expect.determining {
        s.push_str(&format!(" [{}]", d.join(", ")));
    }
    if let Some(sc) = expect.scope_not_approved.as_ref().filter(|s| !s.is_empty()) {
        s.push_str(&format!(" scopes [{}]", sc.join(", ")));
    }
    s
}

fn parse_wei(field: &str, v: Option<&String>) -> Result<U256> {
    match v {
        None => Ok(U256::ZERO),
        Some(s) => s
            .parse::<U256>()
            .map_err(|e| Error::InvalidRequest(format!("velocity.{field}: {e}"))),
    }
}

fn run_case(set: &LoadedPolicies, file: String, case: Case) -> CaseResult {
    let expected = describe(&case.expect);
    let fail = |actual: String, detail: String| CaseResult {
        file: file.clone(),
        name: case.name.clone(),
        passed: false,
        expected: expected.clone(),
        actual,
        detail: Some(detail),
    };
    let prepared = (|| -> Result<_> {
        let now = OffsetDateTime::parse(case.now.as_deref().unwrap_or(DEFAULT_CASE_NOW), &Rfc3339)
            .map_err(|e| Error::InvalidRequest(format!("now: {e}")))?;
        let v = case.velocity.clone().unwrap_or_default();
        let totals = VelocityTotals {
            native_24h: parse_wei("native_24h", v.native_24h.as_ref())?,
            token_24h: parse_wei("token_24h", v.token_24h.as_ref())?,
            count_1h: v.count_1h.unwrap_or(0),
        };
        Ok((now, totals))
    })();
    let (now, totals) = match prepared {
        Ok(p) => p,
        Err(e) => return fail("invalid case".to_owned(), e.to_string()),
    };
    let mut app = AppRecord::development_default();
    if let Some(a) = &case.app {
        app.id = a.id.clone().unwrap_or(app.id);
        app.name = a.name.clone().unwrap_or(app.name);
        app.grants = a.grants.clone().unwrap_or(app.grants);
        app.frozen = a.frozen.unwrap_or(app.frozen);
        app.groups = a.groups.clone().unwrap_or(app.groups);
    }
    let mut wallet = match pipeline::wallet_from_request(&case.request) {
        Ok(w) => w,
        Err(e) => return fail(format!("error {}", e.code()), e.to_string()),
    };
    if let Some(w) = &case.wallet {
        wallet.frozen = w.frozen.unwrap_or(false);
        wallet.groups = w.groups.clone().unwrap_or_default();
        wallet.owner = w.owner;
        wallet.labels_source = LabelsSource::Record;
    }
    let scopes = case.scopes.clone().unwrap_or_else(pipeline::basic_scopes);
    let ledger = CaseLedger(totals);
    let outcome = pipeline::evaluate(set, &ledger, &app, &wallet, &case.request, &scopes, now);
    let (_, outcome) = match (outcome, &case.expect.error) {
        (Err(e), Some(code)) if e.code() == code => {
            return CaseResult {
                file,
                name: case.name,
                passed: true,
                expected: expected.clone(),
                actual: format!("error {}", e.code()),
                detail: None,
            };
        }
        (Err(e), _) => return fail(format!("error {}", e.code()), e.to_string()),
        (Ok(o), _) => o,
    };
    let mut ids: Vec<String> = outcome
        .determining_policies
        .iter()
        .map(|d| d.id.clone())
        .collect();
    ids.sort();
    let mut actual = format!("{} [{}]", outcome.decision, ids.join(", "));
    if !outcome.scope_not_approved.is_empty() {
        actual.push_str(&format!(
            " scopes [{}]",
            outcome.scope_not_approved.join(", ")
        ));
    }
    let mut problems = Vec::new();
    if case.expect.error.is_some() {
        problems.push("the request was not refused".to_owned());
    }
    if let Some(d) = &case.expect.decision
        && d != outcome.decision.as_str()
    {
        problems.push(format!("decision {} instead of {d}", outcome.decision));
    }
    if let Some(want) = &case.expect.determining {
        let mut want = want.clone();
        want.sort();
        if want != ids {
            problems.push(format!(
                "determining [{}] instead of [{}]",
                ids.join(", "),
                want.join(", ")
            ));
        }
    }
    if let Some(want) = &case.expect.scope_not_approved {
        let mut want = want.clone();
        want.sort();
        want.dedup();
        if want != outcome.scope_not_approved {
            problems.push(format!(
                "scope_not_approved [{}] instead of [{}]",
                outcome.scope_not_approved.join(", "),
                want.join(", ")
            ));
        }
    }
    if !outcome.errors.is_empty() && case.expect.errors != Some(true) {
        problems.push(format!("evaluation errors: {}", outcome.errors.join("; ")));
    }
    if outcome.errors.is_empty() && case.expect.errors == Some(true) {
        problems.push("evaluation errors were expected".to_owned());
    }
    CaseResult {
        file,
        name: case.name,
        passed: problems.is_empty(),
        expected,
        actual,
        detail: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

fn cases_in(rel: &str, text: &str) -> Vec<(String, std::result::Result<Case, String>)> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![(rel.to_owned(), Err(format!("line {}: {e}", e.line())))],
    };
    let parse = |v: Value| serde_json::from_value::<Case>(v).map_err(|e| e.to_string());
    match value {
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{rel}#{}", i + 1), parse(v)))
            .collect(),
        other => vec![(rel.to_owned(), parse(other))],
    }
}

/// Loads the set at `paths` and runs every case in `policies/tests/*.json` (files in name
/// order, cases in file order). A set that does not load is an error; a case file that does
/// not parse is a failed case.
pub fn run_cases(paths: &PolicyPaths) -> Result<Vec<CaseResult>> {
    let set = LoadedPolicies::load(paths)?;
    run_cases_with(&set, &paths.policies.join("tests"))
}

/// Runs the cases in `dir` against an already loaded set.
pub fn run_cases_with(set: &LoadedPolicies, dir: &Path) -> Result<Vec<CaseResult>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::Config(format!("{}: {e}", dir.display()))),
    };
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let rel = format!("policies/tests/{name}");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::Config(format!("{rel}: {e}")))?;
        for (file, case) in cases_in(&rel, &text) {
            out.push(match case {
                Ok(case) => run_case(set, file, case),
                Err(e) => CaseResult {
                    file,
                    name: "(unreadable case)".to_owned(),
                    passed: false,
                    expected: String::new(),
                    actual: String::new(),
                    detail: Some(e),
                },
            });
        }
    }
    Ok(out)
}

/// A plain-text pass/fail table with a summary line; failures get their reason underneath.
pub fn format_case_table(results: &[CaseResult]) -> String {
    let name_w = results
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let exp_w = results
        .iter()
        .map(|r| r.expected.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{:<6}{:<name_w$}  {:<exp_w$}  ACTUAL\n",
        "", "CASE", "EXPECTED"
    );
    for r in results {
        let mark = if r.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "{mark:<6}{:<name_w$}  {:<exp_w$}  {}\n",
            r.name, r.expected, r.actual
        ));
        if !r.passed {
            out.push_str(&format!(
                "{:<6}{}: {}\n",
                "",
                r.file,
                r.detail.as_deref().unwrap_or("failed")
            ));
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    out.push_str(&format!(
        "{passed} passed, {} failed\n",
        results.len() - passed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_failures_with_their_reason() {
        let results = vec![
            CaseResult {
                file: "policies/tests/a.json".to_owned(),
                name: "ok".to_owned(),
                passed: true,
                expected: "allow".to_owned(),
                actual: "allow [p]".to_owned(),
                detail: None,
            },
            CaseResult {
                file: "policies/tests/b.json".to_owned(),
                name: "broken".to_owned(),
                passed: false,
                expected: "deny".to_owned(),
                actual: "allow [p]".to_owned(),
                detail: Some("decision allow instead of deny".to_owned()),
            },
        ];
        let t = format_case_table(&results);
        assert!(t.contains("PASS  ok"));
        assert!(t.contains("FAIL  broken"));
        assert!(t.contains("policies/tests/b.json: decision allow instead of deny"));
        assert!(t.ends_with("1 passed, 1 failed\n"));
    }

    #[test]
    fn case_files_hold_one_case_or_an_array() {
        let one = r#"{"name": "n", "request": {"wallet": {"address": "0x0000000000000000000000000000000000000001"}, "chain_id": 1, "hash": "0x00"}, "expect": {"decision": "deny"}}"#;
        let got = cases_in("policies/tests/x.json", one);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.is_ok());
        let two = format!("[{one}, {one}]");
        let got = cases_in("policies/tests/x.json", &two);
        assert_eq!(got[1].0, "policies/tests/x.json#2");
        let bad = r#"{"name": "n", "typo": 1}"#;
        assert!(cases_in("x", bad)[0].1.is_err());
    }
}
