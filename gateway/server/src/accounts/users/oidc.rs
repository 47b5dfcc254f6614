//! Logins through OpenID Connect issuers an app trusts (docs/architecture.md §2): the app asks for
//! a nonce, has its user log in at the issuer with it, and posts the ID token; the gateway verifies
//! it against the issuer's JWKS and starts a session (method `oidc`).
//!
//! Verification: asymmetric algorithms only (RS*, PS*, ES256, ES384, EdDSA; `none` and HMAC
//! refused), the JWK named by `kid` must be of the header's algorithm family and, when it says
//! so, of the header's algorithm; `iss` exact, `aud` among the allowed, `exp`, `nbf` and `iat`
//! with [`LEEWAY`] against the gateway's clock; the `nonce` one the gateway issued to this app,
//! unexpired and unused (consumed atomically). JWKS are cached, refetched every
//! [`JWKS_MAX_AGE`] and on an unknown `kid` at most once per [`JWKS_REFRESH_MIN`] per source.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use sqlx::Row;
use time::OffsetDateTime;

use crate::accounts::apps::{Actor, Auditor, key_hash};
use crate::audit::Store;
use crate::audit::event::{AuditEvent, EventKind, format_time};
use crate::error::{Error, Result};
use crate::outbound::{self, Allowlist};
use crate::store::db::{BeginWrite, db, with_pool};

/// Clock skew accepted on `exp`, `nbf` and `iat`.
pub const LEEWAY: i64 = 60;
/// How long a login nonce may wait for its ID token.
pub const NONCE_TTL: Duration = Duration::from_secs(600);
/// Longest a fetched JWKS is used before it is fetched again (picks up key rotation).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Least time between two fetches caused by an unknown `kid` (a flood of made-up `kid`s must
/// not turn into a flood of requests to the issuer).
pub const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);
/// Longest a JWKS fetch may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const JWKS_MAX_BYTES: u64 = 256 * 1024;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// HTTPS (plain HTTP only to a loopback address, for tests).
    Url(String),
    /// A JWKS file on the gateway host, read again like a fetched URL.
    File(PathBuf),
}

impl JwksSource {
    /// The canonical name of this key source (`url:<JWKS URL>` or `file:<path>`, exactly as
    /// configured). An identity is bound to the trust that verified it, next to `(iss, sub)`:
    /// an `iss` is only a string any app may configure, while the key source is what actually
    /// vouches for the token. Two apps trusting the same source share its people; an app that
    /// configures the same `iss` with keys of its own reaches none of them. Also the JWKS
    /// cache's key, so one source is fetched once however many apps trust it.
    pub fn trust(&self) -> String {
        match self {
            JwksSource::Url(u) => format!("url:{u}"),
            JwksSource::File(p) => format!("file:{}", p.display()),
        }
    }
}

/// An issuer an app trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    pub app_id: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
}

impl TrustedIssuer {
    pub fn to_json(&self) -> serde_json::Value {
        let (url, file) = match &self.jwks {
            JwksSource::Url(u) => (Some(u.clone()), None),
            JwksSource::File(p) => (None, Some(p.display().to_string())),
        };
        serde_json::json!({
            "issuer": self.issuer,
            "audiences": self.audiences,
            "jwks_url": url,
            "jwks_file": file,
            "trust": self.jwks.trust(),
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `https://…`, or `http://` to a loopback host (tests and local development). This is only the
/// string's check, made when the URL is stored: where it may actually lead is decided when each
/// request connects ([`crate::outbound`]), against the addresses its host resolves to then.
pub fn check_url(url: &str, what: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidRequest(format!("{what} {url:?}: {why}")));
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let authority = r.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        if !is_loopback_host(host) {
            return bad("must be https (plain http only to a loopback address)");
        }
        r
    } else {
        return bad("must be an https URL");
    };
    if rest.is_empty() || rest.starts_with('/') || url.len() > 2000 {
        return bad("not a URL");
    }
    Ok(())
}

/// Checks an issuer before it is stored.
pub fn validate_issuer(i: &TrustedIssuer) -> Result<()> {
    if i.issuer.is_empty() || i.issuer.len() > 2000 {
        return Err(Error::InvalidRequest(
            "issuer must be 1 to 2000 characters".into(),
        ));
    }
    if i.audiences.is_empty()
        || i.audiences
            .iter()
            .any(|a| a.is_empty() || a.len() > 500 || a.contains(','))
    {
        return Err(Error::InvalidRequest(
            "give at least one audience (no commas)".into(),
        ));
    }
    match &i.jwks {
        JwksSource::Url(u) => check_url(u, "JWKS URL"),
        JwksSource::File(p) if p.as_os_str().is_empty() => {
            Err(Error::InvalidRequest("empty JWKS file path".into()))
        }
        JwksSource::File(_) => Ok(()),
    }
}

fn admin_event(
    actor: &Actor,
    action: &str,
    app_id: &str,
    detail: serde_json::Value,
    now: OffsetDateTime,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Admin, now, actor.request_id.clone());
    e.app = Some(app_id.to_owned());
    e.action = Some(action.to_owned());
    e.request = Some(serde_json::json!({"actor": actor.who, "detail": detail}));
    e
}

/// Adds or replaces an app's trusted issuer, audited first (`app.oidc_issuer.set`).
///
/// Replacing the key source of an issuer the app already trusts changes the app's trust for
/// it: identities are bound to the source that verified them, so the app's people of the old
/// source are not found through the new one (their next login there makes a new user unless
/// they link the identity from a session they still have). Nothing is moved silently in either
/// direction; the audit event names the `previous_trust` so the change can be traced.
pub async fn set_issuer(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    issuer: &TrustedIssuer,
    now: OffsetDateTime,
) -> Result<()> {
    validate_issuer(issuer)?;
    crate::accounts::apps::get_app(store, &issuer.app_id).await?;
    let previous = issuers(store, &issuer.app_id)
        .await?
        .into_iter()
        .find(|i| i.issuer == issuer.issuer)
        .map(|i| i.jwks.trust())
        .filter(|t| *t != issuer.jwks.trust());
    let mut detail = issuer.to_json();
    if let (Some(previous), Some(o)) = (&previous, detail.as_object_mut()) {
        tracing::warn!(
            app_id = %issuer.app_id,
            issuer = %issuer.issuer,
            previous_trust = %previous,
            trust = %issuer.jwks.trust(),
            "an app's OIDC key source changed: identities of the previous source are not carried over"
        );
        o.insert("previous_trust".to_owned(), serde_json::json!(previous));
    }
    auditor
        .record(admin_event(
            actor,
            "app.oidc_issuer.set",
            &issuer.app_id,
            detail,
            now,
        ))
        .await?;
    let (url, file) = match &issuer.jwks {
        JwksSource::Url(u) => (Some(u.clone()), None),
        JwksSource::File(p) => (None, Some(p.display().to_string())),
    };
    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await.map_err(db("storing an issuer"))?;
        sqlx::query("DELETE FROM oidc_issuers WHERE app_id = $1 AND issuer = $2")
            .bind(issuer.app_id.as_str()).bind(issuer.issuer.as_str())
            .execute(&mut *tx).await.map_err(db("storing an issuer"))?;
        sqlx::query("INSERT INTO oidc_issuers (app_id, issuer, audiences, jwks_url, jwks_file, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(issuer.app_id.as_str()).bind(issuer.issuer.as_str()).bind(issuer.audiences.join(","))
            .bind(url).bind(file).bind(format_time(now))
            .execute(&mut *tx).await.map_err(db("storing an issuer"))?;
        tx.commit().await.map_err(db("storing an issuer"))?;
    });
    Ok(())
}

/// Removes an app's trusted issuer (audited first); `NotFound` when the app does not trust it.
pub async fn remove_issuer(
    store: &Store,
    auditor: Auditor<'_>,
    actor: &Actor,
    app_id: &str,
    issuer: &str,
    now: OffsetDateTime,
) -> Result<()> {
    if !issuers(store, app_id)
        .await?
        .iter()
        .any(|i| i.issuer == issuer)
    {
        return Err(Error::NotFound);
    }
    auditor
        .record(admin_event(
            actor,
            "app.oidc_issuer.remove",
            app_id,
            serde_json::json!({ "issuer": issuer }),
            now,
        ))
        .await?;
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM oidc_issuers WHERE app_id = $1 AND issuer = $2")
            .bind(app_id).bind(issuer).execute(pool).await.map_err(db("removing an issuer"))?;
    });
    Ok(())
}

/// The issuers `app_id` trusts.
pub async fn issuers(store: &Store, app_id: &str) -> Result<Vec<TrustedIssuer>> {
    const SQL: &str = "SELECT issuer, audiences, jwks_url, jwks_file FROM oidc_issuers WHERE app_id = $1 ORDER BY issuer";
    let ctx = "reading issuers";
    with_pool!(store, pool => {
        let rows = sqlx::query(SQL).bind(app_id).fetch_all(pool).await.map_err(db(ctx))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let url: Option<String> = r.try_get("jwks_url").map_err(db(ctx))?;
            let file: Option<String> = r.try_get("jwks_file").map_err(db(ctx))?;
            let jwks = match (url, file) {
                (Some(u), _) => JwksSource::Url(u),
                (None, Some(f)) => JwksSource::File(PathBuf::from(f)),
                (None, None) => continue,
            };
            let audiences: String = r.try_get("audiences").map_err(db(ctx))?;
            out.push(TrustedIssuer {
                app_id: app_id.to_owned(),
                issuer: r.try_get("issuer").map_err(db(ctx))?,
                audiences: audiences.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
                jwks,
            });
        }
        Ok(out)
    })
}

/// A fresh login nonce for `app_id` (128 random bits, hex), valid for [`NONCE_TTL`]; only its
/// hash is stored. Expired nonces are swept on the way.
pub async fn issue_nonce(
    store: &Store,
    app_id: &str,
    now: OffsetDateTime,
) -> Result<(String, OffsetDateTime)> {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let expires = now + NONCE_TTL;
    with_pool!(store, pool => {
        sqlx::query("DELETE FROM oidc_nonces WHERE expires_at <= $1")
            .bind(format_time(now)).execute(pool).await.map_err(db("issuing a nonce"))?;
        sqlx::query("INSERT INTO oidc_nonces (nonce_hash, app_id, expires_at) VALUES ($1, $2, $3)")
            .bind(key_hash(&nonce).as_slice()).bind(app_id).bind(format_time(expires))
            .execute(pool).await.map_err(db("issuing a nonce"))?;
    });
    Ok((nonce, expires))
}

/// Consumes `nonce` if this app was issued it and it is unexpired: one DELETE, so of two
/// concurrent logins with the same nonce exactly one succeeds.
pub async fn consume_nonce(
    store: &Store,
    app_id: &str,
    nonce: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let done = with_pool!(store, pool => {
        sqlx::query("DELETE FROM oidc_nonces WHERE nonce_hash = $1 AND app_id = $2 AND expires_at > $3")
            .bind(key_hash(nonce).as_slice()).bind(app_id).bind(format_time(now))
            .execute(pool).await.map_err(db("consuming a nonce"))?.rows_affected()
    });
    Ok(done == 1)
}

#[derive(Debug, Clone)]
struct Fetched {
    set: JwkSet,
    at: Instant,
}

/// Cached JWKS per source.
#[derive(Debug, Default)]
pub struct JwksCache {
    /// Where JWKS URLs may lead ([`crate::outbound`]).
    allow: Allowlist,
    entries: Mutex<HashMap<String, Fetched>>,
    /// When each source was last refetched because of an unknown `kid`.
    forced: Mutex<HashMap<String, Instant>>,
    fetches: std::sync::atomic::AtomicU64,
}

/// Reads a JWKS. A URL is fetched through [`outbound::agent`]: its host is resolved and checked
/// at every fetch (DNS can change after the issuer was configured), and a host that resolves
/// only to refused addresses fails like an unreachable issuer (`issuer_unavailable`), with the
/// detail in the log.
async fn fetch(source: &JwksSource, allow: &Allowlist) -> Result<JwkSet> {
    let text = match source {
        JwksSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
                .await
                .map_err(|e| Error::Internal(format!("reading a JWKS file: {e}")))?
                .map_err(|e| Error::Config(format!("reading a JWKS file: {e}")))?
        }
        JwksSource::Url(url) => {
            check_url(url, "JWKS URL")?;
            let (url, allow) = (url.clone(), allow.clone());
            let get = tokio::task::spawn_blocking(move || -> Result<String> {
                let agent = outbound::agent(&allow, JWKS_FETCH_TIMEOUT, "parapet-jwks/1");
                let mut res = agent.get(&url).call().map_err(|e| {
                    Error::Config(format!(
                        "fetching a JWKS ({}): {e}",
                        outbound::Failure::of(&e).as_str()
                    ))
                })?;
                if !res.status().is_success() {
                    return Err(Error::Config(format!(
                        "fetching a JWKS: the issuer answered {}",
                        res.status()
                    )));
                }
                res.body_mut()
                    .with_config()
                    .limit(JWKS_MAX_BYTES)
                    .read_to_string()
                    .map_err(|e| Error::Config(format!("reading a JWKS: {e}")))
            });
            tokio::time::timeout(JWKS_FETCH_TIMEOUT + Duration::from_secs(1), get)
                .await
                .map_err(|_| Error::Config("fetching a JWKS timed out".into()))?
                .map_err(|e| Error::Internal(format!("fetching a JWKS: {e}")))??
        }
    };
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("parsing a JWKS: {e}")))
}

impl JwksCache {
    /// An empty cache whose URL fetches reach only addresses `allow` permits.
    pub fn new(allow: Allowlist) -> JwksCache {
        JwksCache {
            allow,
            ..JwksCache::default()
        }
    }

    /// Fetches made so far (tests check the refresh rules with it).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn load(&self, source: &JwksSource) -> Result<JwkSet> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let set = fetch(source, &self.allow).await?;
        let mut entries = self.entries.lock();
        if entries.len() >= 1000 {
            entries.clear();
        }
        entries.insert(
            source.trust(),
            Fetched {
                set: set.clone(),
                at: Instant::now(),
            },
        );
        Ok(set)
    }

    /// The key `kid` names (or the only key, when the token names none).
    async fn key(&self, source: &JwksSource, kid: Option<&str>) -> Result<Option<Jwk>> {
        let pick = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(kid) => set.find(kid).cloned(),
                None => match set.keys.as_slice() {
                    [only] => Some(only.clone()),
                    _ => None,
                },
            }
        };
        let cached = self.entries.lock().get(&source.trust()).cloned();
        let set = match cached {
            Some(f) if f.at.elapsed() < JWKS_MAX_AGE => f.set,
            _ => self.load(source).await?,
        };
        if let Some(k) = pick(&set) {
            return Ok(Some(k));
        }
        // Unknown kid: the issuer may have rotated. Refetch, but not more than once per
        // JWKS_REFRESH_MIN per source.
        let key = source.trust();
        {
            let mut forced = self.forced.lock();
            if forced
                .get(&key)
                .is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN)
            {
                return Ok(None);
            }
            if forced.len() >= 1000 {
                forced.clear();
            }
            forced.insert(key, Instant::now());
        }
        let set = self.load(source).await?;
        Ok(pick(&set))
    }
}

/// An ID token that passed every check (the nonce is not yet consumed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    /// The key source that verified the token ([`JwksSource::trust`]).
    pub trust: String,
    pub nonce: String,
}

/// Why a login failed: for the log and the failure limiter, never for the caller.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    /// The `(iss, sub)` of a token the issuer's key signed for one of this app's audiences, when
    /// it failed anyway (expired, no or a spent nonce, the person is disabled): only such a
    /// failure is held against the person. Anything a stranger can write (an unsigned or
    /// forged token naming someone, another app's token) is `None` and counts against the
    /// client's address alone, so that nobody can lock another person out by naming them.
    pub person: Option<(String, String)>,
    /// The failure was ours (JWKS unreachable, store down), not the caller's.
    pub internal: Option<Error>,
}

fn fail(reason: impl Into<String>) -> Failure {
    Failure {
        reason: reason.into(),
        person: None,
        internal: None,
    }
}

fn fail_for(reason: impl Into<String>, person: &(String, String)) -> Failure {
    Failure {
        reason: reason.into(),
        person: Some(person.clone()),
        internal: None,
    }
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    /// A string or an array of strings (RFC 7519 §4.1.3); checked against the app's audiences.
    aud: Option<serde_json::Value>,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    nonce: Option<String>,
}

/// The issuer a token names, read before any check only to pick the key that checks it.
#[derive(Debug, serde::Deserialize)]
struct Unverified {
    iss: Option<String>,
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Whether the JWK can verify `alg`: its key type and curve, and its own `alg` when it has one.
fn jwk_matches(jwk: &Jwk, alg: Algorithm) -> bool {
    let family_ok = match (&jwk.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    let alg_ok = match jwk.common.key_algorithm {
        None => true,
        Some(k) => {
            let name = format!("{k:?}");
            let want = format!("{alg:?}");
            name == want
                && !matches!(
                    k,
                    KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512
                )
        }
    };
    let use_ok = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature));
    family_ok && alg_ok && use_ok
}

/// Whether the `aud` claim names one of `audiences`.
fn audience_ok(aud: Option<&serde_json::Value>, audiences: &[String]) -> bool {
    let ours = |a: &serde_json::Value| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a));
    match aud {
        Some(serde_json::Value::Array(list)) => list.iter().any(ours),
        Some(one) => ours(one),
        None => false,
    }
}

/// Verifies `token` for an app that trusts `issuers`, at `now`. The signature is checked first
/// and on its own: until it verifies, nothing the token says is the issuer's word, and a
/// failure names no person ([`Failure::person`]).
pub async fn verify(
    jwks: &JwksCache,
    issuers: &[TrustedIssuer],
    token: &str,
    now: OffsetDateTime,
) -> std::result::Result<Verified, Failure> {
    if token.len() > 16 * 1024 {
        return Err(fail("token too long"));
    }
    let unverified: Option<Unverified> =
        jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(token).ok();
    // `alg: none` and unknown algorithms do not even parse as a header.
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| fail(format!("bad header: {e}")))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(fail(format!("algorithm {:?} refused", header.alg)));
    }
    let iss = unverified
        .and_then(|u| u.iss)
        .ok_or_else(|| fail("no iss"))?;
    let trusted = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(|| fail("issuer not trusted by this app"))?;
    let jwk = match jwks.key(&trusted.jwks, header.kid.as_deref()).await {
        Ok(Some(k)) => k,
        Ok(None) => return Err(fail("unknown kid")),
        Err(error) => {
            return Err(Failure {
                reason: format!("JWKS unavailable: {error}"),
                person: None,
                internal: Some(error),
            });
        }
    };
    if !jwk_matches(&jwk, header.alg) {
        return Err(fail("key does not match the algorithm"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| fail(format!("bad JWK: {e}")))?;
    // The signature only; every claim is checked below, against the gateway's clock.
    let mut signature = Validation::new(header.alg);
    signature.algorithms = vec![header.alg];
    signature.validate_exp = false;
    signature.validate_nbf = false;
    signature.validate_aud = false;
    signature.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &signature)
        .map_err(|e| fail(format!("rejected: {e}")))?;
    let c: Claims =
        serde_json::from_value(data.claims).map_err(|e| fail(format!("bad claims: {e}")))?;
    if c.iss != trusted.issuer || c.sub.is_empty() || c.sub.len() > 255 {
        return Err(fail("bad iss or sub"));
    }
    // Another app's token (the same issuer's, for another client) says nothing about a login
    // here, so it is not held against the person either.
    if !audience_ok(c.aud.as_ref(), &trusted.audiences) {
        return Err(fail("audience not this app's"));
    }
    let person = (c.iss.clone(), c.sub.clone());
    let t = now.unix_timestamp();
    if c.exp + LEEWAY <= t {
        return Err(fail_for("expired", &person));
    }
    if c.nbf.is_some_and(|nbf| nbf - LEEWAY > t) {
        return Err(fail_for("not yet valid", &person));
    }
    if c.iat.is_some_and(|iat| iat - LEEWAY > t) {
        return Err(fail_for("issued in the future", &person));
    }
    let nonce = c
        .nonce
        .filter(|n| !n.is_empty() && n.len() <= 128)
        .ok_or_else(|| fail_for("no nonce", &person))?;
    Ok(Verified {
        issuer: c.iss,
        subject: c.sub,
        trust: trusted.jwks.trust(),
        nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_are_https_or_loopback() {
        assert!(check_url("https://issuer.example/jwks", "u").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks", "u").is_ok());
        assert!(check_url("http://localhost/jwks", "u").is_ok());
        assert!(check_url("http://[::1]:9/jwks", "u").is_ok());
        assert!(check_url("http://issuer.example/jwks", "u").is_err());
        assert!(check_url("http://127.0.0.1.evil.example/jwks", "u").is_err());
        assert!(check_url("ftp://x/y", "u").is_err());
        assert!(check_url("https://", "u").is_err());
    }

    #[test]
    fn the_audience_is_one_string_or_any_of_a_list() {
        let ours = ["web".to_owned(), "ios".to_owned()];
        let v = |j: &str| serde_json::from_str::<serde_json::Value>(j).unwrap();
        assert!(audience_ok(Some(&v(r#""web""#)), &ours));
        assert!(audience_ok(Some(&v(r#"["other", "ios"]"#)), &ours));
        assert!(!audience_ok(Some(&v(r#""other""#)), &ours));
        assert!(!audience_ok(Some(&v(r#"["other"]"#)), &ours));
        assert!(!audience_ok(Some(&v("[]")), &ours));
        assert!(!audience_ok(Some(&v("7")), &ours));
        assert!(!audience_ok(None, &ours));
    }
}
