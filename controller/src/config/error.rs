//! Config errors: each one carries file, line and key path, and all of them are reported together.

use std::fmt;

/// One problem found in config.yml.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigError {
    /// The file label, e.g. `config.yml`.
    pub file: String,
    /// 1-based line of the offending key or value; 0 when the file could not be read.
    pub line: usize,
    /// Key path, e.g. `instances[2].upstream`; empty for whole-file problems.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.path, self.message
            )
        }
    }
}

/// Every problem found in config.yml; `Display` prints one per line, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while the config is walked, so that one run reports them all.
#[derive(Debug)]
pub(crate) struct Diag {
    file: String,
    errors: Vec<ConfigError>,
}

impl Diag {
    pub(crate) fn new(file: &str) -> Diag {
        Diag {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub(crate) fn err(&mut self, line: usize, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// `Err` with every error found, if there is any.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.into_errors())
        }
    }

    /// Sorted by line, without the duplicates that defaults merged into many instances produce.
    pub(crate) fn into_errors(mut self) -> ConfigErrors {
        self.errors
            .sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
        self.errors.dedup();
        ConfigErrors(self.errors)
    }
}

/// The known name closest to `given`, if one is close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    given: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(given, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// The "unknown key" message, with a suggestion when one is close.
pub(crate) fn unknown_key<'a>(
    key: &str,
    what: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> String {
    match closest(key, known) {
        Some(k) => format!("unknown {what} `{key}`; did you mean `{k}`?"),
        None => format!("unknown {what} `{key}`"),
    }
}

/// The message for a key that TPA knows and we do not implement yet.
pub(crate) fn unsupported(key: &str) -> String {
    format!("`{key}` is a TPA setting that tpa does not support yet; remove it")
}

/// Like [`unsupported`], for a value of a key, with what to use instead.
pub(crate) fn unsupported_value(key: &str, value: &str, instead: &str) -> String {
    format!("`{key}: {value}` is a TPA setting that tpa does not support yet; use {instead}")
}
