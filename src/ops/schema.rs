//! The shop tables and columns shopchat relies on (SCHEMA.md §2–3), read back
//! from `information_schema` for `/ready` and `shopchat check`.
//!
//! shopchat never creates or alters a table: a column the Laravel shop lost in
//! an upgrade (or never had) must be found by the operator before the first
//! request fails on it.

use std::collections::BTreeMap;

use sqlx::{MySqlPool, Row};

/// Which MySQL types a column may have for shopchat's reads and writes to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Ids, flags and counters: read as `i64`/`u64` (SCHEMA.md §1).
    Integer,
    /// Text of any length (`CHAR`, `VARCHAR`, `…TEXT`).
    Text,
    /// `TIMESTAMP`/`DATETIME`: read as text and parsed in code (COMPAT §6.4).
    Time,
}

impl Family {
    fn accepts(self, data_type: &str) -> bool {
        let t = data_type.to_ascii_lowercase();
        match self {
            Family::Integer => matches!(
                t.as_str(),
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
            ),
            Family::Text => matches!(
                t.as_str(),
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
            ),
            Family::Time => matches!(t.as_str(), "timestamp" | "datetime"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Family::Integer => "an integer type",
            Family::Text => "a text type (char, varchar, text)",
            Family::Time => "timestamp or datetime",
        }
    }
}

/// One column shopchat reads or writes.
#[derive(Debug, Clone, Copy)]
pub struct Required {
    pub table: &'static str,
    pub column: &'static str,
    pub family: Family,
    /// `false` only for `personal_access_tokens.expires_at` (added in product 9.6; shopchat
    /// works without it, COMPAT §2).
    pub mandatory: bool,
    /// shopchat stores NULL here (an absent `title`, §5.5).
    pub writes_null: bool,
}

const fn col(table: &'static str, column: &'static str, family: Family) -> Required {
    Required {
        table,
        column,
        family,
        mandatory: true,
        writes_null: false,
    }
}

use Family::{Integer, Text, Time};

/// Every column of SCHEMA.md §2–3 that a query of shopchat names.
pub const REQUIRED: &[Required] = &[
    col("conversations", "id", Integer),
    col("conversations", "sender_id", Integer),
    col("conversations", "receiver_id", Integer),
    Required {
        writes_null: true,
        ..col("conversations", "title", Text)
    },
    col("conversations", "sender_viewed", Integer),
    col("conversations", "receiver_viewed", Integer),
    col("conversations", "created_at", Time),
    col("conversations", "updated_at", Time),
    col("messages", "id", Integer),
    col("messages", "conversation_id", Integer),
    col("messages", "user_id", Integer),
    col("messages", "message", Text),
    col("messages", "created_at", Time),
    col("messages", "updated_at", Time),
    col("personal_access_tokens", "id", Integer),
    col("personal_access_tokens", "tokenable_type", Text),
    col("personal_access_tokens", "tokenable_id", Integer),
    col("personal_access_tokens", "token", Text),
    col("personal_access_tokens", "last_used_at", Time),
    Required {
        mandatory: false,
        ..col("personal_access_tokens", "expires_at", Time)
    },
    col("personal_access_tokens", "created_at", Time),
    col("personal_access_tokens", "updated_at", Time),
    col("translations", "id", Integer),
    col("translations", "lang", Text),
    col("translations", "lang_key", Text),
    col("translations", "lang_value", Text),
    col("translations", "created_at", Time),
    col("translations", "updated_at", Time),
    col("users", "id", Integer),
    col("users", "user_type", Text),
    col("users", "name", Text),
    col("users", "email", Text),
    col("users", "banned", Integer),
    col("shops", "id", Integer),
    col("shops", "user_id", Integer),
    col("shops", "name", Text),
    col("shops", "logo", Text),
    col("products", "id", Integer),
    col("products", "user_id", Integer),
    col("uploads", "id", Integer),
    col("uploads", "file_name", Text),
    col("uploads", "external_link", Text),
    col("uploads", "deleted_at", Time),
    col("business_settings", "id", Integer),
    col("business_settings", "type", Text),
    col("business_settings", "value", Text),
];

/// The tables shopchat inserts rows into, with the columns its INSERT names
/// (COMPAT §5.3, §5.5, §7.1). Every other NOT NULL column needs a default.
pub const INSERTS: &[(&str, &[&str])] = &[
    (
        "conversations",
        &[
            "sender_id",
            "receiver_id",
            "title",
            "updated_at",
            "created_at",
        ],
    ),
    (
        "messages",
        &[
            "conversation_id",
            "user_id",
            "message",
            "updated_at",
            "created_at",
        ],
    ),
    (
        "translations",
        &["lang", "lang_key", "lang_value", "updated_at", "created_at"],
    ),
];

/// The tables of [`REQUIRED`], in order, without duplicates.
pub fn tables() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in REQUIRED {
        if !out.contains(&r.table) {
            out.push(r.table);
        }
    }
    out
}

/// A column as `information_schema.columns` describes it.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub data_type: String,
    pub column_type: String,
    pub nullable: bool,
    pub default: Option<String>,
    pub auto_increment: bool,
    pub charset: Option<String>,
    pub collation: Option<String>,
}

/// Table → column → description, for the tables of [`REQUIRED`] in the
/// connection's current database.
pub type Columns = BTreeMap<String, BTreeMap<String, ColumnInfo>>;

/// Reads every column of the shop tables of the current database (one query).
pub async fn load_columns(pool: &MySqlPool) -> Result<Columns, sqlx::Error> {
    let tables = tables();
    let placeholders = vec!["?"; tables.len()].join(", ");
    // CAST … AS CHAR: information_schema columns are utf8mb3 (and some BLOB-ish on MySQL 8);
    // text avoids decoding surprises across server versions.
    let sql = format!(
        "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(data_type AS CHAR), \
         CAST(column_type AS CHAR), CAST(is_nullable AS CHAR), CAST(column_default AS CHAR), \
         CAST(extra AS CHAR), CAST(character_set_name AS CHAR), CAST(collation_name AS CHAR) \
         FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name IN ({placeholders})"
    );
    let mut q = sqlx::query(&sql);
    for t in &tables {
        q = q.bind(*t);
    }
    let rows = q.fetch_all(pool).await?;
    let mut out = Columns::new();
    for row in rows {
        let text = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
        let (Some(table), Some(column)) = (text(0), text(1)) else {
            continue;
        };
        let extra = text(6).unwrap_or_default();
        out.entry(table).or_default().insert(
            column,
            ColumnInfo {
                data_type: text(2).unwrap_or_default(),
                column_type: text(3).unwrap_or_default(),
                nullable: text(4).as_deref() == Some("YES"),
                // MariaDB reports an absent default as the text NULL, MySQL as SQL NULL.
                default: text(5).filter(|d| d != "NULL"),
                auto_increment: extra.to_ascii_lowercase().contains("auto_increment"),
                charset: text(7),
                collation: text(8),
            },
        );
    }
    Ok(out)
}

/// What is wrong with one required column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    MissingTable,
    MissingColumn,
    WrongType { found: String },
}

/// The mandatory columns that are missing or of an incompatible type, as
/// `(requirement, problem)`, in [`REQUIRED`] order.
pub fn problems(columns: &Columns) -> Vec<(Required, Problem)> {
    let mut out = Vec::new();
    for r in REQUIRED {
        let problem = match columns.get(r.table) {
            None => Some(Problem::MissingTable),
            Some(cols) => match cols.get(r.column) {
                None => r.mandatory.then_some(Problem::MissingColumn),
                Some(info) if !r.family.accepts(&info.data_type) => Some(Problem::WrongType {
                    found: info.column_type.clone(),
                }),
                Some(_) => None,
            },
        };
        if let Some(p) = problem {
            out.push((*r, p));
        }
    }
    out
}

/// One line per problem, e.g. `column messages.updated_at is missing`.
pub fn describe(r: &Required, p: &Problem) -> String {
    match p {
        Problem::MissingTable => format!("table {} is missing", r.table),
        Problem::MissingColumn => format!("column {}.{} is missing", r.table, r.column),
        Problem::WrongType { found } => format!(
            "column {}.{} is {found}, expected {}",
            r.table,
            r.column,
            r.family.describe()
        ),
    }
}

/// The problems as short strings, one per missing table (not per column).
pub fn summary(columns: &Columns) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (r, p) in problems(columns) {
        let line = describe(&r, &p);
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(data_type: &str) -> ColumnInfo {
        ColumnInfo {
            data_type: data_type.into(),
            column_type: data_type.into(),
            nullable: false,
            default: None,
            auto_increment: false,
            charset: None,
            collation: None,
        }
    }

    fn complete() -> Columns {
        let mut c = Columns::new();
        for r in REQUIRED {
            let t = match r.family {
                Integer => "int",
                Text => "varchar",
                Time => "timestamp",
            };
            c.entry(r.table.to_string())
                .or_default()
                .insert(r.column.to_string(), info(t));
        }
        c
    }

    #[test]
    fn a_complete_schema_has_no_problems() {
        assert!(problems(&complete()).is_empty());
    }

    #[test]
    fn expires_at_is_optional_but_typed() {
        let mut c = complete();
        c.get_mut("personal_access_tokens")
            .unwrap()
            .remove("expires_at");
        assert!(problems(&c).is_empty());
        c.get_mut("personal_access_tokens")
            .unwrap()
            .insert("expires_at".into(), info("int"));
        assert_eq!(
            summary(&c),
            vec!["column personal_access_tokens.expires_at is int, expected timestamp or datetime"]
        );
    }

    #[test]
    fn missing_columns_and_tables_are_named() {
        let mut c = complete();
        c.get_mut("messages").unwrap().remove("updated_at");
        c.remove("shops");
        c.get_mut("users")
            .unwrap()
            .insert("banned".into(), info("varchar"));
        assert_eq!(
            summary(&c),
            vec![
                "column messages.updated_at is missing",
                "column users.banned is varchar, expected an integer type",
                "table shops is missing",
            ]
        );
    }

    #[test]
    fn insert_columns_are_required_columns() {
        for (table, cols) in INSERTS {
            for c in *cols {
                assert!(
                    REQUIRED.iter().any(|r| r.table == *table && r.column == *c),
                    "{table}.{c}"
                );
            }
        }
    }
}
