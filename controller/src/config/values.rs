//! What a value may contain when it ends up inside a file or a command line on the hosts
//! (postgresql.conf, pg_hba.conf, the systemd unit, ssh_config, a shell): no value can add a
//! line, a setting or a shell word of its own. Each rule returns what is wrong, for the reader
//! in `vars` to report at the value's line and key path.

/// The first control character of `s` (a newline, a tab, a NUL, DEL, ...), if any.
pub(crate) fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

/// The message for a value holding a control character.
pub(crate) fn control_char_message(s: &str) -> Option<String> {
    control_char(s).map(|c| {
        format!(
            "the value contains the control character {:?}; values are written into files on the \
             hosts, where it would start a line or setting of its own: remove it",
            c
        )
    })
}

/// A Postgres setting name as the configuration file parser reads one: a name, optionally
/// qualified by an extension prefix (`pg_stat_statements.max`).
pub(crate) fn guc_name(name: &str) -> Result<(), String> {
    let part = |p: &str| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let valid = match name.split_once('.') {
        None => part(name),
        Some((prefix, rest)) => part(prefix) && part(rest),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a Postgres setting name: use letters, digits, `_` and `$`, starting \
             with a letter or `_`, with at most one `.` (as in `pg_stat_statements.max`)"
        ))
    }
}

/// A path that is absolute and clean: it reaches postgresql.conf, a systemd unit and shell
/// command lines as it is, so it holds only characters none of them treats specially.
pub(crate) fn clean_absolute_path(path: &str) -> Result<(), String> {
    let hint = "use an absolute path such as /opt/postgres/data";
    if !path.starts_with('/') {
        return Err(format!("`{path}` must be an absolute path; {hint}"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.' | '+')))
    {
        return Err(format!(
            "{path:?} contains {c:?}; a path tpa writes into files and commands may hold only \
             letters, digits and `/ _ - . +` (no spaces, quotes or shell characters); {hint}"
        ));
    }
    let components: Vec<&str> = path[1..].split('/').collect();
    if path == "/" || components.iter().any(|c| c.is_empty()) {
        return Err(format!(
            "`{path}` is not a clean path (empty component or trailing `/`); {hint}"
        ));
    }
    if components.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!(
            "`{path}` contains `.` or `..`; write the directory it means; {hint}"
        ));
    }
    Ok(())
}

/// A login name as POSIX and Debian's adduser accept it: portable characters, not starting
/// with `-`, at most 32 characters. It reaches ssh_config and sudo/ssh command lines.
pub(crate) fn posix_user_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = name.len() <= 32
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a user name: use at most 32 letters, digits, `_`, `-` and `.`, \
             starting with a letter or `_` (e.g. root, admin)"
        ))
    }
}

/// A library name for shared_preload_libraries: the list is comma-separated inside one quoted
/// value, so a name holds no comma, space, quote or path.
pub(crate) fn library_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an extension name: use letters, digits, `_`, `-` and `.` (e.g. \
             pg_stat_statements, auto_explain)"
        ))
    }
}

/// A locale name (`en_US.UTF-8`, `C.UTF-8`, `de_DE@euro`), passed to initdb and locale-gen.
pub(crate) fn locale(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a locale name such as en_US.UTF-8 or C.UTF-8"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_names_follow_the_postgres_grammar() {
        for ok in [
            "work_mem",
            "pg_stat_statements.max",
            "_x",
            "a$b",
            "Log_Line_Prefix",
        ] {
            assert_eq!(guc_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "work mem",
            "a.b.c",
            ".a",
            "a.",
            "x = 1\nlisten_addresses",
            "x=1",
            "a'b",
            "wörk",
        ] {
            assert!(guc_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_directories_are_clean_absolute_paths() {
        for ok in [
            "/opt/postgres/data",
            "/srv/pg-15/data_1",
            "/var/lib/postgresql/15/main",
        ] {
            assert_eq!(clean_absolute_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "relative/data",
            "/",
            "/opt/../etc",
            "/opt/./data",
            "/opt//data",
            "/opt/data/",
            "/opt/my data",
            "/opt/data'; rm -rf /; '",
            "/opt/$HOME",
            "/opt/%h",
            "/opt/data\nExecStartPre=/bin/sh",
            "/opt/`id`",
            "/opt/da\"ta",
        ] {
            assert!(clean_absolute_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_names_are_posix_names() {
        for ok in ["root", "admin", "_tpa", "deploy-user", "a.b"] {
            assert_eq!(posix_user_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "-oProxyCommand=sh",
            "root\n    ProxyCommand sh",
            "ro ot",
            "root;id",
            "1root",
            long.as_str(),
        ] {
            assert!(posix_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn library_names_and_locales_hold_no_separators() {
        assert_eq!(library_name("pg_stat_statements"), Ok(()));
        assert_eq!(library_name("postgis-3"), Ok(()));
        for bad in ["a,b", "a b", "a'b", "$libdir/x", "", "a\n"] {
            assert!(library_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(locale("en_US.UTF-8"), Ok(()));
        assert_eq!(locale("de_DE@euro"), Ok(()));
        for bad in ["", "en US", "C;id", "en_US\n"] {
            assert!(locale(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_found_anywhere() {
        assert_eq!(control_char("plain value, with 'quotes'"), None);
        for bad in ["a\nb", "a\rb", "a\tb", "a\0b", "a\u{7f}b", "a\u{85}b"] {
            assert!(control_char(bad).is_some(), "{bad:?}");
        }
    }
}
