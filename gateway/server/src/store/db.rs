//! What every table module shares to run one set of portable statements on SQLite and
//! PostgreSQL: the pool dispatch, the few typed column reads, and the error mapping.

use sqlx::Row;

use crate::store::StoreError;

/// Runs `$body` with `$pool` bound to whichever pool the store holds; the body is written once
/// and compiled for both databases.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// A state or kind stored as a fixed snake_case name: the enum, its name both ways, `Display`
/// and `Serialize` as the name. A row with another name fails to decode instead of becoming a
/// string nobody matches.
macro_rules! stored_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value stored under `name`, if it is one.
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Reads the value from a stored name; another name is a decoding error.
            pub(crate) fn decode(name: &str) -> std::result::Result<$name, sqlx::Error> {
                $name::from_name(name).ok_or_else(|| {
                    sqlx::Error::Decode(
                        format!(concat!("unknown ", stringify!($name), " {:?}"), name).into(),
                    )
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_enum;

/// Reads a value stored by name (`from_name` of a named wire enum); another name is a decoding
/// error.
pub(crate) fn decode_name<T>(
    name: &str,
    from_name: fn(&str) -> Option<T>,
) -> std::result::Result<T, sqlx::Error> {
    from_name(name).ok_or_else(|| sqlx::Error::Decode(format!("unknown name {name:?}").into()))
}

/// Maps a database error to the store's, naming what was being done (the detail stays in logs).
pub(crate) fn db(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match e {
        // No connection came free in time: the store is overloaded, not broken (503, retry).
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            tracing::warn!(context, error = %e, "database pool exhausted");
            StoreError::Unavailable
        }
        e => StoreError::Statement {
            context,
            detail: e.to_string(),
        },
    }
}

/// The few column reads shared by both databases' rows, so that a row mapper is written once.
pub(crate) trait RowLike {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
}

macro_rules! row_like {
    ($ty:ty) => {
        impl RowLike for $ty {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                self.try_get(col)
            }
            fn bytes(&self, col: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
row_like!(sqlx::sqlite::SqliteRow);
row_like!(sqlx::postgres::PgRow);

/// Opens a transaction that will write. On SQLite it begins `IMMEDIATE`: a deferred transaction
/// that reads first and writes later cannot wait for the write lock (SQLite answers `BUSY` or
/// `BUSY_SNAPSHOT` at once when another connection wrote since its read began), so taking the
/// lock up front lets `busy_timeout` queue it behind the other writers instead. PostgreSQL's
/// row locks need no such care.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send
    {
        self.begin()
    }
}
