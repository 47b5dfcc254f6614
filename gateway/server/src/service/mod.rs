//! The work between a checked request and its answer: the decision's stages with bounded
//! decoding, deciding and recording in one order for every route, and the pool heavy work runs
//! on.

pub mod decision;
pub mod offload;
pub mod pipeline;
pub mod signing;
