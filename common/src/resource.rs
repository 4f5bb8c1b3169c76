//! Desired-state resources: the typed, idempotent items the controller's planner renders and an
//! agent applies in order (check, diff, apply only if needed).
//!
//! The agent holds no cluster knowledge: every file's content, every SQL statement and every unit
//! file is fully rendered by the controller before it reaches a [`ResourceSpec`].

/// One desired-state item.
///
/// `id` is unique within an Apply batch, e.g. `"file:/opt/postgres/data/conf.d/0000-tpa.conf"`;
/// events and `Service::restart_on`/`reload_on` refer to resources by this id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    /// Unique id within the batch; never contains secrets.
    pub id: String,
    /// What the resource is and its desired state.
    pub kind: Resource,
}

/// The closed set of resource kinds an agent knows how to check and apply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resource {
    /// apt packages that must be installed (state present: never upgrades, never removes).
    Packages { names: Vec<String> },
    /// A regular file with exact content, owner, group and mode; written atomically (temp file + rename).
    /// `secret: true` => the diff is masked (no content shown) and content never logged.
    File {
        path: String,
        content: Vec<u8>,
        owner: String,
        group: String,
        mode: u32,
        secret: bool,
    },
    /// A file created once with `content` if absent, never modified afterwards (e.g. 9999-override.conf).
    FileIfAbsent {
        path: String,
        content: Vec<u8>,
        owner: String,
        group: String,
        mode: u32,
    },
    /// A directory (created with its parents) whose leaf has this owner, group and mode.
    Directory {
        path: String,
        owner: String,
        group: String,
        mode: u32,
    },
    /// A local group that must exist.
    Group { name: String, system: bool },
    /// A local user that must exist with this primary group, home and shell.
    User {
        name: String,
        group: String,
        home: String,
        shell: String,
        system: bool,
    },
    /// A systemd unit's desired state. `reload_on`/`restart_on`: ids of resources EARLIER in the same batch whose
    /// change triggers a reload / restart (restart wins). `daemon-reload` is run first if any unit file changed
    /// (the agent detects changes to files under /etc/systemd/system or /lib/systemd/system in the batch).
    Service {
        unit: String,
        enabled: bool,
        running: bool,
        reload_on: Vec<String>,
        restart_on: Vec<String>,
    },
    /// A guarded command: runs `argv` only if `creates` path does not exist and/or `unless` argv exits non-zero.
    /// `run_as`: optional user. `env`: extra environment (values may be secret: never logged).
    /// `secret_env: true` => the command's output is never included in messages either.
    Command {
        argv: Vec<String>,
        creates: Option<String>,
        unless: Option<Vec<String>>,
        run_as: Option<String>,
        env: Vec<(String, String)>,
        secret_env: bool,
    },
    /// SQL against the local Postgres over the unix socket as `run_as` (default postgres) via psql:
    /// `check` is a query returning one boolean; if it returns true the resource is in state, else `apply` runs.
    /// `secret: true` => the SQL text is masked in diffs/events (it carries password verifiers).
    Sql {
        database: String,
        check: String,
        apply: String,
        run_as: String,
        port: u16,
        secret: bool,
    },
}

/// Hand-written so that file contents, secret SQL and secret environment values never reach a
/// log line through `{:?}`.
impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Packages { names } => {
                f.debug_struct("Packages").field("names", names).finish()
            }
            Resource::File {
                path,
                content,
                owner,
                group,
                mode,
                secret,
            } => f
                .debug_struct("File")
                .field("path", path)
                .field("content_bytes", &content.len())
                .field("owner", owner)
                .field("group", group)
                .field("mode", &format_args!("{mode:o}"))
                .field("secret", secret)
                .finish(),
            Resource::FileIfAbsent {
                path,
                content,
                owner,
                group,
                mode,
            } => f
                .debug_struct("FileIfAbsent")
                .field("path", path)
                .field("content_bytes", &content.len())
                .field("owner", owner)
                .field("group", group)
                .field("mode", &format_args!("{mode:o}"))
                .finish(),
            Resource::Directory {
                path,
                owner,
                group,
                mode,
            } => f
                .debug_struct("Directory")
                .field("path", path)
                .field("owner", owner)
                .field("group", group)
                .field("mode", &format_args!("{mode:o}"))
                .finish(),
            Resource::Group { name, system } => f
                .debug_struct("Group")
                .field("name", name)
                .field("system", system)
                .finish(),
            Resource::User {
                name,
                group,
                home,
                shell,
                system,
            } => f
                .debug_struct("User")
                .field("name", name)
                .field("group", group)
                .field("home", home)
                .field("shell", shell)
                .field("system", system)
                .finish(),
            Resource::Service {
                unit,
                enabled,
                running,
                reload_on,
                restart_on,
            } => f
                .debug_struct("Service")
                .field("unit", unit)
                .field("enabled", enabled)
                .field("running", running)
                .field("reload_on", reload_on)
                .field("restart_on", restart_on)
                .finish(),
            Resource::Command {
                argv,
                creates,
                unless,
                run_as,
                env,
                secret_env,
            } => {
                let env: Vec<String> = env
                    .iter()
                    .map(|(k, v)| {
                        if *secret_env {
                            format!("{k}=<redacted>")
                        } else {
                            format!("{k}={v}")
                        }
                    })
                    .collect();
                f.debug_struct("Command")
                    .field("argv", argv)
                    .field("creates", creates)
                    .field("unless", unless)
                    .field("run_as", run_as)
                    .field("env", &env)
                    .finish()
            }
            Resource::Sql {
                database,
                check,
                apply,
                run_as,
                port,
                secret,
            } => {
                let hide = |s: &String| {
                    if *secret {
                        "<redacted>".to_string()
                    } else {
                        s.clone()
                    }
                };
                f.debug_struct("Sql")
                    .field("database", database)
                    .field("check", &hide(check))
                    .field("apply", &hide(apply))
                    .field("run_as", run_as)
                    .field("port", port)
                    .finish()
            }
        }
    }
}

impl Resource {
    /// Short lowercase name of the kind, for logs and progress output ("file", "service", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Resource::Packages { .. } => "packages",
            Resource::File { .. } => "file",
            Resource::FileIfAbsent { .. } => "file_if_absent",
            Resource::Directory { .. } => "directory",
            Resource::Group { .. } => "group",
            Resource::User { .. } => "user",
            Resource::Service { .. } => "service",
            Resource::Command { .. } => "command",
            Resource::Sql { .. } => "sql",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct() {
        let kinds = [
            Resource::Packages { names: vec![] },
            Resource::Group {
                name: "postgres".into(),
                system: true,
            },
            Resource::Directory {
                path: "/x".into(),
                owner: "root".into(),
                group: "root".into(),
                mode: 0o755,
            },
        ];
        let names: Vec<_> = kinds.iter().map(Resource::kind_name).collect();
        assert_eq!(names, ["packages", "group", "directory"]);
    }

    #[test]
    fn debug_never_shows_contents_or_secrets() {
        let file = Resource::File {
            path: "/x".into(),
            content: b"hunter2".to_vec(),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o600,
            secret: true,
        };
        let sql = Resource::Sql {
            database: "postgres".into(),
            check: "select false".into(),
            apply: "alter role x password 'SCRAM-hunter2'".into(),
            run_as: "postgres".into(),
            port: 5432,
            secret: true,
        };
        let command = Resource::Command {
            argv: vec!["true".into()],
            creates: None,
            unless: None,
            run_as: None,
            env: vec![("PGPASSWORD".into(), "hunter2".into())],
            secret_env: true,
        };
        for r in [file, sql, command] {
            assert!(!format!("{r:?}").contains("hunter2"), "{r:?}");
        }
    }
}
