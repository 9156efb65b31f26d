//! Journey definitions, message templates and channels in `state.db`: the SQLite
//! [`JourneyCatalogue`].
//!
//! Every change is one immediate transaction, which reads what it decides on (a journey's
//! versions, the channels and templates a publish is checked against, the live versions a
//! channel deletion looks at) after taking the write lock: a publish and everything it
//! changes (the version, the versions it makes finishing, their history) commit together or
//! not at all. The decisions themselves are `cohort_journey::catalogue`'s, shared with the
//! in-memory catalogue.

use crate::time::{from_micros, to_micros};
use chrono::{DateTime, Utc};
use cohort_journey::catalogue::{
    CatalogueError, Change, Existing, HistoryEntry, JourneyCatalogue, JourneyVersion,
    StoredChannel, TemplateVersion, apply_transition, channel_users, check_channel, check_key,
    check_template, check_template_kind, next_draft,
};
use cohort_journey::definition::lifecycle::{Action, State};
use cohort_journey::definition::{Catalogue, ChannelKind, Journey, parse_json};
use cohort_journey::runner::Published;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;
use std::collections::BTreeMap;

/// The SQLite journey catalogue, on a connection of its own.
pub struct SqliteJourneyCatalogue {
    conn: Connection,
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> CatalogueError {
    CatalogueError::Storage(Box::new(e))
}

fn state_of(text: &str) -> Option<State> {
    [
        State::Draft,
        State::Published,
        State::Paused,
        State::Archived,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
}

fn kind_of(text: &str) -> Result<ChannelKind, CatalogueError> {
    [
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Push,
        ChannelKind::Webhook,
    ]
    .into_iter()
    .find(|k| k.as_str() == text)
    .ok_or_else(|| CatalogueError::Unreadable(format!("unknown channel kind {text:?}")))
}

fn version_of(n: i64, what: &str) -> Result<u32, CatalogueError> {
    u32::try_from(n).map_err(|_| CatalogueError::Unreadable(format!("{what} has version {n}")))
}

const VERSION_COLUMNS: &str = "SELECT key, version, state, finishing, definition, templates, \
     created_at, updated_at FROM journey_versions";

type VersionRow = (String, i64, String, bool, String, String, i64, i64);

fn read_versions(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<JourneyVersion>, CatalogueError> {
    let mut stmt = conn.prepare_cached(sql).map_err(storage)?;
    let rows: Vec<VersionRow> = stmt
        .query_map(args, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .map_err(storage)?
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    rows.into_iter()
        .map(
            |(key, version, state, finishing, definition, templates, created, updated)| {
                let unreadable =
                    |what: String| CatalogueError::Unreadable(format!("journey {key:?} {what}"));
                let version = version_of(version, &format!("journey {key:?}"))?;
                let state = state_of(&state)
                    .ok_or_else(|| unreadable(format!("v{version} has state {state:?}")))?;
                let journey: Journey = parse_json(&definition)
                    .map_err(|e| unreadable(format!("v{version}'s definition: {e}")))?;
                let templates: BTreeMap<String, u32> = serde_json::from_str(&templates)
                    .map_err(|e| unreadable(format!("v{version}'s templates: {e}")))?;
                Ok(JourneyVersion {
                    key,
                    version,
                    state,
                    finishing,
                    journey,
                    templates,
                    created_at: from_micros(created),
                    updated_at: from_micros(updated),
                })
            },
        )
        .collect()
}

fn write_version(conn: &Connection, v: &JourneyVersion) -> Result<(), CatalogueError> {
    let definition = serde_json::to_string(&v.journey).map_err(storage)?;
    let templates = serde_json::to_string(&v.templates).map_err(storage)?;
    conn.execute(
        "INSERT OR REPLACE INTO journey_versions
           (key, version, state, finishing, definition, templates, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            v.key,
            i64::from(v.version),
            v.state.as_str(),
            v.finishing,
            definition,
            templates,
            to_micros(v.created_at),
            to_micros(v.updated_at)
        ],
    )
    .map_err(storage)?;
    Ok(())
}

fn record(conn: &Connection, key: &str, entry: &HistoryEntry) -> Result<(), CatalogueError> {
    conn.execute(
        "INSERT INTO journey_version_history (key, version, change, at) VALUES (?1, ?2, ?3, ?4)",
        params![
            key,
            i64::from(entry.version),
            entry.change.as_str(),
            to_micros(entry.at)
        ],
    )
    .map_err(storage)?;
    Ok(())
}

fn live_versions(conn: &Connection) -> Result<Vec<JourneyVersion>, CatalogueError> {
    read_versions(
        conn,
        &format!("{VERSION_COLUMNS} WHERE state IN ('published', 'paused') ORDER BY key, version"),
        [],
    )
}

const TEMPLATE_COLUMNS: &str = "SELECT key, version, kind, source, saved_at FROM message_templates";

fn read_templates(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<TemplateVersion>, CatalogueError> {
    let mut stmt = conn.prepare_cached(sql).map_err(storage)?;
    let rows: Vec<(String, i64, String, String, i64)> = stmt
        .query_map(args, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(storage)?
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    rows.into_iter()
        .map(|(key, version, kind, source, saved_at)| {
            let source = serde_json::from_str(&source).map_err(|e| {
                CatalogueError::Unreadable(format!("template {key:?} v{version}: {e}"))
            })?;
            Ok(TemplateVersion {
                version: version_of(version, &format!("template {key:?}"))?,
                key,
                kind: kind_of(&kind)?,
                source,
                saved_at: from_micros(saved_at),
            })
        })
        .collect()
}

const CHANNEL_COLUMNS: &str = "SELECT name, kind, config, saved_at FROM message_channels";

fn read_channels(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StoredChannel>, CatalogueError> {
    let mut stmt = conn.prepare_cached(sql).map_err(storage)?;
    let rows: Vec<(String, String, String, i64)> = stmt
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(storage)?
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    rows.into_iter()
        .map(|(name, kind, config, saved_at)| {
            let config = serde_json::from_str(&config)
                .map_err(|e| CatalogueError::Unreadable(format!("channel {name:?}: {e}")))?;
            Ok(StoredChannel {
                kind: kind_of(&kind)?,
                name,
                config,
                saved_at: from_micros(saved_at),
            })
        })
        .collect()
}

/// The channels and the templates' latest versions, as a publish checks against them.
fn existing(conn: &Connection) -> Result<Existing, CatalogueError> {
    let mut found = Existing::default();
    for channel in read_channels(conn, CHANNEL_COLUMNS, [])? {
        found.channels.insert(channel.name, channel.kind);
    }
    let mut stmt = conn
        .prepare_cached("SELECT key, kind, MAX(version) FROM message_templates GROUP BY key")
        .map_err(storage)?;
    let rows: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(storage)?
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    for (key, kind, version) in rows {
        let version = version_of(version, &format!("template {key:?}"))?;
        found.templates.insert(key, (kind_of(&kind)?, version));
    }
    Ok(found)
}

impl SqliteJourneyCatalogue {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteJourneyCatalogue { conn }
    }
}

impl JourneyCatalogue for SqliteJourneyCatalogue {
    fn save_draft(
        &mut self,
        journey: &Journey,
        now: DateTime<Utc>,
    ) -> Result<JourneyVersion, CatalogueError> {
        check_key("journey", &journey.key)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let latest = read_versions(
            &tx,
            &format!("{VERSION_COLUMNS} WHERE key = ?1 ORDER BY version DESC LIMIT 1"),
            [&journey.key],
        )?
        .pop();
        let saved = next_draft(latest.as_ref(), journey, now)?;
        write_version(&tx, &saved)?;
        record(
            &tx,
            &saved.key,
            &HistoryEntry {
                version: saved.version,
                change: Change::Saved,
                at: now,
            },
        )?;
        tx.commit().map_err(storage)?;
        Ok(saved)
    }

    fn transition(
        &mut self,
        key: &str,
        version: u32,
        action: Action,
        others: &Catalogue,
        now: DateTime<Utc>,
    ) -> Result<JourneyVersion, CatalogueError> {
        let unknown = || CatalogueError::UnknownVersion {
            key: key.to_string(),
            version,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let mut versions = read_versions(
            &tx,
            &format!("{VERSION_COLUMNS} WHERE key = ?1 ORDER BY version"),
            [key],
        )?;
        if versions.is_empty() {
            return Err(unknown());
        }
        let existing = if action == Action::Publish {
            existing(&tx)?
        } else {
            Existing::default()
        };
        // A refusal returns before anything is written; the transaction rolls back on drop.
        let happened = apply_transition(&mut versions, version, action, others, &existing, now)?;
        for entry in &happened {
            if let Some(changed) = versions.iter().find(|v| v.version == entry.version) {
                write_version(&tx, changed)?;
            }
            record(&tx, key, entry)?;
        }
        tx.commit().map_err(storage)?;
        versions
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(unknown)
    }

    fn get(&mut self, key: &str, version: u32) -> Result<Option<JourneyVersion>, CatalogueError> {
        Ok(read_versions(
            &self.conn,
            &format!("{VERSION_COLUMNS} WHERE key = ?1 AND version = ?2"),
            params![key, i64::from(version)],
        )?
        .pop())
    }

    fn latest(&mut self, key: &str) -> Result<Option<JourneyVersion>, CatalogueError> {
        Ok(read_versions(
            &self.conn,
            &format!("{VERSION_COLUMNS} WHERE key = ?1 ORDER BY version DESC LIMIT 1"),
            [key],
        )?
        .pop())
    }

    fn list(&mut self) -> Result<Vec<JourneyVersion>, CatalogueError> {
        read_versions(
            &self.conn,
            &format!("{VERSION_COLUMNS} ORDER BY key, version"),
            [],
        )
    }

    fn history(&mut self, key: &str) -> Result<Vec<HistoryEntry>, CatalogueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT version, change, at FROM journey_version_history WHERE key = ?1
                 ORDER BY id",
            )
            .map_err(storage)?;
        let rows: Vec<(i64, String, i64)> = stmt
            .query_map([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(storage)?
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        rows.into_iter()
            .map(|(version, change, at)| {
                Ok(HistoryEntry {
                    version: version_of(version, &format!("journey {key:?}"))?,
                    change: Change::parse(&change).ok_or_else(|| {
                        CatalogueError::Unreadable(format!("journey {key:?}: change {change:?}"))
                    })?,
                    at: from_micros(at),
                })
            })
            .collect()
    }

    fn live(&mut self) -> Result<Vec<Published>, CatalogueError> {
        Ok(live_versions(&self.conn)?
            .iter()
            .filter_map(JourneyVersion::published)
            .collect())
    }

    fn save_template(
        &mut self,
        key: &str,
        kind: ChannelKind,
        source: &Value,
        now: DateTime<Utc>,
    ) -> Result<TemplateVersion, CatalogueError> {
        check_template(key, source)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let first: Option<String> = tx
            .query_row(
                "SELECT kind FROM message_templates WHERE key = ?1 ORDER BY version LIMIT 1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        check_template_kind(key, first.as_deref().map(kind_of).transpose()?, kind)?;
        let latest: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM message_templates WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .map_err(storage)?;
        let version = version_of(latest.saturating_add(1), &format!("template {key:?}"))?;
        let text = serde_json::to_string(source).map_err(storage)?;
        tx.execute(
            "INSERT INTO message_templates (key, version, kind, source, saved_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, i64::from(version), kind.as_str(), text, to_micros(now)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(TemplateVersion {
            key: key.to_string(),
            version,
            kind,
            source: source.clone(),
            saved_at: now,
        })
    }

    fn template(&mut self, key: &str) -> Result<Option<TemplateVersion>, CatalogueError> {
        Ok(read_templates(
            &self.conn,
            &format!("{TEMPLATE_COLUMNS} WHERE key = ?1 ORDER BY version DESC LIMIT 1"),
            [key],
        )?
        .pop())
    }

    fn template_version(
        &mut self,
        key: &str,
        version: u32,
    ) -> Result<Option<TemplateVersion>, CatalogueError> {
        Ok(read_templates(
            &self.conn,
            &format!("{TEMPLATE_COLUMNS} WHERE key = ?1 AND version = ?2"),
            params![key, i64::from(version)],
        )?
        .pop())
    }

    fn templates(&mut self) -> Result<Vec<TemplateVersion>, CatalogueError> {
        read_templates(
            &self.conn,
            &format!(
                "{TEMPLATE_COLUMNS} AS t WHERE version =
                   (SELECT MAX(version) FROM message_templates WHERE key = t.key)
                 ORDER BY key"
            ),
            [],
        )
    }

    fn save_channel(
        &mut self,
        name: &str,
        config: &Value,
        now: DateTime<Utc>,
    ) -> Result<StoredChannel, CatalogueError> {
        let kind = check_channel(name, config)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let was: Option<String> = tx
            .query_row(
                "SELECT kind FROM message_channels WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage)?;
        if was.is_some_and(|was| was != kind.as_str()) {
            let by = channel_users(&live_versions(&tx)?, name);
            if !by.is_empty() {
                return Err(CatalogueError::ChannelInUse {
                    name: name.to_string(),
                    by,
                });
            }
        }
        let text = serde_json::to_string(config).map_err(storage)?;
        tx.execute(
            "INSERT OR REPLACE INTO message_channels (name, kind, config, saved_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![name, kind.as_str(), text, to_micros(now)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(StoredChannel {
            name: name.to_string(),
            kind,
            config: config.clone(),
            saved_at: now,
        })
    }

    fn channel(&mut self, name: &str) -> Result<Option<StoredChannel>, CatalogueError> {
        Ok(read_channels(
            &self.conn,
            &format!("{CHANNEL_COLUMNS} WHERE name = ?1"),
            [name],
        )?
        .pop())
    }

    fn channels(&mut self) -> Result<Vec<StoredChannel>, CatalogueError> {
        read_channels(&self.conn, &format!("{CHANNEL_COLUMNS} ORDER BY name"), [])
    }

    fn delete_channel(&mut self, name: &str) -> Result<bool, CatalogueError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let by = channel_users(&live_versions(&tx)?, name);
        if !by.is_empty() {
            return Err(CatalogueError::ChannelInUse {
                name: name.to_string(),
                by,
            });
        }
        let deleted = tx
            .execute("DELETE FROM message_channels WHERE name = ?1", [name])
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(deleted > 0)
    }
}
