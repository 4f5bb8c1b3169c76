//! A small owned YAML tree with a line number on every node and key, plus typed readers that
//! record a positioned error (instead of failing) when a value has the wrong type.

use std::collections::BTreeMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::error::Diag;

/// One YAML node and the line it starts on.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) line: usize,
    pub(crate) value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Kept in document order; duplicate keys are rejected while loading.
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) line: usize,
    pub(crate) value: Node,
}

/// A mapping entry together with the full key path of its value, e.g. `instances[1].vars.x`.
/// Merged instances mix entries from several places, so each entry keeps the path it came from.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub(crate) key: &'a str,
    pub(crate) line: usize,
    pub(crate) path: String,
    pub(crate) value: &'a Node,
}

/// Parses `source` into a tree; syntax errors (including duplicate keys) go to `diag`.
pub(crate) fn load(source: &str, diag: &mut Diag) -> Option<Node> {
    let docs = match MarkedYaml::load_from_str(source) {
        Ok(docs) => docs,
        Err(e) => {
            let line = e.marker().line().max(1);
            let message = if e.info().contains("duplicated key") {
                let key = duplicated_key_name(source, line);
                format!(
                    "duplicate key `{key}`; TPA would silently use the last one, define each key once"
                )
            } else {
                format!("invalid YAML: {}", e.info())
            };
            diag.err(line, "", message);
            return None;
        }
    };
    let mut docs = docs.into_iter();
    let Some(first) = docs.next() else {
        diag.err(
            1,
            "",
            "the file is empty; run `tpa-controller configure` to write one",
        );
        return None;
    };
    if docs.next().is_some() {
        diag.err(
            1,
            "",
            "the file holds more than one YAML document; keep only one",
        );
    }
    Some(convert(&first, "", diag))
}

/// The key text on the given line (the loader only tells us where the duplicate is).
fn duplicated_key_name(source: &str, line: usize) -> String {
    let text = source.lines().nth(line - 1).unwrap_or("");
    let text = text.trim_start().trim_start_matches("- ");
    let key = text.split(':').next().unwrap_or("").trim();
    key.trim_matches(|c| c == '\'' || c == '"').to_string()
}

fn convert(y: &MarkedYaml<'_>, path: &str, diag: &mut Diag) -> Node {
    let line = y.span.start.line().max(1);
    let value = match &y.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Tagged(_, inner) => return convert(inner, path, diag),
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, &index_path(path, i), diag))
                .collect(),
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::new();
            for (k, v) in map {
                let key_line = k.span.start.line().max(1);
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
                    _ => {
                        diag.err(key_line, path, "mapping keys must be plain strings");
                        continue;
                    }
                };
                let value = convert(v, &key_path(path, &key), diag);
                entries.push(Entry {
                    key,
                    line: key_line,
                    value,
                });
            }
            Value::Map(entries)
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            diag.err(line, path, "value could not be read (bad tag or alias)");
            Value::Null
        }
    };
    Node { line, value }
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

/// `parent.key`, or just `key` at the top level.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

impl Node {
    /// The kind of value, as a user would call it in an error message.
    pub(crate) fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    fn wrong_type(&self, diag: &mut Diag, path: &str, expected: &str) {
        diag.err(
            self.line,
            path,
            format!("expected {expected}, found {}", self.kind()),
        );
    }

    /// A string; numbers are accepted as their text because YAML turns `15` into a number.
    pub(crate) fn string(&self, diag: &mut Diag, path: &str) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            _ => {
                self.wrong_type(diag, path, "a string");
                None
            }
        }
    }

    /// Any scalar as text; booleans become `on`/`off` (what Postgres and most tools accept).
    pub(crate) fn scalar_text(&self, diag: &mut Diag, path: &str) -> Option<String> {
        match &self.value {
            Value::Bool(b) => Some(if *b { "on" } else { "off" }.to_string()),
            _ => self.string(diag, path),
        }
    }

    pub(crate) fn bool(&self, diag: &mut Diag, path: &str) -> Option<bool> {
        match self.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(diag, path, "true or false");
                None
            }
        }
    }

    /// An integer that fits `T`; range errors say which range.
    pub(crate) fn int<T>(&self, diag: &mut Diag, path: &str) -> Option<T>
    where
        T: TryFrom<i64> + num_bounds::Bounds,
    {
        match self.value {
            Value::Int(i) => match T::try_from(i) {
                Ok(v) => Some(v),
                Err(_) => {
                    diag.err(
                        self.line,
                        path,
                        format!(
                            "{i} is out of range (must be {} to {})",
                            T::MIN_TEXT,
                            T::MAX_TEXT
                        ),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(diag, path, "an integer");
                None
            }
        }
    }

    pub(crate) fn float(&self, diag: &mut Diag, path: &str) -> Option<f64> {
        match self.value {
            Value::Float(f) => Some(f),
            Value::Int(i) => Some(i as f64),
            _ => {
                self.wrong_type(diag, path, "a number");
                None
            }
        }
    }

    /// A list; an empty value (`key:`) counts as an empty list.
    pub(crate) fn seq(&self, diag: &mut Diag, path: &str) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            Value::Null => Some(&[]),
            _ => {
                self.wrong_type(diag, path, "a list");
                None
            }
        }
    }

    /// A mapping; an empty value (`key:`) counts as an empty mapping.
    pub(crate) fn map(&self, diag: &mut Diag, path: &str) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            Value::Null => Some(&[]),
            _ => {
                self.wrong_type(diag, path, "a mapping");
                None
            }
        }
    }

    /// The entries of a mapping as fields carrying their full paths.
    pub(crate) fn fields(&self, diag: &mut Diag, path: &str) -> Vec<Field<'_>> {
        self.map(diag, path)
            .unwrap_or(&[])
            .iter()
            .map(|e| Field {
                key: &e.key,
                line: e.line,
                path: key_path(path, &e.key),
                value: &e.value,
            })
            .collect()
    }

    /// A list of strings.
    pub(crate) fn string_list(&self, diag: &mut Diag, path: &str) -> Vec<String> {
        let items = self.seq(diag, path).unwrap_or(&[]);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.string(diag, &index_path(path, i)))
            .collect()
    }

    /// A mapping of names to scalar values (labels, tags, settings).
    pub(crate) fn string_map(&self, diag: &mut Diag, path: &str) -> BTreeMap<String, String> {
        let entries = self.map(diag, path).unwrap_or(&[]);
        entries
            .iter()
            .filter_map(|e| {
                let v = e.value.scalar_text(diag, &key_path(path, &e.key))?;
                Some((e.key.clone(), v))
            })
            .collect()
    }
}

/// The integer ranges named in "out of range" messages.
pub(crate) mod num_bounds {
    pub(crate) trait Bounds {
        const MIN_TEXT: &'static str;
        const MAX_TEXT: &'static str;
    }
    impl Bounds for u16 {
        const MIN_TEXT: &'static str = "0";
        const MAX_TEXT: &'static str = "65535";
    }
    impl Bounds for i32 {
        const MIN_TEXT: &'static str = "-2147483648";
        const MAX_TEXT: &'static str = "2147483647";
    }
    impl Bounds for u32 {
        const MIN_TEXT: &'static str = "0";
        const MAX_TEXT: &'static str = "4294967295";
    }
}
