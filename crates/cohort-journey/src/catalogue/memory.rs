//! The catalogue in memory, for tests and tools.

use super::{
    CatalogueError, Existing, HistoryEntry, JourneyCatalogue, JourneyVersion, StoredChannel,
    TemplateVersion, apply_transition, channel_users, check_channel, check_template,
    check_template_kind, next_draft,
};
use crate::definition::lifecycle::Action;
use crate::definition::{Catalogue, ChannelKind, Journey};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// Journey definitions, templates and channels in memory.
#[derive(Debug, Default)]
pub struct MemoryJourneyCatalogue {
    /// Each journey's versions, in order.
    journeys: BTreeMap<String, Vec<JourneyVersion>>,
    history: BTreeMap<String, Vec<HistoryEntry>>,
    /// Each template's versions, in order.
    templates: BTreeMap<String, Vec<TemplateVersion>>,
    channels: BTreeMap<String, StoredChannel>,
}

impl MemoryJourneyCatalogue {
    fn existing(&self) -> Existing {
        Existing {
            channels: self
                .channels
                .values()
                .map(|c| (c.name.clone(), c.kind))
                .collect(),
            templates: self
                .templates
                .iter()
                .filter_map(|(key, versions)| {
                    versions.last().map(|t| (key.clone(), (t.kind, t.version)))
                })
                .collect(),
        }
    }

    fn live_versions(&self) -> impl Iterator<Item = &JourneyVersion> {
        self.journeys
            .values()
            .flatten()
            .filter(|v| v.run().is_some())
    }
}

impl JourneyCatalogue for MemoryJourneyCatalogue {
    fn save_draft(
        &mut self,
        journey: &Journey,
        now: DateTime<Utc>,
    ) -> Result<JourneyVersion, CatalogueError> {
        super::check_key("journey", &journey.key)?;
        let versions = self.journeys.entry(journey.key.clone()).or_default();
        let saved = next_draft(versions.last(), journey, now)?;
        match versions.last_mut() {
            Some(last) if last.version == saved.version => *last = saved.clone(),
            _ => versions.push(saved.clone()),
        }
        self.history
            .entry(journey.key.clone())
            .or_default()
            .push(HistoryEntry {
                version: saved.version,
                change: super::Change::Saved,
                at: now,
            });
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
        let existing = self.existing();
        let unknown = || CatalogueError::UnknownVersion {
            key: key.to_string(),
            version,
        };
        let stored = self.journeys.get_mut(key).ok_or_else(unknown)?;
        // Applied to a copy, kept only when the whole action succeeded.
        let mut versions = stored.clone();
        let happened = apply_transition(&mut versions, version, action, others, &existing, now)?;
        *stored = versions;
        self.history
            .entry(key.to_string())
            .or_default()
            .extend(happened);
        stored
            .iter()
            .find(|v| v.version == version)
            .cloned()
            .ok_or_else(unknown)
    }

    fn get(&mut self, key: &str, version: u32) -> Result<Option<JourneyVersion>, CatalogueError> {
        Ok(self
            .journeys
            .get(key)
            .and_then(|vs| vs.iter().find(|v| v.version == version))
            .cloned())
    }

    fn latest(&mut self, key: &str) -> Result<Option<JourneyVersion>, CatalogueError> {
        Ok(self.journeys.get(key).and_then(|vs| vs.last()).cloned())
    }

    fn list(&mut self) -> Result<Vec<JourneyVersion>, CatalogueError> {
        Ok(self.journeys.values().flatten().cloned().collect())
    }

    fn history(&mut self, key: &str) -> Result<Vec<HistoryEntry>, CatalogueError> {
        Ok(self.history.get(key).cloned().unwrap_or_default())
    }

    fn save_template(
        &mut self,
        key: &str,
        kind: ChannelKind,
        source: &Value,
        now: DateTime<Utc>,
    ) -> Result<TemplateVersion, CatalogueError> {
        check_template(key, source)?;
        let versions = self.templates.entry(key.to_string()).or_default();
        check_template_kind(key, versions.first().map(|t| t.kind), kind)?;
        let saved = TemplateVersion {
            key: key.to_string(),
            version: versions.last().map_or(1, |t| t.version.saturating_add(1)),
            kind,
            source: source.clone(),
            saved_at: now,
        };
        versions.push(saved.clone());
        Ok(saved)
    }

    fn template(&mut self, key: &str) -> Result<Option<TemplateVersion>, CatalogueError> {
        Ok(self.templates.get(key).and_then(|vs| vs.last()).cloned())
    }

    fn template_version(
        &mut self,
        key: &str,
        version: u32,
    ) -> Result<Option<TemplateVersion>, CatalogueError> {
        Ok(self
            .templates
            .get(key)
            .and_then(|vs| vs.iter().find(|t| t.version == version))
            .cloned())
    }

    fn templates(&mut self) -> Result<Vec<TemplateVersion>, CatalogueError> {
        Ok(self
            .templates
            .values()
            .filter_map(|vs| vs.last().cloned())
            .collect())
    }

    fn save_channel(
        &mut self,
        name: &str,
        config: &Value,
        now: DateTime<Utc>,
    ) -> Result<StoredChannel, CatalogueError> {
        let kind = check_channel(name, config)?;
        if self.channels.get(name).is_some_and(|c| c.kind != kind) {
            let by = channel_users(self.live_versions(), name);
            if !by.is_empty() {
                return Err(CatalogueError::ChannelInUse {
                    name: name.to_string(),
                    by,
                });
            }
        }
        let saved = StoredChannel {
            name: name.to_string(),
            kind,
            config: config.clone(),
            saved_at: now,
        };
        self.channels.insert(name.to_string(), saved.clone());
        Ok(saved)
    }

    fn channel(&mut self, name: &str) -> Result<Option<StoredChannel>, CatalogueError> {
        Ok(self.channels.get(name).cloned())
    }

    fn channels(&mut self) -> Result<Vec<StoredChannel>, CatalogueError> {
        Ok(self.channels.values().cloned().collect())
    }

    fn delete_channel(&mut self, name: &str) -> Result<bool, CatalogueError> {
        let by = channel_users(self.live_versions(), name);
        if !by.is_empty() {
            return Err(CatalogueError::ChannelInUse {
                name: name.to_string(),
                by,
            });
        }
        Ok(self.channels.remove(name).is_some())
    }
}
