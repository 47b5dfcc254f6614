//! The first-party session of the gateway's page (docs/architecture.md §2): a cookie (HttpOnly,
//! SameSite=Strict, Secure outside `http://localhost`) that holds a page session token, bound to
//! the app the login began for (or to the page itself). Only page sessions are accepted here: an
//! app's `Parapet-Session` token, even for the same person, never opens the page
//! ([`crate::accounts::users::SessionKind`]). State-changing calls must come from one of
//! the configured origins and carry the session's CSRF token, derived from the session token so
//! that only a holder of the cookie can know it.

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::accounts::users::ActiveSession;
use crate::error::{Error, Result};
use crate::http::AppState;

/// The cookie's name.
pub const COOKIE: &str = "parapet_session";
/// The header state-changing page calls carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The page's settings, from the WebAuthn origins.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// Origins page calls may come from (the WebAuthn origins, matched exactly).
    pub origins: Vec<String>,
    /// Whether the cookie carries `Secure` (every origin but `http://localhost…`).
    pub cookie_secure: bool,
}

impl PageSettings {
    pub fn from_origins(origins: &[String]) -> PageSettings {
        PageSettings {
            origins: origins.to_vec(),
            cookie_secure: !origins.iter().all(|o| o.starts_with("http://localhost")),
        }
    }

    /// The `Set-Cookie` value that stores `token` for `max_age_secs`.
    pub fn set_cookie(&self, token: &str, max_age_secs: u64) -> Result<HeaderValue> {
        let secure = if self.cookie_secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        ))
        .map_err(|_| Error::Internal("session cookie".to_owned()))
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.cookie_secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("parapet_session=; Path=/ui; Max-Age=0"))
    }
}

/// The CSRF token of a session token: SHA-256 over a label and the token, hex.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"parapet page csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// The session token in the request's cookie, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Refuses a state-changing call whose `Origin` is missing or not one of the page's origins.
pub fn check_origin(settings: &PageSettings, headers: &HeaderMap) -> Result<()> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if settings.origins.iter().any(|o| o == origin) {
        Ok(())
    } else {
        Err(Error::PageRefused(
            "cross-origin request refused: call from the gateway's page",
        ))
    }
}

/// Refuses a state-changing call without the session's CSRF token.
pub fn check_csrf(session_token: &str, headers: &HeaderMap) -> Result<()> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let want = csrf_token(session_token);
    if bool::from(sent.as_bytes().ct_eq(want.as_bytes())) {
        Ok(())
    } else {
        Err(Error::PageRefused("missing or wrong CSRF token"))
    }
}

/// The page's live session, if the cookie names one.
pub async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, ActiveSession)>> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    match state
        .users
        .sessions
        .resolve_page(token, state.clock.now())
        .await
    {
        Ok(s) => Ok(Some((token.to_owned(), s))),
        Err(Error::SessionInvalid | Error::SessionExpired) => Ok(None),
        Err(Error::Database(e)) => {
            tracing::warn!(error = %e, "page session lookup failed");
            Err(Error::StoreUnavailable)
        }
        Err(other) => Err(other),
    }
}

/// The page's live session, required: `session_invalid` without one.
pub async fn required(state: &AppState, headers: &HeaderMap) -> Result<(String, ActiveSession)> {
    current(state, headers).await?.ok_or(Error::SessionInvalid)
}

/// [`required`] for a state-changing call: also checks the origin and the CSRF token.
pub async fn required_for_change(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, ActiveSession)> {
    check_origin(&state.page, headers)?;
    let (token, session) = required(state, headers).await?;
    check_csrf(&token, headers)?;
    Ok((token, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_among_others_and_csrf_depends_on_the_token() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; parapet_session=ps_abc; b=2"),
        );
        assert_eq!(cookie_token(&h), Some("ps_abc"));
        assert_ne!(csrf_token("ps_abc"), csrf_token("ps_abd"));
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token("ps_abc")).unwrap(),
        );
        assert!(check_csrf("ps_abc", &h).is_ok());
        assert!(check_csrf("ps_abd", &h).is_err());
    }

    #[test]
    fn origins_match_exactly_and_cookies_are_secure_outside_localhost() {
        let s = PageSettings::from_origins(&["http://localhost:8080".to_owned()]);
        assert!(!s.cookie_secure);
        let mut h = HeaderMap::new();
        assert!(check_origin(&s, &h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:8081"),
        );
        assert!(check_origin(&s, &h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:8080"),
        );
        assert!(check_origin(&s, &h).is_ok());
        let prod = PageSettings::from_origins(&["https://wallet.example".to_owned()]);
        assert!(prod.cookie_secure);
        let cookie = prod.set_cookie("ps_x", 60).unwrap();
        let c = cookie.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
