//! The store's own failures, apart from what a request did wrong: the database was unreachable
//! or overloaded, or a statement failed. The HTTP layer answers both as `503 store_unavailable`
//! (docs/errors.md); the detail goes to the log, never to the caller.

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No connection came free in time, or the pool is closed: overloaded, not broken.
    #[error("store unavailable")]
    Unavailable,
    /// A statement failed: what was being done, and the database's words.
    #[error("database: {context}: {detail}")]
    Statement {
        context: &'static str,
        detail: String,
    },
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => crate::error::Error::StoreUnavailable,
            StoreError::Statement { context, detail } => {
                crate::error::Error::Database(format!("{context}: {detail}"))
            }
        }
    }
}
