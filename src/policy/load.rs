//! The channel policy file: its format, parsing and validation, and [`PolicyError`].
//!
//! The policy is read once at startup and every mistake in it stops the service there, with
//! a message that names the file, the namespace and the field, rather than surfacing later
//! as a channel that is unexpectedly open or shut. Unknown fields are errors for the same
//! reason: a misspelt `require_admin` must not silently mean "no admin check".

use std::collections::btree_map::{BTreeMap, Entry};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::meta::SubscriptionTier;

use super::rule::{Lock, NamespaceRule, Owner, PublishLimit};
use super::ChannelPolicy;

/// Longest allowed `subscription_ttl_s`: a day. Longer would make the periodic re-check of
/// locks and tier meaningless.
const MAX_TTL_S: u64 = 86_400;

/// Why a channel policy could not be loaded. Every message starts with
/// `channel policy <origin>:` where origin is the file path (or what the caller passed).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("channel policy {path}: cannot read the file: {io}")]
    Read { path: String, io: std::io::Error },
    /// The file name does not end in `.toml` or `.json`, so its format is unknown.
    #[error("channel policy {path}: unsupported file extension, expected .toml or .json")]
    UnsupportedFormat { path: String },
    /// The text is not valid TOML/JSON, or does not have the policy's shape (unknown or
    /// missing field, wrong type, unknown lock or tier name, duplicate namespace).
    /// `message` carries the parser's line and column.
    #[error("channel policy {origin}: invalid {format}: {message}")]
    Parse {
        origin: String,
        format: &'static str,
        message: String,
    },
    /// The `namespaces` table is empty: such a policy would deny every channel.
    #[error("channel policy {origin}: no namespaces defined")]
    NoNamespaces { origin: String },
    /// A namespace's rule breaks a rule of its own.
    #[error("channel policy {origin}: namespace {namespace:?}: {problem}")]
    Rule {
        origin: String,
        namespace: String,
        problem: RuleProblem,
    },
}

/// What is wrong with one namespace's rule. Each message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblem {
    #[error("the namespace name must not be empty")]
    EmptyName,
    /// `:` separates the namespace from the rest of a channel, and whitespace, `#` (user
    /// limited channels) and `$` (private channels) have their own meaning in Centrifugo
    /// channel names, so a namespace containing them could never match the way it reads.
    #[error("the namespace name must not contain {0:?}")]
    BadNameChar(char),
    #[error("publish = true needs publish_max_bytes > 0")]
    PublishWithoutLimit,
    #[error("publish_max_bytes is set but publish = false, so it would have no effect")]
    LimitWithoutPublish,
    #[error("subscription_ttl_s = {0} is out of range 1..=86400")]
    TtlOutOfRange(u64),
    #[error("subscription_ttl_s is set but subscribe = false, so it would have no effect")]
    TtlWithoutSubscribe,
    #[error("min_tier = \"unspecified\" admits everyone; leave min_tier out instead")]
    MinTierUnspecified,
}

impl RuleProblem {
    /// The field the problem is about (`"name"` for the namespace's own name).
    pub fn field(&self) -> &'static str {
        match self {
            Self::EmptyName | Self::BadNameChar(_) => "name",
            Self::PublishWithoutLimit | Self::LimitWithoutPublish => "publish_max_bytes",
            Self::TtlOutOfRange(_) | Self::TtlWithoutSubscribe => "subscription_ttl_s",
            Self::MinTierUnspecified => "min_tier",
        }
    }
}

/// The file's top level: `[namespaces.<name>]` tables, or `{"namespaces": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    // JSON objects may repeat a key and serde would keep the last one; a namespace
    // defined twice is far more likely a paste mistake, so it is refused instead.
    #[serde(deserialize_with = "unique_namespaces")]
    namespaces: BTreeMap<String, NamespaceFile>,
}

/// One namespace as written in the file. The reference is the README, section "Channel policy".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    owner: Owner,
    subscribe: bool,
    publish: bool,
    #[serde(default)]
    require_admin: bool,
    #[serde(default)]
    closed_by: Vec<Lock>,
    #[serde(default)]
    min_tier: Option<SubscriptionTier>,
    #[serde(default)]
    allow_degraded: bool,
    #[serde(default)]
    publish_max_bytes: Option<u64>,
    #[serde(default = "default_require_object")]
    publish_require_object: bool,
    #[serde(default)]
    subscription_ttl_s: Option<u64>,
}

fn default_require_object() -> bool {
    true
}

fn unique_namespaces<'de, D>(deserializer: D) -> Result<BTreeMap<String, NamespaceFile>, D::Error>
where
    D: Deserializer<'de>,
{
    struct UniqueKeys;

    impl<'de> Visitor<'de> for UniqueKeys {
        type Value = BTreeMap<String, NamespaceFile>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of namespace rules")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut namespaces = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                match namespaces.entry(name) {
                    Entry::Occupied(entry) => {
                        return Err(A::Error::custom(format!(
                            "namespace {:?} is defined twice",
                            entry.key()
                        )));
                    }
                    Entry::Vacant(entry) => {
                        entry.insert(map.next_value()?);
                    }
                }
            }
            Ok(namespaces)
        }
    }

    deserializer.deserialize_map(UniqueKeys)
}

impl ChannelPolicy {
    /// Reads a policy file, choosing TOML or JSON by its extension.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let parse: fn(&str, &str) -> Result<Self, PolicyError> =
            match path.extension().and_then(|ext| ext.to_str()) {
                Some("toml") => Self::from_toml_str,
                Some("json") => Self::from_json_str,
                _ => return Err(PolicyError::UnsupportedFormat { path: shown }),
            };
        let text = std::fs::read_to_string(path).map_err(|io| PolicyError::Read {
            path: shown.clone(),
            io,
        })?;
        parse(&text, &shown)
    }

    /// Parses and validates a TOML policy; `origin` names it in error messages.
    pub fn from_toml_str(s: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(s).map_err(|e| PolicyError::Parse {
            origin: origin.to_owned(),
            format: "TOML",
            message: toml_message(&e, s),
        })?;
        compile(file, origin)
    }

    /// Parses and validates a JSON policy; `origin` names it in error messages.
    pub fn from_json_str(s: &str, origin: &str) -> Result<Self, PolicyError> {
        // serde_json's message already ends in "at line L column C".
        let file: PolicyFile = serde_json::from_str(s).map_err(|e| PolicyError::Parse {
            origin: origin.to_owned(),
            format: "JSON",
            message: e.to_string(),
        })?;
        compile(file, origin)
    }
}

/// The toml parser's message on one line, located the way serde_json locates its own
/// (toml's `Display` draws a multi-line source snippet, awkward in a log line).
fn toml_message(error: &toml::de::Error, source: &str) -> String {
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(source, span.start);
            format!(
                "{} at line {line} column {column}",
                error.message().trim_end()
            )
        }
        None => error.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before
        .get(line_start..)
        .map_or(0, |text| text.chars().count())
        + 1;
    (line, column)
}

fn compile(file: PolicyFile, origin: &str) -> Result<ChannelPolicy, PolicyError> {
    if file.namespaces.is_empty() {
        return Err(PolicyError::NoNamespaces {
            origin: origin.to_owned(),
        });
    }
    let mut namespaces = BTreeMap::new();
    for (name, raw) in file.namespaces {
        match compile_rule(&name, raw) {
            Ok(rule) => {
                namespaces.insert(name, rule);
            }
            Err(problem) => {
                return Err(PolicyError::Rule {
                    origin: origin.to_owned(),
                    namespace: name,
                    problem,
                });
            }
        }
    }
    Ok(ChannelPolicy { namespaces })
}

fn compile_rule(name: &str, raw: NamespaceFile) -> Result<NamespaceRule, RuleProblem> {
    if name.is_empty() {
        return Err(RuleProblem::EmptyName);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| matches!(c, ':' | '#' | '$') || c.is_whitespace())
    {
        return Err(RuleProblem::BadNameChar(bad));
    }

    let publish = match (raw.publish, raw.publish_max_bytes) {
        (true, Some(max_bytes)) if max_bytes > 0 => Some(PublishLimit {
            // Saturating: a limit beyond the address space is simply "no limit" in practice.
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            require_object: raw.publish_require_object,
        }),
        (true, _) => return Err(RuleProblem::PublishWithoutLimit),
        (false, Some(_)) => return Err(RuleProblem::LimitWithoutPublish),
        (false, None) => None,
    };

    let subscription_ttl = match raw.subscription_ttl_s {
        None => None,
        Some(_) if !raw.subscribe => return Err(RuleProblem::TtlWithoutSubscribe),
        Some(ttl @ 1..=MAX_TTL_S) => Some(Duration::from_secs(ttl)),
        Some(ttl) => return Err(RuleProblem::TtlOutOfRange(ttl)),
    };

    if raw.min_tier == Some(SubscriptionTier::Unspecified) {
        return Err(RuleProblem::MinTierUnspecified);
    }

    Ok(NamespaceRule {
        owner: raw.owner,
        require_admin: raw.require_admin,
        closed_by: raw.closed_by,
        min_tier: raw.min_tier,
        subscribe: raw.subscribe,
        publish,
        allow_degraded: raw.allow_degraded,
        subscription_ttl,
    })
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
