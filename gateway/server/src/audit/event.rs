//! The audit event, format version 1 (docs/architecture.md §7). Callers fill an [`AuditEvent`]; the
//! writer gives it its `seq` and turns it into the canonical text that the chain hashes.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::jcs::Jcs;
use crate::error::{Error, Result};
use crate::request::{AuthorizeRequest, Payload};

/// The event format version written into every event as `v`.
pub const FORMAT_VERSION: u8 = 1;

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Cedar decided: `decision` is `allow` or `deny`.
    Decision,
    /// The input was refused before Cedar (decoder or request validation); `refusal` says why.
    Refused,
    /// Refusals a flood can cause, aggregated per (limiter key or IP, reason, minute).
    Limited,
    /// An operator changed who may call: an app created, updated, frozen, unfrozen, revoked or
    /// its key rotated. `action` names the change, `request` what changed (never a key).
    Admin,
    /// A passkey registered, revoked or used to log in, or a possible clone seen; `action` is
    /// `passkey.register`, `passkey.revoke`, `passkey.login` or `passkey.clone_suspected`,
    /// `user` the user and `request` the credential id (never key material or an assertion).
    Passkey,
    /// A user approved (`action` "approve") or revoked (`action` "revoke") an app's consent
    /// scopes; `user` and `app` say whose, `request` which scopes under which consent hash.
    Consent,
    /// A user session began or ended, or an identity was linked: `action` is `session.login`,
    /// `session.logout` or `session.link`; `user` the user; `request` the method, issuer and
    /// session id (never a token, ID token or nonce).
    Session,
    /// A device paired or revoked: `action` is `device.pair` or `device.revoke`, `user` the
    /// owner, `request` the device id and name (never its token or a pairing code).
    Device,
    /// A wallet created (`wallet.create`): `user` the owner, `request` the address, device and
    /// epoch (never a share).
    Wallet,
    /// A signing request's ceremony ended: `action` is `signature.released` (with the digest and
    /// the signature in `request`) or `signature.failed` (with the reason, and whether the
    /// gateway's final message had left, i.e. whether the amount stays counted).
    Signature,
    /// A user's recovery secret set up (`recovery.setup`, with its public key and the wallets
    /// whose backups came with it) or tried and refused (`recovery.secret_rejected`). Never the
    /// secret, the auth key, a backup or a kit.
    Recovery,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Decision => "decision",
            EventKind::Refused => "refused",
            EventKind::Limited => "limited",
            EventKind::Admin => "admin",
            EventKind::Passkey => "passkey",
            EventKind::Consent => "consent",
            EventKind::Session => "session",
            EventKind::Device => "device",
            EventKind::Wallet => "wallet",
            EventKind::Signature => "signature",
            EventKind::Recovery => "recovery",
        }
    }
}

/// A determining policy as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    pub reason: String,
}

/// Why an input was refused: the stable error code the caller got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

/// One aggregated flood bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limited {
    /// The limiter key or the client IP.
    pub key: String,
    pub reason: String,
    /// Start of the minute, RFC 3339.
    pub minute: String,
    /// Decimal string: how many refusals the bucket counted.
    pub count: String,
}

/// An event as submitted, before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub time: OffsetDateTime,
    pub request_id: String,
    pub kind: EventKind,
    pub app: Option<String>,
    pub user: Option<String>,
    /// Lower-case 0x address.
    pub wallet: Option<String>,
    pub chain_id: Option<u64>,
    pub action: Option<String>,
    /// `allow` | `deny` for decisions, `refused` for refusals, none for aggregates.
    pub decision: Option<String>,
    pub determining_policies: Vec<PolicyRef>,
    pub errors: Vec<String>,
    /// Scopes whose permits would have allowed a `scope-not-approved` deny; recorded as null
    /// when empty.
    pub scope_not_approved: Vec<String>,
    pub digest: Option<String>,
    pub policy_version: Option<String>,
    /// The exact Cedar request (principal, action, resource, context) as JSON text.
    pub cedar_request: Option<String>,
    /// The dynamic entity records the decision used, as JSON text.
    pub entities: Option<String>,
    /// The route's allowlisted summary of the request (see [`request_summary`]).
    pub request: Option<Value>,
    pub refusal: Option<Refusal>,
    pub limited: Option<Limited>,
}

impl AuditEvent {
    /// An event with only the identifying fields set; callers fill in the rest.
    pub fn new(kind: EventKind, time: OffsetDateTime, request_id: impl Into<String>) -> Self {
        AuditEvent {
            time,
            request_id: request_id.into(),
            kind,
            app: None,
            user: None,
            wallet: None,
            chain_id: None,
            action: None,
            decision: None,
            determining_policies: Vec::new(),
            errors: Vec::new(),
            scope_not_approved: Vec::new(),
            digest: None,
            policy_version: None,
            cedar_request: None,
            entities: None,
            request: None,
            refusal: None,
            limited: None,
        }
    }
}

/// The serialised form (kept as the reference the fast writer is tested against): every key always present (null when absent) so that auditors see one
/// shape; integers that can exceed 2^53 are decimal strings because JCS would round them.
#[cfg(test)]
#[derive(Serialize)]
struct Wire<'a> {
    v: u8,
    seq: String,
    time: String,
    request_id: &'a str,
    kind: EventKind,
    app: Option<&'a str>,
    user: Option<&'a str>,
    wallet: Option<&'a str>,
    chain_id: Option<String>,
    action: Option<&'a str>,
    decision: Option<&'a str>,
    determining_policies: &'a [PolicyRef],
    errors: &'a [String],
    scope_not_approved: Option<&'a [String]>,
    digest: Option<&'a str>,
    policy_version: Option<&'a str>,
    cedar_request: Option<&'a str>,
    entities: Option<&'a str>,
    request: Option<&'a Value>,
    refusal: Option<&'a Refusal>,
    limited: Option<&'a Limited>,
}

/// RFC 3339, UTC, exactly six fractional digits: fixed width, so text order is time order.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an RFC 3339 time (any offset) for filters.
pub fn parse_time(s: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| Error::InvalidRequest(format!("{s:?} is not an RFC 3339 time")))
}

impl AuditEvent {
    /// The RFC 8785 text of this event with sequence number `seq`: the [`Wire`] form, its keys
    /// written in sorted order straight into one buffer ([`super::jcs`]); the tests hold it equal
    /// to `serde_json_canonicalizer` over [`Wire`].
    pub fn canonical(&self, seq: i64) -> Result<String> {
        let mut w = Jcs::with_capacity(
            1024 + self
                .cedar_request
                .as_ref()
                .map_or(0, |s| s.len() + s.len() / 4)
                + self.entities.as_ref().map_or(0, |s| s.len() + s.len() / 4),
        );
        w.raw("{");
        w.key("action");
        w.opt_string(self.action.as_deref());
        w.raw(",");
        w.key("app");
        w.opt_string(self.app.as_deref());
        w.raw(",");
        w.key("cedar_request");
        w.opt_string(self.cedar_request.as_deref());
        w.raw(",");
        w.key("chain_id");
        match self.chain_id {
            Some(c) => w.string(&c.to_string()),
            None => w.raw("null"),
        }
        w.raw(",");
        w.key("decision");
        w.opt_string(self.decision.as_deref());
        w.raw(",");
        w.key("determining_policies");
        w.raw("[");
        for (i, p) in self.determining_policies.iter().enumerate() {
            if i > 0 {
                w.raw(",");
            }
            w.raw("{");
            w.key("effect");
            w.string(&p.effect);
            w.raw(",");
            w.key("id");
            w.string(&p.id);
            w.raw(",");
            w.key("reason");
            w.string(&p.reason);
            w.raw("}");
        }
        w.raw("],");
        w.key("digest");
        w.opt_string(self.digest.as_deref());
        w.raw(",");
        w.key("entities");
        w.opt_string(self.entities.as_deref());
        w.raw(",");
        w.key("errors");
        w.strings(&self.errors);
        w.raw(",");
        w.key("kind");
        w.string(self.kind.as_str());
        w.raw(",");
        w.key("limited");
        match &self.limited {
            Some(l) => {
                w.raw("{");
                w.key("count");
                w.string(&l.count);
                w.raw(",");
                w.key("key");
                w.string(&l.key);
                w.raw(",");
                w.key("minute");
                w.string(&l.minute);
                w.raw(",");
                w.key("reason");
                w.string(&l.reason);
                w.raw("}");
            }
            None => w.raw("null"),
        }
        w.raw(",");
        w.key("policy_version");
        w.opt_string(self.policy_version.as_deref());
        w.raw(",");
        w.key("refusal");
        match &self.refusal {
            Some(r) => {
                w.raw("{");
                w.key("code");
                w.string(&r.code);
                w.raw(",");
                w.key("message");
                w.string(&r.message);
                w.raw("}");
            }
            None => w.raw("null"),
        }
        w.raw(",");
        w.key("request");
        match &self.request {
            Some(v) => w
                .value(v)
                .map_err(|e| Error::Internal(format!("an audit event's request: {e}")))?,
            None => w.raw("null"),
        }
        w.raw(",");
        w.key("request_id");
        w.string(&self.request_id);
        w.raw(",");
        w.key("scope_not_approved");
        if self.scope_not_approved.is_empty() {
            w.raw("null");
        } else {
            w.strings(&self.scope_not_approved);
        }
        w.raw(",");
        w.key("seq");
        w.string(&seq.to_string());
        w.raw(",");
        w.key("time");
        w.string(&format_time(self.time));
        w.raw(",");
        w.key("user");
        w.opt_string(self.user.as_deref());
        w.raw(",");
        w.key("v");
        w.raw(&FORMAT_VERSION.to_string());
        w.raw(",");
        w.key("wallet");
        w.opt_string(self.wallet.as_deref());
        w.raw("}");
        Ok(w.finish())
    }

    /// [`AuditEvent::canonical`] by way of `serde_json_canonicalizer` over [`Wire`]: what the
    /// fast form is tested against.
    #[cfg(test)]
    fn canonical_by_library(&self, seq: i64) -> String {
        let wire = Wire {
            v: FORMAT_VERSION,
            seq: seq.to_string(),
            time: format_time(self.time),
            request_id: &self.request_id,
            kind: self.kind,
            app: self.app.as_deref(),
            user: self.user.as_deref(),
            wallet: self.wallet.as_deref(),
            chain_id: self.chain_id.map(|c| c.to_string()),
            action: self.action.as_deref(),
            decision: self.decision.as_deref(),
            determining_policies: &self.determining_policies,
            errors: &self.errors,
            scope_not_approved: (!self.scope_not_approved.is_empty())
                .then_some(self.scope_not_approved.as_slice()),
            digest: self.digest.as_deref(),
            policy_version: self.policy_version.as_deref(),
            cedar_request: self.cedar_request.as_deref(),
            entities: self.entities.as_deref(),
            request: self.request.as_ref(),
            refusal: self.refusal.as_ref(),
            limited: self.limited.as_ref(),
        };
        serde_json_canonicalizer::to_string(&wire).unwrap_or_default()
    }
}

/// The columns derived from an event for filtering. Computed from the canonical text, so that
/// `verify` can recompute them and catch a row whose filter columns were edited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexColumns {
    pub time: String,
    pub request_id: String,
    pub kind: String,
    pub app: Option<String>,
    pub wallet: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub digest: Option<String>,
    pub policy_version: Option<String>,
    /// Determining policy ids, each followed by [`POLICY_ID_SEPARATOR`] and the list starting
    /// with one, so that a membership test is one substring search.
    pub policy_ids: String,
}

/// Separates policy ids in [`IndexColumns::policy_ids`] (ASCII unit separator, never in an id
/// an operator can write in a Cedar annotation by accident).
pub const POLICY_ID_SEPARATOR: char = '\u{1f}';

/// The substring that [`IndexColumns::policy_ids`] contains exactly when `id` determined.
pub fn policy_id_needle(id: &str) -> String {
    format!("{POLICY_ID_SEPARATOR}{id}{POLICY_ID_SEPARATOR}")
}

impl IndexColumns {
    /// Reads the columns back out of canonical text; `None` when the text is not an event.
    pub fn from_canonical(canonical: &str) -> Option<IndexColumns> {
        Self::from_tree(&super::jcs::Json::parse(canonical).ok()?)
    }

    /// [`IndexColumns::from_canonical`] of an event already parsed.
    pub(crate) fn from_tree(v: &super::jcs::Json<'_>) -> Option<IndexColumns> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let mut policy_ids = String::from(POLICY_ID_SEPARATOR);
        for p in v.get("determining_policies")?.as_array()? {
            policy_ids.push_str(p.get("id")?.as_str()?);
            policy_ids.push(POLICY_ID_SEPARATOR);
        }
        Some(IndexColumns {
            time: s("time")?,
            request_id: s("request_id")?,
            kind: s("kind")?,
            app: s("app"),
            wallet: s("wallet"),
            action: s("action"),
            decision: s("decision"),
            digest: s("digest"),
            policy_version: s("policy_version"),
            policy_ids,
        })
    }

    pub(crate) fn from_event(e: &AuditEvent) -> IndexColumns {
        let mut policy_ids = String::from(POLICY_ID_SEPARATOR);
        for p in &e.determining_policies {
            policy_ids.push_str(&p.id);
            policy_ids.push(POLICY_ID_SEPARATOR);
        }
        IndexColumns {
            time: format_time(e.time),
            request_id: e.request_id.clone(),
            kind: e.kind.as_str().to_owned(),
            app: e.app.clone(),
            wallet: e.wallet.clone(),
            action: e.action.clone(),
            decision: e.decision.clone(),
            digest: e.digest.clone(),
            policy_version: e.policy_version.clone(),
            policy_ids,
        }
    }
}

/// Determining policies as recorded: id, effect (`permit`, `forbid`, `default_deny`,
/// `scope_not_approved`), reason.
pub fn policy_refs(determining: &[crate::policy::DeterminingPolicy]) -> Vec<PolicyRef> {
    determining
        .iter()
        .map(|d| PolicyRef {
            id: d.id.clone(),
            effect: serde_json::to_value(d.effect)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            reason: d.reason.clone(),
        })
        .collect()
}

/// Most labels a summary records, and the longest label.
const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 64;
/// A payload larger than this is recorded by length and SHA-256 only.
pub const MAX_PAYLOAD_RECORDED: usize = 4096;

/// The allowlisted summary of an `/v1/authorize` body: wallet, chain, labels (bounded), which
/// payload it was, its length and SHA-256, and the payload itself when small. A transaction or
/// message to sign is not a secret; credentials never reach this function (they travel in
/// headers), and it copies only fields it names.
pub fn request_summary(req: &AuthorizeRequest) -> Value {
    use sha2::{Digest, Sha256};
    let (kind, text) = match req.payload() {
        Ok(Payload::Transaction(s)) => ("transaction", Some(s.to_owned())),
        Ok(Payload::TransactionRequest(v)) => ("transaction_request", Some(v.to_string())),
        Ok(Payload::Message(s)) => ("message", Some(s.to_owned())),
        Ok(Payload::MessageBytes(s)) => ("message_bytes", Some(s.to_owned())),
        Ok(Payload::TypedData(v)) => ("typed_data", Some(v.to_string())),
        Ok(Payload::Hash(s)) => ("hash", Some(s.to_owned())),
        Err(_) => ("invalid", None),
    };
    let labels: Vec<String> = req
        .wallet
        .labels
        .iter()
        .take(MAX_LABELS)
        .map(|l| l.chars().take(MAX_LABEL_LEN).collect())
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("route".into(), "authorize".into());
    out.insert(
        "wallet".into(),
        bounded(&req.wallet.address.to_ascii_lowercase(), 64).into(),
    );
    out.insert("chain_id".into(), req.chain_id.to_string().into());
    out.insert("labels".into(), labels.into());
    out.insert("payload_kind".into(), kind.into());
    if let Some(text) = text {
        out.insert("payload_len".into(), text.len().to_string().into());
        out.insert(
            "payload_sha256".into(),
            hex::encode(Sha256::digest(text.as_bytes())).into(),
        );
        if text.len() <= MAX_PAYLOAD_RECORDED {
            out.insert("payload".into(), text.into());
        }
    }
    Value::Object(out)
}

fn bounded(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> OffsetDateTime {
        time::macros::datetime!(2026-11-25 09:00:00.123456 UTC)
    }

    #[test]
    fn canonical_is_rfc8785_with_decimal_strings_and_every_key() {
        let mut e = AuditEvent::new(EventKind::Decision, at(), "r1");
        e.chain_id = Some(u64::MAX);
        e.decision = Some("allow".into());
        e.cedar_request = Some("{\"b\":1,\"a\":2}".into());
        let c = e.canonical(9_007_199_254_740_993).unwrap();
        assert!(c.starts_with("{\"action\":null,\"app\":null,\"cedar_request\":\"{\\\"b\\\":1,\\\"a\\\":2}\",\"chain_id\":\"18446744073709551615\""));
        assert!(c.contains("\"seq\":\"9007199254740993\""));
        assert!(c.contains("\"time\":\"2026-11-25T09:00:00.123456Z\""));
        assert!(c.ends_with(",\"v\":1,\"wallet\":null}"));
        let cols = IndexColumns::from_canonical(&c).unwrap();
        assert_eq!(cols, IndexColumns::from_event(&e));
    }

    #[test]
    fn the_fast_form_is_the_libraries_form_for_every_kind_of_event() {
        let mut d = AuditEvent::new(EventKind::Decision, at(), "r\u{1}\"é😀");
        d.app = Some("app-ü".into());
        d.user = Some("u".into());
        d.wallet = Some("0xab".into());
        d.chain_id = Some(u64::MAX);
        d.action = Some("erc20_transfer".into());
        d.decision = Some("deny".into());
        d.determining_policies = vec![
            PolicyRef {
                id: "b".into(),
                effect: "forbid".into(),
                reason: "line\nbreak\t\u{7f}".into(),
            },
            PolicyRef {
                id: "a".into(),
                effect: "permit".into(),
                reason: String::new(),
            },
        ];
        d.errors = vec!["e1".into(), "\\".into()];
        d.scope_not_approved = vec!["defi".into()];
        d.digest = Some("0x11".into());
        d.policy_version = Some("pv".into());
        d.cedar_request = Some("{\"principal\":{\"type\":\"Parapet::App\",\"id\":\"d\"}}".into());
        d.entities = Some("[]".into());
        d.request = Some(serde_json::json!({
            "route": "authorize", "labels": ["x", "ÿ"], "n": 3, "f": 1.25, "big": 9007199254740993u64,
            "nested": {"z": null, "\u{fb01}": true, "😀": false, "a": {"c": [], "b": {}}}
        }));
        let mut r = AuditEvent::new(EventKind::Refused, at(), "r2");
        r.refusal = Some(Refusal {
            code: "bad_request".into(),
            message: "\u{0}\u{1f}\"".into(),
        });
        let mut l = AuditEvent::new(EventKind::Limited, at(), "r3");
        l.limited = Some(Limited {
            key: "ip:1".into(),
            reason: "r".into(),
            minute: "m".into(),
            count: "7".into(),
        });
        let bare = AuditEvent::new(EventKind::Admin, at(), "");
        for (e, seq) in [
            (&d, 1),
            (&r, 9_007_199_254_740_993),
            (&l, i64::MAX),
            (&bare, 0),
        ] {
            assert_eq!(e.canonical(seq).unwrap(), e.canonical_by_library(seq));
        }
    }

    #[test]
    fn time_is_fixed_width_utc() {
        let t = time::macros::datetime!(2026-01-02 03:04:05 +02:00);
        assert_eq!(format_time(t), "2026-01-02T01:04:05.000000Z");
    }

    #[test]
    fn summary_is_bounded_and_allowlisted() {
        let req: AuthorizeRequest = serde_json::from_value(serde_json::json!({
            "wallet": {"address": "0xABCDEF0000000000000000000000000000000001", "labels": vec!["x".repeat(500); 100]},
            "chain_id": 1,
            "message": "m".repeat(10_000),
        }))
        .unwrap();
        let s = request_summary(&req);
        assert_eq!(s["labels"].as_array().unwrap().len(), MAX_LABELS);
        assert_eq!(s["labels"][0].as_str().unwrap().len(), MAX_LABEL_LEN);
        assert!(s.get("payload").is_none());
        assert_eq!(s["payload_len"], "10000");
        assert_eq!(s["wallet"], "0xabcdef0000000000000000000000000000000001");
    }
}
