//! Sources with their write keys, and admin keys. Keys are shown once at creation and stored as
//! SHA-256 hashes: they are long random secrets, so a slow password hash would buy nothing.

use crate::StoreError;
use crate::time::{format_micros, to_micros};
use chrono::Utc;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// A source of events (a website, an app, a back-office system) and its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub id: i64,
    pub name: String,
    /// The first characters of the write key, to tell keys apart without revealing them.
    pub key_prefix: String,
    pub created_at: String,
    /// Normalisation settings (see `cohort_collect::normalise::NormaliseRules`).
    pub settings: Value,
    /// The tracking plan, when one is set.
    pub tracking_plan: Option<Value>,
    pub disabled: bool,
    /// Where the source's messages come from, and so who can read its write key.
    pub kind: SourceKind,
    /// For a client-side source: whether its trait identifiers (email, phone, external IDs) may
    /// claim customers that already exist. Off unless the operator turns it on.
    pub trait_claims: bool,
    /// The web origins (`https://shop.example`) browsers may send this source's events from;
    /// `None` for any, since a browser key is public anyway. Requests without an `Origin`
    /// header (servers, apps) are not affected.
    pub allowed_origins: Option<Vec<String>>,
}

/// Where a source's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A back-office system or server SDK: its key is a secret.
    Server,
    /// A web page or an app: its key ships to every visitor, so anyone may send with it.
    Client,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Server => "server",
            SourceKind::Client => "client",
        }
    }

    /// `server` or `client`.
    pub fn parse(text: &str) -> Option<SourceKind> {
        match text {
            "server" => Some(SourceKind::Server),
            "client" => Some(SourceKind::Client),
            _ => None,
        }
    }
}

impl Source {
    /// Whether the processor must keep this source's trait identifiers from claiming customers.
    pub fn restricts_trait_claims(&self) -> bool {
        self.kind == SourceKind::Client && !self.trait_claims
    }
}

/// An admin API key's public record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminKey {
    pub id: i64,
    pub name: String,
    pub key_prefix: String,
    pub role: String,
    pub created_at: String,
}

/// SHA-256 of a key, hex-encoded.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Sources and admin keys in `state.db`.
///
/// Reads and writes go through two connections. A write waits for `state.db`'s write lock while
/// holding its connection; the processor reads sources (their trust) inside its own write
/// transaction. Over one shared connection the two waited for each other until the busy timeout
/// failed the write ("database is locked" after ten seconds); a reader connection never waits for
/// the write lock, so reads go through it.
pub struct Catalog {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

const SOURCE_COLUMNS: &str = "id, name, key_prefix, created_at, settings, tracking_plan, disabled, \
     kind, trait_claims, allowed_origins";

fn source_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Source> {
    let settings: String = r.get(4)?;
    let plan: Option<String> = r.get(5)?;
    Ok(Source {
        id: r.get(0)?,
        name: r.get(1)?,
        key_prefix: r.get(2)?,
        created_at: format_micros(r.get(3)?),
        settings: serde_json::from_str(&settings).unwrap_or(Value::Null),
        tracking_plan: plan.and_then(|p| serde_json::from_str(&p).ok()),
        disabled: r.get::<_, i64>(6)? != 0,
        kind: SourceKind::parse(&r.get::<_, String>(7)?).unwrap_or(SourceKind::Server),
        trait_claims: r.get::<_, i64>(8)? != 0,
        allowed_origins: r
            .get::<_, Option<String>>(9)?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

impl Catalog {
    pub(crate) fn new(writer: Connection, reader: Connection) -> Self {
        Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        }
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a source; returns it with its write key, which is not stored and cannot be shown again.
    pub fn create_source(&self, name: &str) -> Result<(Source, String), StoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Conflict("a source needs a name".into()));
        }
        let key = new_secret("wk_");
        let conn = self.writer();
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO sources (name, key_hash, key_prefix, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, hash_key(&key), &key[..10], to_micros(Utc::now())],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("source {name:?}")));
        }
        let id = conn.last_insert_rowid();
        drop(conn);
        let source = self
            .source(id)?
            .ok_or_else(|| StoreError::NotFound(format!("source {id}")))?;
        Ok((source, key))
    }

    pub fn source(&self, id: i64) -> Result<Option<Source>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?1"),
                [id],
                source_row,
            )
            .optional()?)
    }

    pub fn source_by_name(&self, name: &str) -> Result<Option<Source>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE name = ?1"),
                [name],
                source_row,
            )
            .optional()?)
    }

    /// The enabled source whose write key this is.
    pub fn source_by_key(&self, write_key: &str) -> Result<Option<Source>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                &format!(
                    "SELECT {SOURCE_COLUMNS} FROM sources WHERE key_hash = ?1 AND disabled = 0"
                ),
                [hash_key(write_key)],
                source_row,
            )
            .optional()?)
    }

    pub fn sources(&self) -> Result<Vec<Source>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare(&format!("SELECT {SOURCE_COLUMNS} FROM sources ORDER BY id"))?;
        let rows = stmt.query_map([], source_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets where a source's messages come from and whether a client-side source's trait
    /// identifiers may claim known customers.
    pub fn set_source_trust(
        &self,
        id: i64,
        kind: SourceKind,
        trait_claims: bool,
    ) -> Result<(), StoreError> {
        let changed = self.writer().execute(
            "UPDATE sources SET kind = ?2, trait_claims = ?3 WHERE id = ?1",
            params![id, kind.as_str(), trait_claims],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("source {id}")));
        }
        Ok(())
    }

    /// Sets the origins browsers may send this source's events from (`None`: any). The caller
    /// checks and normalises them (`cohort_collect::request::parse_origin`).
    pub fn set_allowed_origins(
        &self,
        id: i64,
        origins: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let text = origins.map(|o| serde_json::to_string(o).unwrap_or_else(|_| "[]".into()));
        self.update_source(id, "allowed_origins", text)
    }

    pub fn set_source_settings(&self, id: i64, settings: &Value) -> Result<(), StoreError> {
        self.update_source(id, "settings", Some(settings.to_string()))
    }

    pub fn set_tracking_plan(&self, id: i64, plan: Option<&Value>) -> Result<(), StoreError> {
        self.update_source(id, "tracking_plan", plan.map(Value::to_string))
    }

    fn update_source(
        &self,
        id: i64,
        column: &str,
        value: Option<String>,
    ) -> Result<(), StoreError> {
        let changed = self.writer().execute(
            &format!("UPDATE sources SET {column} = ?2 WHERE id = ?1"),
            params![id, value],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("source {id}")));
        }
        Ok(())
    }

    /// Creates an admin key; returns its record and the key itself, shown only this once.
    pub fn create_admin_key(
        &self,
        name: &str,
        role: &str,
    ) -> Result<(AdminKey, String), StoreError> {
        let key = new_secret("ck_");
        let record = self.add_admin_key(name, role, &key)?;
        Ok((record, key))
    }

    /// Registers a key chosen by the operator (for example from `COHORT_ADMIN_KEY`). Idempotent.
    pub fn add_admin_key(&self, name: &str, role: &str, key: &str) -> Result<AdminKey, StoreError> {
        let conn = self.writer();
        conn.execute(
            "INSERT OR IGNORE INTO admin_keys (name, key_hash, key_prefix, role, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                name,
                hash_key(key),
                key.chars().take(7).collect::<String>(),
                role,
                to_micros(Utc::now())
            ],
        )?;
        Ok(conn.query_row(
            "SELECT id, name, key_prefix, role, created_at FROM admin_keys WHERE key_hash = ?1",
            [hash_key(key)],
            admin_row,
        )?)
    }

    /// Removes the admin keys registered under `name`; returns how many there were.
    pub fn remove_admin_keys_named(&self, name: &str) -> Result<usize, StoreError> {
        Ok(self
            .writer()
            .execute("DELETE FROM admin_keys WHERE name = ?1", [name])?)
    }

    pub fn admin_key_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .reader()
            .query_row("SELECT COUNT(*) FROM admin_keys", [], |r| r.get(0))?)
    }

    /// The admin key record for a presented key.
    pub fn verify_admin_key(&self, key: &str) -> Result<Option<AdminKey>, StoreError> {
        Ok(self
            .reader()
            .query_row(
                "SELECT id, name, key_prefix, role, created_at FROM admin_keys WHERE key_hash = ?1",
                [hash_key(key)],
                admin_row,
            )
            .optional()?)
    }
}

fn admin_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdminKey> {
    Ok(AdminKey {
        id: r.get(0)?,
        name: r.get(1)?,
        key_prefix: r.get(2)?,
        role: r.get(3)?,
        created_at: format_micros(r.get(4)?),
    })
}
