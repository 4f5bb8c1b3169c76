//! Conversions between `pb::ResourceSpec` and [`tpa_common::resource::ResourceSpec`].

use tpa_common::resource::{Resource, ResourceSpec};

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
            Kind::Packages(p) => Resource::Packages { names: p.names },
            Kind::File(f) => Resource::File {
                path: f.path,
                content: f.content,
                owner: f.owner,
                group: f.group,
                mode: f.mode,
                secret: f.secret,
            },
            Kind::FileIfAbsent(f) => Resource::FileIfAbsent {
                path: f.path,
                content: f.content,
                owner: f.owner,
                group: f.group,
                mode: f.mode,
            },
            Kind::Directory(d) => Resource::Directory {
                path: d.path,
                owner: d.owner,
                group: d.group,
                mode: d.mode,
            },
            Kind::Group(g) => Resource::Group {
                name: g.name,
                system: g.system,
            },
            Kind::User(u) => Resource::User {
                name: u.name,
                group: u.group,
                home: u.home,
                shell: u.shell,
                system: u.system,
            },
            Kind::Service(s) => Resource::Service {
                unit: s.unit,
                enabled: s.enabled,
                running: s.running,
                reload_on: s.reload_on,
                restart_on: s.restart_on,
            },
            Kind::Command(c) => Resource::Command {
                argv: c.argv,
                creates: c.creates,
                unless: c.unless.map(|a| a.args),
                run_as: c.run_as,
                env: c.env.into_iter().map(|e| (e.name, e.value)).collect(),
                secret_env: c.secret_env,
            },
            Kind::Sql(s) => Resource::Sql {
                port: u16::try_from(s.port).map_err(|_| ConversionError::OutOfRange {
                    message: "Sql",
                    field: "port",
                    value: s.port.into(),
                })?,
                database: s.database,
                check: s.check,
                apply: s.apply,
                run_as: s.run_as,
                secret: s.secret,
            },
        })
    }
}

impl From<Resource> for Kind {
    fn from(resource: Resource) -> Self {
        match resource {
            Resource::Packages { names } => Kind::Packages(pb::Packages { names }),
            Resource::File {
                path,
                content,
                owner,
                group,
                mode,
                secret,
            } => Kind::File(pb::File {
                path,
                content,
                owner,
                group,
                mode,
                secret,
            }),
            Resource::FileIfAbsent {
                path,
                content,
                owner,
                group,
                mode,
            } => Kind::FileIfAbsent(pb::FileIfAbsent {
                path,
                content,
                owner,
                group,
                mode,
            }),
            Resource::Directory {
                path,
                owner,
                group,
                mode,
            } => Kind::Directory(pb::Directory {
                path,
                owner,
                group,
                mode,
            }),
            Resource::Group { name, system } => Kind::Group(pb::Group { name, system }),
            Resource::User {
                name,
                group,
                home,
                shell,
                system,
            } => Kind::User(pb::User {
                name,
                group,
                home,
                shell,
                system,
            }),
            Resource::Service {
                unit,
                enabled,
                running,
                reload_on,
                restart_on,
            } => Kind::Service(pb::Service {
                unit,
                enabled,
                running,
                reload_on,
                restart_on,
            }),
            Resource::Command {
                argv,
                creates,
                unless,
                run_as,
                env,
                secret_env,
            } => Kind::Command(pb::Command {
                argv,
                creates,
                unless: unless.map(|args| pb::Argv { args }),
                run_as,
                env: env
                    .into_iter()
                    .map(|(name, value)| pb::EnvVar { name, value })
                    .collect(),
                secret_env,
            }),
            Resource::Sql {
                database,
                check,
                apply,
                run_as,
                port,
                secret,
            } => Kind::Sql(pb::Sql {
                database,
                check,
                apply,
                run_as,
                port: port.into(),
                secret,
            }),
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
                Resource::Packages {
                    names: vec!["postgresql-15".into()],
                },
            ),
            spec(
                "file",
                Resource::File {
                    path: "/etc/x".into(),
                    content: b"x = 1\n".to_vec(),
                    owner: "root".into(),
                    group: "root".into(),
                    mode: 0o644,
                    secret: true,
                },
            ),
            spec(
                "file_if_absent",
                Resource::FileIfAbsent {
                    path: "/etc/y".into(),
                    content: vec![],
                    owner: "postgres".into(),
                    group: "postgres".into(),
                    mode: 0o600,
                },
            ),
            spec(
                "directory",
                Resource::Directory {
                    path: "/d".into(),
                    owner: "a".into(),
                    group: "b".into(),
                    mode: 0o700,
                },
            ),
            spec(
                "group",
                Resource::Group {
                    name: "postgres".into(),
                    system: true,
                },
            ),
            spec(
                "user",
                Resource::User {
                    name: "postgres".into(),
                    group: "postgres".into(),
                    home: "/var/lib/postgresql".into(),
                    shell: "/bin/bash".into(),
                    system: true,
                },
            ),
            spec(
                "service",
                Resource::Service {
                    unit: "postgres.service".into(),
                    enabled: true,
                    running: false,
                    reload_on: vec!["file".into()],
                    restart_on: vec!["directory".into()],
                },
            ),
            spec(
                "command-guarded",
                Resource::Command {
                    argv: vec!["initdb".into()],
                    creates: Some("/d/PG_VERSION".into()),
                    unless: Some(vec!["test".into(), "-e".into(), "/x".into()]),
                    run_as: Some("postgres".into()),
                    env: vec![("PGPASSWORD".into(), "s".into())],
                    secret_env: true,
                },
            ),
            spec(
                "command-plain",
                Resource::Command {
                    argv: vec!["true".into()],
                    creates: None,
                    unless: None,
                    run_as: None,
                    env: vec![],
                    secret_env: false,
                },
            ),
            spec(
                "sql",
                Resource::Sql {
                    database: "postgres".into(),
                    check: "SELECT true".into(),
                    apply: "SELECT 1".into(),
                    run_as: "postgres".into(),
                    port: 5432,
                    secret: false,
                },
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for spec in all_kinds() {
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
    fn sql_port_out_of_range_is_refused() {
        let kind = Kind::Sql(pb::Sql {
            port: 70000,
            ..Default::default()
        });
        let err = ResourceSpec::try_from(pb::ResourceSpec {
            id: "sql:x".into(),
            kind: Some(kind),
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource sql:x: Sql.port = 70000 is out of range"
        );
    }
}
