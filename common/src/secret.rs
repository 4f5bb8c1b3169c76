//! Wrappers whose `Debug` never shows what they hold, so that structs carrying secrets (password
//! verifiers in SQL, environment values, file contents) can simply `#[derive(Debug)]`.
//!
//! - [`Secret`]: always printed as `<redacted>`.
//! - [`Content`]: file content, printed as its byte count (content may be secret, and is long anyway).
//! - [`SqlText`]: SQL that is shown, or secret and never shown.

use std::fmt;

/// A value that must never be printed: `Debug` shows `<redacted>`. Get at it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself; the name makes every use easy to find.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// File content: `Debug` shows only the byte count, e.g. `<17 bytes>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Content(Vec<u8>);

impl Content {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Content(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        Content(bytes)
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Content(text.into_bytes())
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Content(text.as_bytes().to_vec())
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// SQL text, either shown or secret (it carries a password verifier): secret text never reaches
/// `Debug`, diffs, logs or error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlText {
    Plain(String),
    Secret(Secret<String>),
}

impl SqlText {
    /// Plain text, shown in diffs and errors.
    pub fn plain(text: impl Into<String>) -> Self {
        SqlText::Plain(text.into())
    }

    /// Secret text, never shown.
    pub fn secret(text: impl Into<String>) -> Self {
        SqlText::Secret(Secret::new(text.into()))
    }

    /// `secret` decides which of the two it is.
    pub fn new(text: impl Into<String>, secret: bool) -> Self {
        if secret {
            SqlText::secret(text)
        } else {
            SqlText::plain(text)
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, SqlText::Secret(_))
    }

    /// The SQL itself, to hand to psql; never print it.
    pub fn expose(&self) -> &str {
        match self {
            SqlText::Plain(text) => text,
            SqlText::Secret(text) => text.expose(),
        }
    }

    /// The text when it may be shown, else None.
    pub fn shown(&self) -> Option<&str> {
        match self {
            SqlText::Plain(text) => Some(text),
            SqlText::Secret(_) => None,
        }
    }
}

impl Default for SqlText {
    fn default() -> Self {
        SqlText::Plain(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_what_it_holds() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Secret<String>,
            content: Content,
            sql: SqlText,
            shown: SqlText,
        }
        let holder = Holder {
            password: Secret::new("hunter2".into()),
            content: Content::from("hunter2\n"),
            sql: SqlText::secret("alter role x password 'hunter2'"),
            shown: SqlText::plain("select 1"),
        };
        let shown = format!("{holder:?} {holder:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>")
                && shown.contains("<8 bytes>")
                && shown.contains("select 1"),
            "{shown}"
        );
    }

    #[test]
    fn sql_text_exposes_on_request_only() {
        let secret = SqlText::new("select 'x'", true);
        assert!(secret.is_secret());
        assert_eq!(secret.expose(), "select 'x'");
        assert_eq!(secret.shown(), None);
        assert_eq!(SqlText::new("select 1", false).shown(), Some("select 1"));
    }
}
