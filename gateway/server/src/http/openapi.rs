//! The OpenAPI document, generated: each handler carries its operation (`#[utoipa::path]`: the
//! route, its checks, parameters and answers), and every body it names is a Rust type whose schema
//! is derived from the type itself, so the document cannot describe a field the code does not
//! have. `schemas/openapi.json` is the generated document, checked in so that a change of the wire
//! shows in review; a test fails when the two differ (`PARAPET_BLESS=1` rewrites the file).
//!
//! The served document is the checked-in file, compiled in ([`crate::http::probes::DOCUMENT`]):
//! what clients fetch is what was reviewed.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's header: what the service is, how callers authenticate, how errors look.
const DESCRIPTION: &str = r#"Policy-enforcing co-signing gateway for EVM wallets. Every /v1 route needs `Authorization: Bearer <api key>` (an app key from `parapet apps create`; the static token of `serve`'s development default acts as the development default app with every grant). A missing, unknown or revoked key gets 401 `unauthorized`, a key without the route's grant 403 `forbidden`, a frozen app 403 `app_frozen`. Errors are `{code, message, request_id}` with a stable snake_case `code`."#;

/// Adds the bearer scheme every `/v1` route names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            r#"API key `pk_…` (shown once by `parapet apps create`). Grants: `sign` (/v1/authorize), `audit:read` (this app's audit events), `admin` (policy reload, every app's events)."#
                .to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Writes "no authentication" as `security: []` (utoipa writes an empty requirement, `[{}]`).
struct Anonymous;

impl Modify for Anonymous {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let empty = utoipa::openapi::security::SecurityRequirement::default();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.delete,
                &mut item.put,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(security) = &mut op.security
                    && security.iter().all(|r| *r == empty)
                {
                    security.clear();
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Parapet gateway", description = DESCRIPTION),
    servers((url = "http://localhost:8080")),
    security(("bearer" = [])),
    modifiers(&Bearer, &Anonymous),
    components(responses(
        crate::http::openapi_parts::Error,
        crate::http::openapi_parts::RateLimited
    )),
    paths(
        crate::http::probes::healthz,
        crate::http::probes::readyz,
        crate::http::probes::metrics,
        crate::http::probes::openapi,
        crate::http::v1::authorize::authorize,
        crate::http::v1::policies::reload_policies,
        crate::http::v1::audit::events,
        crate::http::v1::apps::list,
        crate::http::v1::apps::create,
        crate::http::v1::apps::act,
        crate::http::v1::users::nonce,
        crate::http::v1::users::oidc_login,
        crate::http::v1::users::oidc_link,
        crate::http::v1::users::logout,
        crate::http::v1::users::list,
        crate::http::v1::users::disable,
        crate::http::v1::users::exchange,
        crate::http::v1::users::consent_get,
        crate::http::v1::users::consent_approve,
        crate::http::v1::users::consent_revoke,
        crate::http::v1::users::page_link,
        crate::http::v1::devices::pair,
        crate::http::v1::devices::me,
        crate::http::v1::devices::list,
        crate::http::v1::devices::revoke,
        crate::http::v1::wallets::list,
        crate::http::v1::wallets::get,
        crate::http::v1::wallets::update,
        crate::http::v1::ceremony::keygen,
        crate::http::v1::signing::ceremony,
        crate::http::v1::signing::device_get,
        crate::http::v1::signing::sign,
        crate::http::v1::signing::get,
        crate::http::v1::signing::step_up,
        crate::http::v1::refresh::start,
        crate::http::v1::refresh::step_up,
        crate::http::v1::refresh::ceremony,
        crate::http::v1::recovery::status,
        crate::http::v1::recovery::set_up,
        crate::http::v1::recovery::check,
        crate::http::v1::recovery::operation,
        crate::http::v1::recovery::identify,
        crate::http::v1::recovery::open,
        crate::http::v1::recovery::get,
        crate::http::v1::recovery::complete,
        crate::http::v1::recovery::cancel,
        crate::http::v1::recovery::totp_start,
        crate::http::v1::recovery::totp_confirm,
        crate::http::v1::recovery::totp_remove,
        crate::http::v1::webhooks::get,
        crate::http::v1::webhooks::register,
        crate::http::v1::webhooks::remove,
        crate::http::v1::webhooks::admin_list,
        crate::http::v1::webhooks::redeliver,
        crate::http::v1::transfers::list,
        crate::http::v1::transfers::ask,
        crate::http::v1::transfers::fetch,
        crate::http::v1::transfers::seal,
        crate::http::v1::transfers::received,
        crate::http::v1::transfers::resync,
        crate::http::v1::transfers::approve
    )
)]
struct ApiDoc;

/// The document as the handlers and types describe it, pretty-printed as it is checked in.
pub fn generate() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    /// The checked-in document is what the handlers and types generate; with `PARAPET_BLESS=1`
    /// the file is rewritten instead, for review in the diff.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let generated = super::generate();
        if std::env::var_os("PARAPET_BLESS").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/openapi.json");
            std::fs::write(path, &generated).expect("writing schemas/openapi.json");
            return;
        }
        assert!(
            generated == crate::http::probes::DOCUMENT,
            "schemas/openapi.json is not what the handlers and types describe: run \
             `PARAPET_BLESS=1 cargo test -p parapet-gateway --lib openapi` and review the diff"
        );
    }

    /// A state's schema lists the names the wire and the store use, not the Rust variants.
    #[test]
    fn named_states_are_documented_by_their_wire_names() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::generate()).expect("the document is JSON");
        let names = |schema: &str| doc["components"]["schemas"][schema]["enum"].clone();
        let wire = |all: Vec<&str>| serde_json::json!(all);
        use parapet_api::admin::DeliveryStatus;
        use parapet_api::devices::{TransferKind, TransferState};
        use parapet_api::recovery::RecoveryState;
        use parapet_api::signing::SigningState;
        assert_eq!(
            names("SigningState"),
            wire(SigningState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names("TransferKind"),
            wire(TransferKind::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names("TransferState"),
            wire(TransferState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names("RecoveryState"),
            wire(RecoveryState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names("DeliveryStatus"),
            wire(DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
    }
}
