//! TPA's apt repository variables: `apt_repositories` (name → key and source lines) and
//! `apt_repository_list` (which of them a host uses; TPA's default `[PGDG]`).
//!
//! Every repository is signed: tpa writes its key to a keyring file of its own and pins the
//! source to it with `signed-by`, so a key added for one repository cannot sign another.

use std::collections::BTreeMap;

use super::error::Diag;
use super::values;
use super::vars::checked;
use super::yaml::{Field, Node, index_path, key_path};

/// The repository tpa knows without a definition: PostgreSQL's own (apt.postgresql.org).
pub const PGDG: &str = "PGDG";

/// The only template TPA's repository lines use that tpa expands: the host's Debian codename.
pub const RELEASE_TEMPLATE: &str = "{{ansible_distribution_release}}";

/// One `apt_repositories` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptRepository {
    /// `repo`: one or more `deb`/`deb-src` lines, [`RELEASE_TEMPLATE`] not yet expanded.
    pub lines: Vec<String>,
    /// `key_url`: where the controller fetches the signing key (http or https).
    pub key_url: String,
    /// `key_id`: the key's fingerprint, or its last 16 or 8 hex digits, upper case.
    pub key_id: String,
}

/// `apt_repositories`: name → repository. Names become file names on the hosts, so they are
/// checked; lines may not carry options tpa sets itself (`signed-by`, `trusted`).
pub(crate) fn repositories(n: &Node, p: &str, d: &mut Diag) -> BTreeMap<String, AptRepository> {
    let mut out = BTreeMap::new();
    for e in n.map(d, p).unwrap_or(&[]) {
        let path = key_path(p, &e.key);
        if let Err(message) = repository_name(&e.key) {
            d.err(
                e.line,
                &key_path(p, &e.key.escape_debug().to_string()),
                message,
            );
            continue;
        }
        if let Some(repo) = repository(&e.value, &path, d) {
            out.insert(e.key.clone(), repo);
        }
    }
    out
}

fn repository(n: &Node, p: &str, d: &mut Diag) -> Option<AptRepository> {
    let mut lines = None;
    let mut key_url = None;
    let mut key_id = None;
    for f in n.fields(d, p) {
        match f.key {
            "repo" => lines = source_lines(&f, d),
            "key_url" => key_url = checked(f.value, &f.path, d, url),
            "key_id" => key_id = checked(f.value, &f.path, d, fingerprint_suffix),
            other => d.err(
                f.line,
                &f.path,
                format!(
                    "unknown key `{other}` in an apt repository; tpa reads `repo`, `key_url` and \
                     `key_id`"
                ),
            ),
        }
    }
    let mut missing = Vec::new();
    for (key, present) in [
        ("repo", lines.is_some()),
        ("key_url", key_url.is_some()),
        ("key_id", key_id.is_some()),
    ] {
        if !present {
            missing.push(key);
        }
    }
    if !missing.is_empty() {
        d.err(
            n.line,
            p,
            format!(
                "missing or invalid {}: tpa adds only signed repositories, whose key it fetches \
                 from `key_url` and checks against `key_id` (its fingerprint)",
                missing.join(", ")
            ),
        );
        return None;
    }
    Some(AptRepository {
        lines: lines?,
        key_url: key_url?,
        key_id: normal_key_id(&key_id?),
    })
}

/// `repo`: one line, several lines in one string (TPA's folded `>-` style writes one), or a
/// list of lines.
fn source_lines(f: &Field<'_>, d: &mut Diag) -> Option<Vec<String>> {
    let texts: Vec<(String, String, usize)> = match &f.value.value {
        super::yaml::Value::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = index_path(&f.path, i);
                Some((item.string(d, &path)?, path, item.line))
            })
            .collect(),
        _ => {
            let text = f.value.string(d, &f.path)?;
            text.lines()
                .map(|l| (l.to_string(), f.path.clone(), f.line))
                .collect()
        }
    };
    let mut lines = Vec::new();
    for (text, path, line) in texts {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match source_line(text) {
            Ok(()) => lines.push(text.to_string()),
            Err(message) => {
                d.err(line, &path, message);
                return None;
            }
        }
    }
    if lines.is_empty() {
        d.err(f.line, &f.path, "no `deb` line");
        return None;
    }
    Some(lines)
}

/// A repository name: it names `/etc/apt/sources.list.d/tpa-<name>.list` and its keyring.
pub fn repository_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a repository name tpa accepts: letters, digits, `-`, `_` and `.`, \
             starting with a letter or digit, at most 64 characters (it names a file on the hosts)"
        ))
    }
}

/// One `deb`/`deb-src` line: `deb [options] URI suite [components]`, with an http(s) or file
/// URI, free of control characters; `signed-by` and `trusted` are tpa's to set.
fn source_line(line: &str) -> Result<(), String> {
    if let Some(message) = values::control_char_message(line) {
        return Err(message);
    }
    let rest = line
        .strip_prefix("deb ")
        .or_else(|| line.strip_prefix("deb-src "))
        .ok_or_else(|| {
            format!("`{line}` is not an apt source line: it starts with `deb ` or `deb-src `")
        })?
        .trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(options) => {
            let (options, after) = options
                .split_once(']')
                .ok_or_else(|| format!("`{line}`: the `[` of the options is not closed"))?;
            for option in options.split_whitespace() {
                let name = option.split('=').next().unwrap_or_default();
                if matches!(name, "signed-by" | "trusted") {
                    return Err(format!(
                        "`{line}`: tpa sets `{name}` itself (every repository is pinned to the \
                         key from its key_url); remove the option"
                    ));
                }
            }
            after.trim_start()
        }
        None => rest,
    };
    let mut words = rest.split_whitespace();
    let uri = words.next().unwrap_or_default();
    url(uri).map_err(|e| format!("`{line}`: {e}"))?;
    if words.next().is_none() {
        return Err(format!(
            "`{line}` has no suite after the URI (e.g. `{RELEASE_TEMPLATE}` or `./`)"
        ));
    }
    let templates = rest.matches("{{").count();
    if templates != rest.matches(RELEASE_TEMPLATE).count() {
        return Err(format!(
            "`{line}`: the only template tpa expands is {RELEASE_TEMPLATE}"
        ));
    }
    Ok(())
}

/// An http or https URL with a host, no spaces, quotes or control characters.
fn url(v: &str) -> Result<(), String> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("`{v}` is not an http:// or https:// URL"))
    }
}

/// A key fingerprint or its last 16 or 8 hex digits (spaces between groups allowed, as gpg
/// prints them).
fn fingerprint_suffix(v: &str) -> Result<(), String> {
    let hex: String = v.chars().filter(|c| *c != ' ').collect();
    let ok = matches!(hex.len(), 8 | 16 | 40 | 64) && hex.chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a key id: give the key's fingerprint (40 hex digits; 64 for a v6 key), \
             or its last 16 digits"
        ))
    }
}

/// Spaces removed, upper case: how [`AptRepository::key_id`] is kept.
pub fn normal_key_id(v: &str) -> String {
    v.chars()
        .filter(|c| *c != ' ')
        .collect::<String>()
        .to_ascii_uppercase()
}

/// `apt_repository_list`: every name is [`PGDG`] or defined in `apt_repositories`.
pub(crate) fn check_list(
    fields: &[Field<'_>],
    defined: &BTreeMap<String, AptRepository>,
    d: &mut Diag,
) {
    let Some(list) = fields.iter().find(|f| f.key == "apt_repository_list") else {
        return;
    };
    let Some(items) = list.value.seq(d, &list.path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let path = index_path(&list.path, i);
        let Some(name) = item.string(d, &path) else {
            continue;
        };
        if name != PGDG && !defined.contains_key(&name) {
            let mut known: Vec<&str> = vec![PGDG];
            known.extend(defined.keys().map(String::as_str));
            d.err(
                item.line,
                &path,
                format!(
                    "`{name}` is not a repository tpa knows ({}); define it under \
                     apt_repositories with repo, key_url and key_id",
                    known.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lines_are_checked() {
        assert!(source_line("deb http://x.example/debian bookworm main").is_ok());
        assert!(source_line("deb [arch=amd64] https://x.example/ ./").is_ok());
        assert!(
            source_line("deb https://x.example/ {{ansible_distribution_release}}-pgdg main")
                .is_ok()
        );
        for bad in [
            "deb [signed-by=/etc/k.asc] https://x.example/ ./",
            "deb [trusted=yes] https://x.example/ ./",
            "deb ftp://x.example/ ./",
            "deb https://x.example/",
            "rpm https://x.example/ ./",
            "deb https://x.example/ {{ inventory_hostname }}",
            "deb https://x.example/\"; rm -rf / ./",
            "deb [arch=amd64 https://x.example/ ./",
        ] {
            assert!(source_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_become_file_names_safely() {
        assert!(repository_name("Example_2.x").is_ok());
        for bad in ["", "../etc", "a/b", "-x", "a b", "a\nb", &"x".repeat(65)] {
            assert!(repository_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_ids() {
        assert!(fingerprint_suffix("B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8").is_ok());
        assert!(fingerprint_suffix("7FCC7D46ACCC4CF8").is_ok());
        assert!(fingerprint_suffix("B97B 0AFC AA1A 47F0 44F2  44A0 7FCC 7D46 ACCC 4CF8").is_ok());
        for bad in ["", "xyz", "7FCC7D46ACCC4CF", "0x7FCC7D46"] {
            assert!(fingerprint_suffix(bad).is_err(), "{bad}");
        }
        assert_eq!(normal_key_id("ab cd"), "ABCD");
    }
}
