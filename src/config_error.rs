//! Configuration errors: a leaf module, so that every component that validates a value of
//! its own (the ledger, Redis, TLS files) can name the variable without importing the
//! configuration that reads it (which imports those components).

use std::fmt;

/// One variable with a bad value. The message says what is wrong and never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            message: message.into(),
        }
    }
}

/// Shorthand for `ConfigError::new`.
pub fn invalid(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(var, message)
}

/// Every problem found, in the order the variables were read: an operator fixes a manifest
/// once, not once per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while a configuration is checked, so that all of them are reported.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    pub fn push(&mut self, var: &str, message: impl Into<String>) {
        self.0.push(ConfigError::new(var, message));
    }

    /// Keeps the value of a check, or records its error and returns `None`.
    pub fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Keeps the value of a check that reports several errors, or records them all.
    pub fn take_all<T>(&mut self, result: Result<T, ConfigErrors>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(ConfigErrors(errors)) => {
                self.0.extend(errors);
                None
            }
        }
    }

    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigErrors(self.0))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Everything recorded, as one error value.
    pub fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.0)
    }

    /// Adds the errors about variables not reported yet: a later step that judged a
    /// variable's stand-in (its default, because its value did not parse) has nothing to add
    /// about that variable.
    pub fn extend_unreported(&mut self, errors: ConfigErrors) {
        for e in errors.0 {
            if !self.0.iter().any(|known| known.var == e.var) {
                self.0.push(e);
            }
        }
    }
}
