//! Hand-written `Debug` for the generated messages that carry secrets (env values, join tokens, file content,
//! secret SQL text): printing one of them, e.g. in a tracing field or a test failure, never shows the secret.
//!
//! `tests/bootstrap.rs` lists the same messages in `REDACTED` so prost does not derive `Debug` for them.

use std::fmt;

use crate::pb;

const HIDDEN: &str = "<redacted>";

/// Shows a byte payload as its length only.
struct Len(usize);

impl fmt::Debug for Len {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

// === impl EnvVar ===

impl fmt::Debug for pb::EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("name", &self.name)
            .field("value", &HIDDEN)
            .finish()
    }
}

// === impl ExecRequest ===

impl fmt::Debug for pb::ExecRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("argv", &self.argv)
            .field("env", &self.env)
            .field("run_as", &self.run_as)
            .field("stdin", &Len(self.stdin.len()))
            .field("cwd", &self.cwd)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

// === impl File ===

impl fmt::Debug for pb::File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("content", &Len(self.content.len()))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("secret", &self.secret)
            .finish()
    }
}

// === impl FileIfAbsent ===

impl fmt::Debug for pb::FileIfAbsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileIfAbsent")
            .field("path", &self.path)
            .field("content", &Len(self.content.len()))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

// === impl SqlText ===

impl fmt::Debug for pb::SqlText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: &dyn fmt::Debug = if self.secret { &HIDDEN } else { &self.text };
        f.debug_struct("SqlText")
            .field("text", text)
            .field("secret", &self.secret)
            .finish()
    }
}

// === impl RequestCsrRequest ===

impl fmt::Debug for pb::RequestCsrRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestCsrRequest")
            .field("token", &HIDDEN)
            .finish()
    }
}

// === impl InstallCertificateRequest ===

impl fmt::Debug for pb::InstallCertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallCertificateRequest")
            .field("token", &HIDDEN)
            .field("cert_pem", &self.cert_pem)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let exec = pb::ExecRequest {
            argv: vec!["psql".into()],
            env: vec![pb::EnvVar {
                name: "PGPASSWORD".into(),
                value: "hunter2".into(),
            }],
            stdin: b"hunter2".to_vec(),
            ..Default::default()
        };
        let file = pb::File {
            path: "/etc/x".into(),
            content: b"hunter2".to_vec(),
            mode: 0o600,
            ..Default::default()
        };
        let sql = pb::Sql {
            apply: Some(pb::SqlText {
                text: "ALTER ROLE x PASSWORD 'hunter2'".into(),
                secret: true,
            }),
            ..Default::default()
        };
        let query = pb::QueryRequest {
            sql: Some(pb::SqlText {
                text: "select 'hunter2'".into(),
                secret: true,
            }),
            ..Default::default()
        };
        let token = pb::RequestCsrRequest {
            token: "hunter2".into(),
        };
        let install = pb::InstallCertificateRequest {
            token: "hunter2".into(),
            cert_pem: "PEM".into(),
        };
        let shown = format!("{exec:?} {file:?} {sql:?} {query:?} {token:?} {install:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("PGPASSWORD") && shown.contains("<7 bytes>") && shown.contains("600"),
            "{shown}"
        );
    }

    #[test]
    fn non_secret_sql_is_shown() {
        let sql = pb::Sql {
            check: Some(pb::SqlText {
                text: "SELECT true".into(),
                secret: false,
            }),
            ..Default::default()
        };
        assert!(format!("{sql:?}").contains("SELECT true"));
    }
}
