//! One set of handlers for SQLite (embedded) and Postgres (distributed).
//!
//! The services' tables use two column types, `BIGINT` and `TEXT`, and
//! their statements the `$1` placeholders both databases accept, so one
//! migration and one statement serve both. A handler is generic over the
//! database plug-in (`B: Sql`, `Tx<B>`), runs statements with
//! [`Sql::execute`] / [`Sql::fetch`], and reads rows through [`Row`].

use std::future::Future;
use std::pin::Pin;

use mamey_core::Error;
use mamey_persistence::postgres::Postgres;
use mamey_persistence::sqlite::Sqlite;
use mamey_persistence::unit_of_work::TxDatabase;
use sqlx::{Column, Database, Pool, TypeInfo, ValueRef};

/// A boxed future borrowing `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A statement argument or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A `BIGINT` (`None`: NULL).
    Int(Option<i64>),
    /// A `TEXT` (`None`: NULL).
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}

/// The arguments of a statement: `args![id, title]`.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::sql::Value::from($value)),*]
    };
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn value(&self, index: usize) -> Result<&Value, Error> {
        self.0
            .get(index)
            .ok_or_else(|| Error::internal(format!("the row has no column {index}")))
    }

    /// Column `index`, a non-NULL integer.
    ///
    /// # Errors
    /// NULL, text, or no such column: a bug in the statement.
    pub fn int(&self, index: usize) -> Result<i64, Error> {
        self.opt_int(index)?
            .ok_or_else(|| Error::internal(format!("column {index} is NULL")))
    }

    /// Column `index`, an integer or NULL.
    ///
    /// # Errors
    /// Text, or no such column.
    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, Error> {
        match self.value(index)? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) => Ok(None),
            Value::Text(Some(_)) => Err(Error::internal(format!("column {index} is text"))),
        }
    }

    /// Column `index`, a non-NULL text.
    ///
    /// # Errors
    /// NULL, an integer, or no such column.
    pub fn text(&self, index: usize) -> Result<String, Error> {
        self.opt_text(index)?
            .ok_or_else(|| Error::internal(format!("column {index} is NULL")))
    }

    /// Column `index`, a text or NULL.
    ///
    /// # Errors
    /// An integer, or no such column.
    pub fn opt_text(&self, index: usize) -> Result<Option<String>, Error> {
        match self.value(index)? {
            Value::Text(v) => Ok(v.clone()),
            Value::Int(None) => Ok(None),
            Value::Int(Some(_)) => Err(Error::internal(format!("column {index} is an integer"))),
        }
    }
}

/// The connection a [`Tx`](mamey_persistence::Tx) of `B` derefs to.
pub type Conn<B> = <<B as TxDatabase>::Db as Database>::Connection;

/// A database the services run on: the [`Sqlite`] and [`Postgres`]
/// plug-ins.
pub trait Sql:
    TxDatabase<Outbox: mamey_messaging::OutboxStore> + mamey_core::Plugin + Sized
{
    /// `"sqlite"` or `"postgres"`: the config section of its plug-in.
    const SECTION: &'static str;

    /// The plug-in, with the outbox and the inbox.
    fn plugin() -> Self;

    /// Runs `sql` on `conn` (inside the handler's transaction); the number
    /// of rows changed.
    fn execute<'a>(
        conn: &'a mut Conn<Self>,
        sql: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, Error>>;

    /// Runs the query `sql` on `conn`; its rows.
    fn fetch<'a>(
        conn: &'a mut Conn<Self>,
        sql: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, Error>>;

    /// Runs the query `sql` on a connection of `pool` (outside any
    /// transaction: for reads).
    fn query<'a>(
        pool: &'a Pool<Self::Db>,
        sql: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, Error>>;
}

macro_rules! sql_backend {
    ($plugin:ty, $db:ty, $section:literal) => {
        impl Sql for $plugin {
            const SECTION: &'static str = $section;

            fn plugin() -> Self {
                <$plugin>::new().outbox().inbox()
            }

            fn execute<'a>(
                conn: &'a mut Conn<Self>,
                sql: &'a str,
                args: Vec<Value>,
            ) -> BoxFuture<'a, Result<u64, Error>> {
                Box::pin(async move {
                    let mut query = sqlx::query::<$db>(sql);
                    for arg in args {
                        query = match arg {
                            Value::Int(v) => query.bind(v),
                            Value::Text(v) => query.bind(v),
                        };
                    }
                    let done = query
                        .execute(&mut *conn)
                        .await
                        .map_err(mamey_persistence::error)?;
                    Ok(done.rows_affected())
                })
            }

            fn fetch<'a>(
                conn: &'a mut Conn<Self>,
                sql: &'a str,
                args: Vec<Value>,
            ) -> BoxFuture<'a, Result<Vec<Row>, Error>> {
                Box::pin(async move {
                    let mut query = sqlx::query::<$db>(sql);
                    for arg in args {
                        query = match arg {
                            Value::Int(v) => query.bind(v),
                            Value::Text(v) => query.bind(v),
                        };
                    }
                    let rows = query
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(mamey_persistence::error)?;
                    rows.iter().map(decode).collect()
                })
            }

            fn query<'a>(
                pool: &'a Pool<Self::Db>,
                sql: &'a str,
                args: Vec<Value>,
            ) -> BoxFuture<'a, Result<Vec<Row>, Error>> {
                Box::pin(async move {
                    let mut conn = pool.acquire().await.map_err(mamey_persistence::error)?;
                    Self::fetch(&mut conn, sql, args).await
                })
            }
        }
    };
}

sql_backend!(Sqlite, sqlx::Sqlite, "sqlite");
sql_backend!(Postgres, sqlx::Postgres, "postgres");

/// A row of either database as [`Value`]s: NULL, else an integer when the
/// column decodes as one, else text.
fn decode<R>(row: &R) -> Result<Row, Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i16: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(index).map_err(mamey_persistence::error)?;
        if raw.is_null() {
            values.push(Value::Int(None));
            continue;
        }
        let value = match column.type_info().name() {
            // Postgres's narrower integers (`SELECT 1` is an INT4).
            "INT4" => Value::Int(Some(i64::from(
                row.try_get::<i32, _>(index)
                    .map_err(mamey_persistence::error)?,
            ))),
            "INT2" => Value::Int(Some(i64::from(
                row.try_get::<i16, _>(index)
                    .map_err(mamey_persistence::error)?,
            ))),
            name if matches!(name, "INT8" | "BIGINT" | "INTEGER" | "INT")
                || raw.type_info().name() == "INTEGER" =>
            {
                Value::Int(Some(
                    row.try_get::<i64, _>(index)
                        .map_err(mamey_persistence::error)?,
                ))
            }
            _ => Value::Text(Some(
                row.try_get::<String, _>(index)
                    .map_err(mamey_persistence::error)?,
            )),
        };
        values.push(value);
    }
    Ok(Row(values))
}
