//! Desired-state resources: the typed, idempotent items the controller's planner renders and an
//! agent applies in order (check, diff, apply only if needed).
//!
//! One struct per kind, wrapped by the closed [`Resource`] enum. `Debug` is derived everywhere:
//! fields that may carry secrets use [`Secret`], [`Content`] or [`SqlText`], which never print
//! what they hold. Adding a kind is described in `docs/specs/resource.md` ("Adding a resource kind").
//!
//! The agent holds no cluster knowledge: every file's content, every SQL statement and every unit
//! file is fully rendered by the controller before it reaches a [`ResourceSpec`].

pub use crate::secret::{Content, Secret, SqlText};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Packages(Packages),
    File(File),
    FileIfAbsent(FileIfAbsent),
    FileLine(FileLine),
    Directory(Directory),
    Permissions(Permissions),
    Group(Group),
    User(User),
    Service(Service),
    Command(Command),
    Sql(Sql),
    Hook(Hook),
}

impl Resource {
    /// Short lowercase name of the kind, for ids, logs and progress output ("file", "service", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Resource::Packages(_) => "packages",
            Resource::File(_) => "file",
            Resource::FileIfAbsent(_) => "file_if_absent",
            Resource::FileLine(_) => "file_line",
            Resource::Directory(_) => "directory",
            Resource::Permissions(_) => "permissions",
            Resource::Group(_) => "group",
            Resource::User(_) => "user",
            Resource::Service(_) => "service",
            Resource::Command(_) => "command",
            Resource::Sql(_) => "sql",
            Resource::Hook(_) => "hook",
        }
    }
}

/// apt packages that must be installed (state present: never upgrades, never removes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packages {
    pub names: Vec<String>,
}

/// A regular file with exact content, owner, group and mode; written atomically (temp file + rename).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub content: Content,
    pub owner: String,
    pub group: String,
    pub mode: u32,
    /// The diff is masked (byte counts only): the content is secret.
    pub secret: bool,
}

/// A file created once with `content` if nothing exists at `path`, never modified afterwards
/// (e.g. `9999-override.conf`, which operators own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIfAbsent {
    pub path: String,
    pub content: Content,
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

/// An existing regular file that must contain `line` exactly (a whole line); appended if missing.
/// The rest of the file, its owner and its mode are left alone; a symlink at `path` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLine {
    pub path: String,
    /// One line, without its newline.
    pub line: String,
}

/// A directory (created with its parents) whose leaf has this owner, group and mode.
/// A symlink at `path` is refused: the agent never chowns through a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub path: String,
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

/// The owner, group and mode of an existing regular file or directory, which something else
/// created (e.g. a key the agent generated). A symlink at `path` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub path: String,
    pub owner: String,
    pub group: String,
    pub mode: u32,
}

/// A local group that must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Only matters at creation.
    pub system: bool,
}

/// A local user that must exist with this primary group, home and shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub group: String,
    pub home: String,
    pub shell: String,
    /// Only matters at creation.
    pub system: bool,
}

/// A systemd unit's desired state.
///
/// `reload_on`/`restart_on`: ids of resources EARLIER in the same batch whose change triggers a
/// reload / restart (restart wins). `daemon-reload` is run first if any unit file changed (the
/// agent detects changes to files under /etc/systemd/system or /lib/systemd/system in the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub unit: String,
    pub enabled: bool,
    pub running: bool,
    pub reload_on: Vec<String>,
    pub restart_on: Vec<String>,
}

/// A guarded command: runs `argv` only if the `creates` path does not exist and/or the `unless`
/// argv exits non-zero; without guards it runs on every apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    pub creates: Option<String>,
    pub unless: Option<Vec<String>>,
    /// Run as this user (its uid, gid, groups, HOME, USER and LOGNAME); None: root.
    pub run_as: Option<String>,
    /// Extra environment, passed through the process environment; values are never logged.
    pub env: Vec<EnvVar>,
    /// The command's output is never included in messages either.
    pub secret_env: bool,
    /// Killed (with its process group) after this long; None: the agent's default for commands.
    pub timeout_secs: Option<u32>,
    /// Like `unless`, without a process: in state when this read-only SQL succeeds.
    pub unless_sql: Option<SqlGuard>,
}

/// Read-only SQL on the local Postgres (its unix socket, as postgres); a guard that passes
/// when the SQL runs without error (`select 1 / count(*) …` fails on no rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlGuard {
    pub database: String,
    pub port: u16,
    pub sql: String,
}

/// An operator's program (a hook from the cluster directory), shipped whole and run on every
/// apply: written to `path` (root, 0700), then run as root with `env` and killed (with its
/// process group) after `timeout_secs`. Its exit status and the last lines of its output come
/// back in the event's message. `check` never writes or runs it: it always "would run".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub path: String,
    pub content: Content,
    /// Values are never logged.
    pub env: Vec<EnvVar>,
    pub timeout_secs: u32,
}

/// One environment variable of a [`Command`]; its value may be secret and never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: Secret<String>,
}

impl EnvVar {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: Secret::new(value.into()),
        }
    }
}

/// SQL against the local Postgres over the unix socket as `run_as` (default postgres) via psql:
/// `check` is a query returning one boolean; if it returns true the resource is in state, else
/// `apply` runs. Secret text (password verifiers) is masked in diffs, events and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub database: String,
    pub check: SqlText,
    pub apply: SqlText,
    pub run_as: String,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct() {
        let kinds = [
            Resource::Packages(Packages { names: vec![] }),
            Resource::Group(Group {
                name: "postgres".into(),
                system: true,
            }),
            Resource::FileLine(FileLine {
                path: "/x".into(),
                line: "a".into(),
            }),
        ];
        let names: Vec<_> = kinds.iter().map(Resource::kind_name).collect();
        assert_eq!(names, ["packages", "group", "file_line"]);
    }

    #[test]
    fn debug_never_shows_contents_or_secrets() {
        let file = Resource::File(File {
            path: "/x".into(),
            content: Content::from("hunter2"),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o600,
            secret: true,
        });
        let sql = Resource::Sql(Sql {
            database: "postgres".into(),
            check: SqlText::secret("select rolpassword = 'SCRAM-hunter2'"),
            apply: SqlText::secret("alter role x password 'SCRAM-hunter2'"),
            run_as: "postgres".into(),
            port: 5432,
        });
        let command = Resource::Command(Command {
            argv: vec!["true".into()],
            creates: None,
            unless: None,
            run_as: None,
            env: vec![EnvVar::new("PGPASSWORD", "hunter2")],
            secret_env: true,
            timeout_secs: None,
            unless_sql: None,
        });
        for r in [file, sql, command] {
            let shown = format!("{r:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
