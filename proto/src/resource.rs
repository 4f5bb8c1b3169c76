//! Conversions between `pb::ResourceSpec` and [`tpa_common::resource::ResourceSpec`]: one
//! `TryFrom`/`From` pair per resource kind, and the closed dispatch over the `kind` oneof.

use tpa_common::resource::{
    Command, Content, Directory, EnvVar, File, FileIfAbsent, FileLine, Group, Hook, Packages,
    Permissions, Resource, ResourceSpec, Secret, Service, Sql, SqlGuard, SqlText, User,
};

use crate::error::{ConversionError, ResourceConversionError};
use crate::pb;
use crate::pb::resource_spec::Kind;

// === impl ResourceSpec ===

impl TryFrom<pb::ResourceSpec> for ResourceSpec {
    type Error = ResourceConversionError;

    fn try_from(spec: pb::ResourceSpec) -> Result<Self, Self::Error> {
        let kind = match spec.kind {
            Some(kind) => Resource::try_from(kind).map_err(|e| e.in_resource(&spec.id))?,
            None => {
                return Err(ConversionError::MissingField {
                    message: "ResourceSpec",
                    field: "kind",
                }
                .in_resource(&spec.id));
            }
        };
        Ok(ResourceSpec { id: spec.id, kind })
    }
}

impl From<ResourceSpec> for pb::ResourceSpec {
    fn from(spec: ResourceSpec) -> Self {
        pb::ResourceSpec {
            id: spec.id,
            kind: Some(spec.kind.into()),
        }
    }
}

// === impl Resource ===

impl TryFrom<Kind> for Resource {
    type Error = ConversionError;

    fn try_from(kind: Kind) -> Result<Self, Self::Error> {
        Ok(match kind {
            Kind::Packages(r) => Resource::Packages(r.into()),
            Kind::File(r) => Resource::File(r.into()),
            Kind::FileIfAbsent(r) => Resource::FileIfAbsent(r.into()),
            Kind::FileLine(r) => Resource::FileLine(r.into()),
            Kind::Directory(r) => Resource::Directory(r.into()),
            Kind::Permissions(r) => Resource::Permissions(r.into()),
            Kind::Group(r) => Resource::Group(r.into()),
            Kind::User(r) => Resource::User(r.into()),
            Kind::Service(r) => Resource::Service(r.into()),
            Kind::Command(r) => Resource::Command(r.try_into()?),
            Kind::Sql(r) => Resource::Sql(r.try_into()?),
            Kind::Hook(r) => Resource::Hook(r.into()),
        })
    }
}

impl From<Resource> for Kind {
    fn from(resource: Resource) -> Self {
        match resource {
            Resource::Packages(r) => Kind::Packages(r.into()),
            Resource::File(r) => Kind::File(r.into()),
            Resource::FileIfAbsent(r) => Kind::FileIfAbsent(r.into()),
            Resource::FileLine(r) => Kind::FileLine(r.into()),
            Resource::Directory(r) => Kind::Directory(r.into()),
            Resource::Permissions(r) => Kind::Permissions(r.into()),
            Resource::Group(r) => Kind::Group(r.into()),
            Resource::User(r) => Kind::User(r.into()),
            Resource::Service(r) => Kind::Service(r.into()),
            Resource::Command(r) => Kind::Command(r.into()),
            Resource::Sql(r) => Kind::Sql(r.into()),
            Resource::Hook(r) => Kind::Hook(r.into()),
        }
    }
}

// === impl Packages ===

impl From<pb::Packages> for Packages {
    fn from(p: pb::Packages) -> Self {
        Packages { names: p.names }
    }
}

impl From<Packages> for pb::Packages {
    fn from(p: Packages) -> Self {
        pb::Packages { names: p.names }
    }
}

// === impl File ===

impl From<pb::File> for File {
    fn from(f: pb::File) -> Self {
        File {
            path: f.path,
            content: Content::new(f.content),
            owner: f.owner,
            group: f.group,
            mode: f.mode,
            secret: f.secret,
        }
    }
}

impl From<File> for pb::File {
    fn from(f: File) -> Self {
        pb::File {
            path: f.path,
            content: f.content.into_bytes(),
            owner: f.owner,
            group: f.group,
            mode: f.mode,
            secret: f.secret,
        }
    }
}

// === impl FileIfAbsent ===

impl From<pb::FileIfAbsent> for FileIfAbsent {
    fn from(f: pb::FileIfAbsent) -> Self {
        FileIfAbsent {
            path: f.path,
            content: Content::new(f.content),
            owner: f.owner,
            group: f.group,
            mode: f.mode,
        }
    }
}

impl From<FileIfAbsent> for pb::FileIfAbsent {
    fn from(f: FileIfAbsent) -> Self {
        pb::FileIfAbsent {
            path: f.path,
            content: f.content.into_bytes(),
            owner: f.owner,
            group: f.group,
            mode: f.mode,
        }
    }
}

// === impl FileLine ===

impl From<pb::FileLine> for FileLine {
    fn from(f: pb::FileLine) -> Self {
        FileLine {
            path: f.path,
            line: f.line,
        }
    }
}

impl From<FileLine> for pb::FileLine {
    fn from(f: FileLine) -> Self {
        pb::FileLine {
            path: f.path,
            line: f.line,
        }
    }
}

// === impl Directory ===

impl From<pb::Directory> for Directory {
    fn from(d: pb::Directory) -> Self {
        Directory {
            path: d.path,
            owner: d.owner,
            group: d.group,
            mode: d.mode,
        }
    }
}

impl From<Directory> for pb::Directory {
    fn from(d: Directory) -> Self {
        pb::Directory {
            path: d.path,
            owner: d.owner,
            group: d.group,
            mode: d.mode,
        }
    }
}

// === impl Permissions ===

impl From<pb::Permissions> for Permissions {
    fn from(p: pb::Permissions) -> Self {
        Permissions {
            path: p.path,
            owner: p.owner,
            group: p.group,
            mode: p.mode,
        }
    }
}

impl From<Permissions> for pb::Permissions {
    fn from(p: Permissions) -> Self {
        pb::Permissions {
            path: p.path,
            owner: p.owner,
            group: p.group,
            mode: p.mode,
        }
    }
}

// === impl Group ===

impl From<pb::Group> for Group {
    fn from(g: pb::Group) -> Self {
        Group {
            name: g.name,
            system: g.system,
        }
    }
}

impl From<Group> for pb::Group {
    fn from(g: Group) -> Self {
        pb::Group {
            name: g.name,
            system: g.system,
        }
    }
}

// === impl User ===

impl From<pb::User> for User {
    fn from(u: pb::User) -> Self {
        User {
            name: u.name,
            group: u.group,
            home: u.home,
            shell: u.shell,
            system: u.system,
        }
    }
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            name: u.name,
            group: u.group,
            home: u.home,
            shell: u.shell,
            system: u.system,
        }
    }
}

// === impl Service ===

impl From<pb::Service> for Service {
    fn from(s: pb::Service) -> Self {
        Service {
            unit: s.unit,
            enabled: s.enabled,
            running: s.running,
            reload_on: s.reload_on,
            restart_on: s.restart_on,
        }
    }
}

impl From<Service> for pb::Service {
    fn from(s: Service) -> Self {
        pb::Service {
            unit: s.unit,
            enabled: s.enabled,
            running: s.running,
            reload_on: s.reload_on,
            restart_on: s.restart_on,
        }
    }
}

// === impl Command ===

impl TryFrom<pb::Command> for Command {
    type Error = ConversionError;

    fn try_from(c: pb::Command) -> Result<Self, Self::Error> {
        let unless_sql = match c.unless_sql {
            Some(g) => Some(SqlGuard {
                port: port("SqlGuard", g.port)?,
                database: g.database,
                sql: g.sql,
            }),
            None => None,
        };
        Ok(Command {
            argv: c.argv,
            creates: c.creates,
            unless: c.unless.map(|a| a.args),
            run_as: c.run_as,
            env: c.env.into_iter().map(Into::into).collect(),
            secret_env: c.secret_env,
            timeout_secs: c.timeout_secs,
            unless_sql,
        })
    }
}

impl From<Command> for pb::Command {
    fn from(c: Command) -> Self {
        pb::Command {
            argv: c.argv,
            creates: c.creates,
            unless: c.unless.map(|args| pb::Argv { args }),
            run_as: c.run_as,
            env: c.env.into_iter().map(Into::into).collect(),
            secret_env: c.secret_env,
            timeout_secs: c.timeout_secs,
            unless_sql: c.unless_sql.map(|g| pb::SqlGuard {
                database: g.database,
                port: g.port.into(),
                sql: g.sql,
            }),
        }
    }
}

// === impl Hook ===

impl From<pb::Hook> for Hook {
    fn from(h: pb::Hook) -> Self {
        Hook {
            path: h.path,
            content: Content::new(h.content),
            env: h.env.into_iter().map(Into::into).collect(),
            timeout_secs: h.timeout_secs,
        }
    }
}

impl From<Hook> for pb::Hook {
    fn from(h: Hook) -> Self {
        pb::Hook {
            path: h.path,
            content: h.content.into_bytes(),
            env: h.env.into_iter().map(Into::into).collect(),
            timeout_secs: h.timeout_secs,
        }
    }
}

// === impl EnvVar ===

impl From<pb::EnvVar> for EnvVar {
    fn from(e: pb::EnvVar) -> Self {
        EnvVar {
            name: e.name,
            value: Secret::new(e.value),
        }
    }
}

impl From<EnvVar> for pb::EnvVar {
    fn from(e: EnvVar) -> Self {
        pb::EnvVar {
            name: e.name,
            value: e.value.into_inner(),
        }
    }
}

// === impl Sql ===

impl TryFrom<pb::Sql> for Sql {
    type Error = ConversionError;

    fn try_from(s: pb::Sql) -> Result<Self, Self::Error> {
        let text = |text: Option<pb::SqlText>, field| {
            text.map(SqlText::from)
                .ok_or(ConversionError::MissingField {
                    message: "Sql",
                    field,
                })
        };
        Ok(Sql {
            port: port("Sql", s.port)?,
            check: text(s.check, "check")?,
            apply: text(s.apply, "apply")?,
            database: s.database,
            run_as: s.run_as,
        })
    }
}

impl From<Sql> for pb::Sql {
    fn from(s: Sql) -> Self {
        pb::Sql {
            database: s.database,
            check: Some(s.check.into()),
            apply: Some(s.apply.into()),
            run_as: s.run_as,
            port: s.port.into(),
        }
    }
}

/// A TCP port number from a `uint32` field.
pub(crate) fn port(message: &'static str, value: u32) -> Result<u16, ConversionError> {
    u16::try_from(value).map_err(|_| ConversionError::OutOfRange {
        message,
        field: "port",
        value: value.into(),
    })
}

// === impl SqlText ===

impl From<pb::SqlText> for SqlText {
    fn from(t: pb::SqlText) -> Self {
        SqlText::new(t.text, t.secret)
    }
}

impl From<SqlText> for pb::SqlText {
    fn from(t: SqlText) -> Self {
        match t {
            SqlText::Plain(text) => pb::SqlText {
                text,
                secret: false,
            },
            SqlText::Secret(text) => pb::SqlText {
                text: text.into_inner(),
                secret: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<ResourceSpec> {
        let spec = |id: &str, kind| ResourceSpec {
            id: id.into(),
            kind,
        };
        vec![
            spec(
                "packages",
                Resource::Packages(Packages {
                    names: vec!["postgresql-15".into()],
                }),
            ),
            spec(
                "file",
                Resource::File(File {
                    path: "/etc/x".into(),
                    content: Content::from("x = 1\n"),
                    owner: "root".into(),
                    group: "root".into(),
                    mode: 0o644,
                    secret: true,
                }),
            ),
            spec(
                "file_if_absent",
                Resource::FileIfAbsent(FileIfAbsent {
                    path: "/etc/y".into(),
                    content: Content::default(),
                    owner: "postgres".into(),
                    group: "postgres".into(),
                    mode: 0o600,
                }),
            ),
            spec(
                "file_line",
                Resource::FileLine(FileLine {
                    path: "/d/postgresql.conf".into(),
                    line: "include_dir = 'conf.d'".into(),
                }),
            ),
            spec(
                "directory",
                Resource::Directory(Directory {
                    path: "/d".into(),
                    owner: "a".into(),
                    group: "b".into(),
                    mode: 0o700,
                }),
            ),
            spec(
                "permissions",
                Resource::Permissions(Permissions {
                    path: "/etc/tpa/x.key".into(),
                    owner: "postgres".into(),
                    group: "postgres".into(),
                    mode: 0o600,
                }),
            ),
            spec(
                "group",
                Resource::Group(Group {
                    name: "postgres".into(),
                    system: true,
                }),
            ),
            spec(
                "user",
                Resource::User(User {
                    name: "postgres".into(),
                    group: "postgres".into(),
                    home: "/var/lib/postgresql".into(),
                    shell: "/bin/bash".into(),
                    system: true,
                }),
            ),
            spec(
                "service",
                Resource::Service(Service {
                    unit: "postgres.service".into(),
                    enabled: true,
                    running: false,
                    reload_on: vec!["file".into()],
                    restart_on: vec!["directory".into()],
                }),
            ),
            spec(
                "command-guarded",
                Resource::Command(Command {
                    argv: vec!["initdb".into()],
                    creates: Some("/d/PG_VERSION".into()),
                    unless: Some(vec!["test".into(), "-e".into(), "/x".into()]),
                    run_as: Some("postgres".into()),
                    env: vec![EnvVar::new("PGPASSWORD", "s")],
                    secret_env: true,
                    timeout_secs: Some(60),
                    unless_sql: None,
                }),
            ),
            spec(
                "command-plain",
                Resource::Command(Command {
                    argv: vec!["true".into()],
                    creates: None,
                    unless: None,
                    run_as: None,
                    env: vec![],
                    secret_env: false,
                    timeout_secs: None,
                    unless_sql: None,
                }),
            ),
            spec(
                "hook",
                Resource::Hook(Hook {
                    path: "/etc/tpa/hooks/pre-deploy".into(),
                    content: Content::from("#!/bin/sh\necho hi\n"),
                    env: vec![EnvVar::new("TPA_HOST", "ulb")],
                    timeout_secs: 600,
                }),
            ),
            spec(
                "sql",
                Resource::Sql(Sql {
                    database: "postgres".into(),
                    check: SqlText::plain("SELECT true"),
                    apply: SqlText::secret("ALTER ROLE x PASSWORD 'v'"),
                    run_as: "postgres".into(),
                    port: 5432,
                }),
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let specs = all_kinds();
        // One of each: a kind added without a conversion fails to compile, one left out of this list fails here.
        let kinds: std::collections::BTreeSet<_> =
            specs.iter().map(|s| s.kind.kind_name()).collect();
        assert_eq!(kinds.len(), 12);
        for spec in specs {
            let back = ResourceSpec::try_from(pb::ResourceSpec::from(spec.clone()))
                .expect("converts back");
            assert_eq!(back, spec);
        }
    }

    #[test]
    fn missing_kind_names_the_resource() {
        let err = ResourceSpec::try_from(pb::ResourceSpec {
            id: "file:/x".into(),
            kind: None,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource file:/x: ResourceSpec.kind is missing"
        );
    }

    #[test]
    fn sql_port_out_of_range_or_missing_text_is_refused() {
        let text = Some(pb::SqlText::default());
        let convert = |sql: pb::Sql| {
            ResourceSpec::try_from(pb::ResourceSpec {
                id: "sql:x".into(),
                kind: Some(Kind::Sql(sql)),
            })
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            convert(pb::Sql {
                port: 70000,
                check: text.clone(),
                apply: text.clone(),
                ..Default::default()
            }),
            "resource sql:x: Sql.port = 70000 is out of range"
        );
        assert_eq!(
            convert(pb::Sql {
                check: text,
                ..Default::default()
            }),
            "resource sql:x: Sql.apply is missing"
        );
    }
}
