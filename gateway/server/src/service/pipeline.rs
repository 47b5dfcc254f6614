//! The decision's stages as the gateway runs them: everything of [`parapet_decide::pipeline`],
//! plus decoding heavy payloads on the bounded pool so that hostile bodies cannot occupy the
//! async runtime.

use std::sync::Arc;

use alloy::primitives::Address;

pub use parapet_decide::pipeline::*;

use crate::error::Result;
use crate::facts::Facts;
use crate::policy::LoadedPolicies;
use crate::request::AuthorizeRequest;

/// [`decode_request`] for a request handler: light payloads inline, heavier ones on `pool`
/// (a copy of the request goes with them), so that hostile bodies cannot occupy the runtime.
/// Returns the facts and how long decoding took (waiting for a slot excluded).
pub async fn decode_bounded(
    pool: &crate::service::offload::Offload,
    policies: &Arc<LoadedPolicies>,
    wallet: Address,
    req: &AuthorizeRequest,
) -> Result<(Facts, std::time::Duration)> {
    let timed = move |policies: &LoadedPolicies, req: &AuthorizeRequest| {
        let started = std::time::Instant::now();
        decode_request(policies, wallet, req)
            .map(|facts| (facts, started.elapsed()))
            .map_err(crate::Error::from)
    };
    if payload_weight(req) <= INLINE_DECODE_WEIGHT {
        return timed(policies, req);
    }
    let policies = Arc::clone(policies);
    let req = req.clone();
    pool.run(move || timed(&policies, &req)).await?
}
