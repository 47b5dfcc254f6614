//! `GET /v1/audit/events`: the auditor's view over HTTP. A JSON page with a cursor by default;
//! `format=ndjson|csv` streams every matching event from the cursor on, one page of rows in
//! memory at a time.

use parapet_api::audit::{ChainedEvent, EventPage};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::audit::export::{self, CSV_HEADER, Format, Pager};
use crate::audit::query::{Cursor, Filter, MAX_PAGE};
use crate::error::Error;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::request_id::ReqId;

/// The filters and paging of `GET /v1/audit/events`, all optional.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Inclusive lower time bound, RFC 3339.
    from: Option<String>,
    /// Exclusive upper time bound, RFC 3339.
    to: Option<String>,
    /// App id.
    app: Option<String>,
    /// Wallet address (any case).
    wallet: Option<String>,
    /// Cedar action, e.g. erc20_transfer.
    action: Option<String>,
    /// allow, deny or refused.
    decision: Option<String>,
    /// decision, refused or limited.
    kind: Option<String>,
    /// A determining policy's @id.
    policy_id: Option<String>,
    /// 0x signing digest.
    digest: Option<String>,
    /// The request's UUIDv7.
    request_id: Option<String>,
    /// next_cursor of the previous page.
    cursor: Option<String>,
    /// Page size (JSON, 1-1000, default 100) or most events exported.
    #[param(minimum = 1)]
    limit: Option<u32>,
    /// json (a page, default), ndjson or csv (streamed export in seq order).
    #[param(value_type = Option<parapet_api::audit::ExportFormat>, inline)]
    format: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/audit/events",
    operation_id = "audit_events",
    summary = "Audit events in seq order, filtered, with cursor pagination or as a streamed NDJSON/CSV export",
    description = "Needs `audit:read` (only the caller's own app's events: the `app` filter is forced to the caller) or `admin` (every app's events). NDJSON lines are {seq, prev_hash, hash, canonical, time, kind, decision}: hash = SHA-256(bytes(prev_hash) || UTF-8(canonical)), seq 1 chains from 32 zero bytes.",
    security(("bearer" = [])),
    extensions(("x-parapet-grant" = json!("audit:read"))),
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events (JSON) or the export.", body = parapet_api::audit::EventPage),
        (status = 400, response = crate::http::openapi_parts::Error),
        (status = 401, response = crate::http::openapi_parts::Error),
        (status = 403, response = crate::http::openapi_parts::Error),
        (status = 429, response = crate::http::openapi_parts::RateLimited),
    ),
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    ReqId(request_id): ReqId,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let fail = ApiError::of(&request_id);
    let Query(q) = query.map_err(|e| fail(Error::InvalidRequest(e.body_text())))?;
    let filter = Filter {
        from: q.from,
        to: q.to,
        // `audit:read` sees only its own app's events; `admin` sees every app's.
        app: if caller.has("admin") {
            q.app
        } else {
            Some(caller.0.id.clone())
        },
        wallet: q.wallet,
        action: q.action,
        decision: q.decision,
        kind: q.kind,
        policy_id: q.policy_id,
        digest: q.digest,
        request_id: q.request_id,
    };
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(fail)?
        .unwrap_or_default()
        .0;
    let store = state.store.clone();
    match q.format.as_deref() {
        None | Some("json") => {
            let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
            let mut pager =
                Pager::new(store, &filter, after, Some(u64::from(limit))).map_err(fail)?;
            let page = pager.next_page().await.map_err(fail)?;
            let next = (page.len() == limit as usize).then(|| Cursor(pager.cursor()).encode());
            let events = page
                .iter()
                .map(|e| ChainedEvent {
                    seq: e.seq.to_string(),
                    prev_hash: hex::encode(&e.prev_hash),
                    hash: hex::encode(&e.hash),
                    canonical: e.canonical.clone(),
                    event: serde_json::from_str(&e.canonical).unwrap_or_default(),
                })
                .collect();
            Ok(Json(EventPage {
                events,
                next_cursor: next,
                request_id,
            })
            .into_response())
        }
        Some(f) => {
            let format = Format::parse(f).ok_or_else(|| {
                fail(Error::InvalidRequest(
                    "format must be json, ndjson or csv".to_owned(),
                ))
            })?;
            let pager = Pager::new(store, &filter, after, q.limit.map(u64::from)).map_err(fail)?;
            let header_chunk =
                (format == Format::Csv).then(|| Bytes::from_static(CSV_HEADER.as_bytes()));
            let pages = futures_util::stream::try_unfold(pager, move |mut pager| async move {
                let page = pager.next_page().await?;
                if page.is_empty() {
                    return Ok::<_, Error>(None);
                }
                Ok(Some((Bytes::from(export::render(format, &page)), pager)))
            });
            let head = futures_util::stream::iter(header_chunk.map(Ok::<_, Error>));
            let body = Body::from_stream(futures_util::StreamExt::chain(head, pages));
            Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
        }
    }
}
