//! The person's own page (`/ui/`) and its API: the page session and its CSRF check, the page's
//! routes, and the changes that need the person's passkey bound to the exact action.

pub(crate) mod api;
pub(crate) mod security;
pub mod session;
pub(crate) mod ui;
