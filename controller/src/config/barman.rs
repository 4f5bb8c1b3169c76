//! TPA's `barman_*` variables, read on the backed-up instance (cluster_vars overlaid by its
//! vars): the ones tpa honours, with TPA's defaults (except the backup method, see
//! [`BackupMethod`]), and [`REFUSED`], the ones it refuses by name with what to do instead.

use super::error::Diag;
use super::yaml::{Field, Node};

/// `barman_backup_method`. TPA's default is `rsync`; tpa's is `postgres` (pg_basebackup over
/// the TLS-verified replication connection Barman already has for receive-wal): it needs no
/// SSH login into the database host, and a Barman host with only the client tools can take
/// it. `rsync` copies the data directory over SSH as the postgres user (parallel jobs,
/// unchanged files hard-linked from the previous backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMethod {
    Postgres,
    Rsync,
}

impl BackupMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMethod::Postgres => "postgres",
            BackupMethod::Rsync => "rsync",
        }
    }
}

/// `barman_reuse_backup`: how an rsync backup reuses the previous one's unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReuseBackup {
    Off,
    Copy,
    Link,
}

impl ReuseBackup {
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseBackup::Off => "off",
            ReuseBackup::Copy => "copy",
            ReuseBackup::Link => "link",
        }
    }
}

/// The typed `barman_*` variables; `None`: not set (the methods apply the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BarmanVars {
    /// `barman_backup_method`.
    pub backup_method: Option<BackupMethod>,
    /// `barman_reuse_backup` (rsync only).
    pub reuse_backup: Option<ReuseBackup>,
    /// `barman_parallel_jobs`: rsync workers per backup.
    pub parallel_jobs: Option<u32>,
    /// `barman_backup_options`, e.g. `concurrent_backup`.
    pub backup_options: Option<String>,
    /// `barman_network_compression`: rsync's `-z` (rsync only).
    pub network_compression: Option<bool>,
    /// `barman_archiver`: the primary also archives WAL with `barman-wal-archive` over SSH
    /// (`archive_command`), besides receive-wal's streaming.
    pub archiver: Option<bool>,
    /// `barman_compression`: WAL compression (gzip, pygzip or pybzip2).
    pub compression: Option<String>,
    /// `barman_retention_policy`, e.g. `RECOVERY WINDOW OF 4 WEEKS` or `REDUNDANCY 3`.
    pub retention_policy: Option<String>,
    /// `barman_minimum_redundancy`.
    pub minimum_redundancy: Option<u32>,
    /// `barman_last_backup_maximum_age`, e.g. `1 WEEK`.
    pub last_backup_maximum_age: Option<String>,
    /// `barman_backup_interval`: the cron schedule of `barman backup`.
    pub backup_interval: Option<String>,
    /// `barman_immediate_checkpoint`: scheduled backups checkpoint at once.
    pub immediate_checkpoint: Option<bool>,
    /// `barman_basebackup_retry_times`.
    pub basebackup_retry_times: Option<u32>,
    /// `barman_basebackup_retry_sleep` (seconds).
    pub basebackup_retry_sleep: Option<u32>,
    /// `verify_backup_sql`: a query the restore drill runs on the restored server; it passes
    /// when every row's first column is true.
    pub verify_sql: Option<String>,
    /// `verify_backup_database`: where `verify_backup_sql` runs (default `postgres`).
    pub verify_database: Option<String>,
    /// `verify_backup_schedule`: a systemd OnCalendar expression; a timer runs the drill.
    pub verify_schedule: Option<String>,
}

impl BarmanVars {
    pub fn backup_method(&self) -> BackupMethod {
        self.backup_method.unwrap_or(BackupMethod::Postgres)
    }
    /// TPA's: `link` for rsync, `off` otherwise (pg_basebackup cannot reuse a backup).
    pub fn reuse_backup(&self) -> ReuseBackup {
        match self.backup_method() {
            BackupMethod::Rsync => self.reuse_backup.unwrap_or(ReuseBackup::Link),
            BackupMethod::Postgres => ReuseBackup::Off,
        }
    }
    pub fn parallel_jobs(&self) -> u32 {
        self.parallel_jobs.unwrap_or(1)
    }
    pub fn backup_options(&self) -> &str {
        self.backup_options
            .as_deref()
            .unwrap_or("concurrent_backup")
    }
    pub fn network_compression(&self) -> bool {
        self.network_compression.unwrap_or(false)
    }
    pub fn archiver(&self) -> bool {
        self.archiver.unwrap_or(false)
    }
    /// TPA picks the first of pigz/bzip2/gzip found; Debian images have gzip only.
    pub fn compression(&self) -> &str {
        self.compression.as_deref().unwrap_or("gzip")
    }
    pub fn retention_policy(&self) -> &str {
        self.retention_policy
            .as_deref()
            .unwrap_or("RECOVERY WINDOW OF 4 WEEKS")
    }
    /// TPA's default is 3 (and it takes three backups during deploy); tpa takes one, so that
    /// the first deploy stays fast and `barman check` is all OK after it.
    pub fn minimum_redundancy(&self) -> u32 {
        self.minimum_redundancy.unwrap_or(1)
    }
    pub fn last_backup_maximum_age(&self) -> &str {
        self.last_backup_maximum_age.as_deref().unwrap_or("1 WEEK")
    }
    /// TPA's default: Wednesdays and Saturdays at 04:00.
    pub fn backup_interval(&self) -> &str {
        self.backup_interval.as_deref().unwrap_or("0 4 * * wed,sat")
    }
    pub fn immediate_checkpoint(&self) -> bool {
        self.immediate_checkpoint.unwrap_or(false)
    }
    pub fn basebackup_retry_times(&self) -> u32 {
        self.basebackup_retry_times.unwrap_or(3)
    }
    pub fn basebackup_retry_sleep(&self) -> u32 {
        self.basebackup_retry_sleep.unwrap_or(30)
    }
    pub fn verify_database(&self) -> &str {
        self.verify_database.as_deref().unwrap_or("postgres")
    }
}

pub(crate) fn backup_method(n: &Node, p: &str, d: &mut Diag) -> Option<BackupMethod> {
    match n.string(d, p)?.as_str() {
        "postgres" => Some(BackupMethod::Postgres),
        "rsync" => Some(BackupMethod::Rsync),
        other => {
            d.err(
                n.line,
                p,
                format!("`{other}` is not a Barman backup method; use `postgres` or `rsync`"),
            );
            None
        }
    }
}

/// `off`, `copy` or `link` (YAML 1.1's `off`, a boolean false, is `off` too).
pub(crate) fn reuse_backup(n: &Node, p: &str, d: &mut Diag) -> Option<ReuseBackup> {
    match n.scalar_text(d, p)?.as_str() {
        "off" => Some(ReuseBackup::Off),
        "copy" => Some(ReuseBackup::Copy),
        "link" => Some(ReuseBackup::Link),
        other => {
            d.err(
                n.line,
                p,
                format!("`{other}` is not a Barman reuse_backup mode; use `off`, `copy` or `link`"),
            );
            None
        }
    }
}

/// `barman_backup_options`: Barman's options, comma-separated. `exclusive_backup` is refused:
/// PostgreSQL 15 removed exclusive backups (and tpa's Barman needs 15 or later).
pub(crate) fn backup_options(v: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    for option in v.split(',').map(str::trim) {
        match option {
            "concurrent_backup" | "external_configuration" if !seen.contains(&option) => {
                seen.push(option)
            }
            "exclusive_backup" => {
                return Err(
                    "`exclusive_backup` does not exist in PostgreSQL 15 and later; use \
                     `concurrent_backup`"
                        .into(),
                );
            }
            _ => {
                return Err(format!(
                    "`{v}` is not a list of Barman backup options tpa accepts; write \
                     `concurrent_backup`, optionally with `,external_configuration`"
                ));
            }
        }
    }
    Ok(())
}

/// Settings that only mean something for `backup_method = rsync`: set with `postgres`, Barman
/// would ignore them (or refuse the server), so each is an error naming its key. `fields` are
/// an instance's merged vars, so the error points where the value was written.
pub(crate) fn rsync_only(vars: &BarmanVars, fields: &[Field<'_>], d: &mut Diag) {
    if vars.backup_method() == BackupMethod::Rsync {
        return;
    }
    let set = [
        (
            "barman_reuse_backup",
            vars.reuse_backup.is_some_and(|r| r != ReuseBackup::Off),
        ),
        (
            "barman_parallel_jobs",
            vars.parallel_jobs.is_some_and(|j| j > 1),
        ),
        (
            "barman_network_compression",
            vars.network_compression == Some(true),
        ),
    ];
    for (key, wrong) in set {
        let Some(f) = fields.iter().find(|f| f.key == key) else {
            continue;
        };
        if wrong {
            d.err(
                f.line,
                &f.path,
                format!(
                    "`{key}` applies to rsync backups only, and this instance's backups use \
                     `barman_backup_method: postgres` (pg_basebackup); set \
                     `barman_backup_method: rsync` or remove `{key}`"
                ),
            );
        }
    }
}

/// TPA's `barman_*` variables (and `backup_name`) that tpa does not honour, each with why and
/// what to do: refused by name rather than silently ignored.
pub(crate) const REFUSED: &[(&str, &str)] = &[
    (
        "backup_name",
        "tpa names the Barman server after the instance whose `backup:` names the Barman host \
         (the catalogue keeps that name when the primary changes); remove `backup_name`",
    ),
    (
        "barman_log_file",
        "tpa keeps Barman's log in /var/log/barman/barman.log, which Debian's logrotate \
         rotates; remove `barman_log_file`",
    ),
    (
        "barman_pre_archive_retry_script",
        "tpa does not install Barman hook scripts; remove it and run such a script from your \
         own unit or cron job on the Barman host",
    ),
    (
        "barman_post_backup_script",
        "tpa does not install Barman hook scripts; remove it and run such a script from your \
         own unit or cron job on the Barman host (`barman list-backups` says when one ended)",
    ),
    (
        "barman_post_backup_retry_script",
        "tpa does not install Barman hook scripts; remove it and run such a script from your \
         own unit or cron job on the Barman host (`barman list-backups` says when one ended)",
    ),
    (
        "barman_streaming_wals_directory",
        "tpa keeps streamed WAL in Barman's default directory under /var/lib/barman/<server>; \
         remove `barman_streaming_wals_directory`",
    ),
    (
        "barman_client_dsn_attributes",
        "tpa's Barman conninfo is fixed (TLS verify-full against the cluster CA, passwords \
         from a passfile); remove `barman_client_dsn_attributes`",
    ),
    (
        "barman_home",
        "tpa uses Debian's barman user and its home /var/lib/barman; remove `barman_home`",
    ),
    (
        "barman_user",
        "tpa uses Debian's barman user and its home /var/lib/barman; remove `barman_user`",
    ),
    (
        "barman_group",
        "tpa uses Debian's barman user and group; remove `barman_group`",
    ),
    (
        "barman_shared",
        "a Barman host shared by several clusters is not supported: give each cluster its own \
         instance with role `barman`, and remove `barman_shared`",
    ),
    (
        "barman_volume_mountable",
        "TPA sets this itself from the volumes; give the Barman host a volume with \
         `vars: {volume_for: barman_data}` instead (docs/volumes.md) and remove \
         `barman_volume_mountable`",
    ),
];

pub(crate) fn refused(key: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(k, _)| *k == key).map(|(_, m)| *m)
}

pub(crate) fn compression(v: &str) -> Result<(), String> {
    match v {
        "gzip" | "pygzip" | "pybzip2" => Ok(()),
        "pigz" | "bzip2" => Err(format!(
            "`barman_compression: {v}` needs the {v} program, which tpa does not install on \
             the Barman host; use gzip, pygzip or pybzip2"
        )),
        _ => Err(format!(
            "`{v}` is not a compression tpa supports for Barman; use gzip, pygzip or pybzip2"
        )),
    }
}

/// `REDUNDANCY n` or `RECOVERY WINDOW OF n {DAYS|WEEKS|MONTHS}` (Barman's grammar, any case).
pub(crate) fn retention_policy(v: &str) -> Result<(), String> {
    let words: Vec<String> = v.split_whitespace().map(str::to_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let ok = match words.as_slice() {
        ["REDUNDANCY", n] => is_count(n),
        ["RECOVERY", "WINDOW", "OF", n, unit] => is_count(n) && is_unit(unit),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a Barman retention policy; write `REDUNDANCY <n>` or `RECOVERY \
             WINDOW OF <n> DAYS|WEEKS|MONTHS`"
        ))
    }
}

/// `n DAYS|WEEKS|MONTHS` (singular or plural, any case).
pub(crate) fn age(v: &str) -> Result<(), String> {
    let words: Vec<String> = v.split_whitespace().map(str::to_uppercase).collect();
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [n, unit] if is_count(n) && is_unit(unit) => Ok(()),
        _ => Err(format!(
            "`{v}` is not a Barman age; write `<n> DAYS|WEEKS|MONTHS`, e.g. `1 WEEK`"
        )),
    }
}

/// Five cron fields of digits, names and `*,/-` (it goes into a cron.d line).
pub(crate) fn cron_schedule(v: &str) -> Result<(), String> {
    let fields: Vec<&str> = v.split_whitespace().collect();
    let valid = fields.len() == 5
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '/' | '-'))
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a cron schedule; write five fields, e.g. `0 4 * * wed,sat`"
        ))
    }
}

/// `verify_backup_sql`: one SQL text the drill sends with `psql --command` (so no psql
/// meta-command runs: none may start it), at most 4 KiB.
pub(crate) fn verify_sql(v: &str) -> Result<(), String> {
    let t = v.trim();
    if t.is_empty() {
        Err(
            "`verify_backup_sql` is empty; write a query such as `select count(*) > 0 from \
             orders`, or remove the key"
                .into(),
        )
    } else if t.starts_with('\\') {
        Err("`verify_backup_sql` starts with a psql meta-command (`\\`); write SQL only".into())
    } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        Err("`verify_backup_sql` holds a control character; write plain SQL".into())
    } else if v.len() > 4096 {
        Err(format!(
            "`verify_backup_sql` is {} bytes; keep it under 4096 (a check, not a script)",
            v.len()
        ))
    } else {
        Ok(())
    }
}

/// `verify_backup_database`: a database name made of letters, digits, `_` and `-` (it is an
/// argument of the drill and of psql, where `=` would make it a conninfo).
pub(crate) fn database_name(v: &str) -> Result<(), String> {
    if !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a database name tpa accepts here; use letters, digits, `_` and `-`"
        ))
    }
}

/// `verify_backup_schedule`: a systemd calendar expression (systemd.time(7)), e.g. `daily`,
/// `Sun *-*-* 03:00:00` or `*-*-* 02,14:30`. Only its characters and length are checked here
/// (it goes into a unit file line); systemd parses it when the timer loads.
pub(crate) fn calendar(v: &str) -> Result<(), String> {
    let ok = !v.trim().is_empty()
        && v.len() <= 100
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || " :*,./~-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is not a systemd calendar expression tpa accepts; write e.g. `daily` or \
             `Sun *-*-* 03:00:00` (letters, digits, spaces and `:*,./~-+`, at most 100 \
             characters)"
        ))
    }
}

fn is_count(s: &str) -> bool {
    !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit())
}

fn is_unit(s: &str) -> bool {
    matches!(s, "DAY" | "DAYS" | "WEEK" | "WEEKS" | "MONTH" | "MONTHS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_reach_barman_conf_and_cron_are_checked() {
        assert!(retention_policy("recovery window of 4 weeks").is_ok());
        assert!(retention_policy("REDUNDANCY 3").is_ok());
        assert!(retention_policy("REDUNDANCY 3\nx = y").is_err());
        assert!(retention_policy("FOREVER").is_err());
        assert!(age("1 WEEK").is_ok());
        assert!(age("1 FORTNIGHT").is_err());
        assert!(cron_schedule("0 4 * * wed,sat").is_ok());
        assert!(cron_schedule("*/5 * * * *").is_ok());
        assert!(cron_schedule("0 4 * * * root rm -rf /").is_err());
        assert!(cron_schedule("@daily").is_err());
        assert!(calendar("Sun *-*-* 03:00:00").is_ok());
        assert!(calendar("daily").is_ok());
        assert!(calendar("daily\nExecStart=/bin/sh").is_err());
        assert!(calendar("").is_err());
        assert!(verify_sql("select count(*) > 0 from t").is_ok());
        assert!(verify_sql(" \\! rm -rf /").is_err());
        assert!(verify_sql(&"x".repeat(5000)).is_err());
        assert!(backup_options("concurrent_backup").is_ok());
        assert!(backup_options("concurrent_backup, external_configuration").is_ok());
        assert!(
            backup_options("exclusive_backup")
                .unwrap_err()
                .contains("PostgreSQL 15")
        );
        assert!(backup_options("concurrent_backup\nssh_command = x").is_err());
        assert!(backup_options("concurrent_backup,concurrent_backup").is_err());
        assert!(backup_options("").is_err());
        assert!(database_name("app_db").is_ok());
        assert!(database_name("host=evil").is_err());
        assert!(compression("gzip").is_ok());
        assert!(
            compression("pigz")
                .unwrap_err()
                .contains("tpa does not install")
        );
    }
}
