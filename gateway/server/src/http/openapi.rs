//! The OpenAPI document, compiled in so that the served document is the one the tests checked.

pub const DOCUMENT: &str = include_str!("../../../../schemas/openapi.json");
