//! A private apt for one Debian release: resolves and downloads packages for a target OS
//! without reading or touching the controller's own apt configuration, lists or dpkg state.
//!
//! `apt-get` is run as a child process on purpose: dependency resolution for Debian (virtual
//! packages, alternatives, Pre-Depends, Breaks, versioned dependencies, multi-arch) is apt's
//! job, and re-implementing it would only produce a second, subtly different answer. Isolation
//! comes from `APT_CONFIG`: apt reads that file *before* `/etc/apt/apt.conf.d`, and ours points
//! every `Dir::` setting (including the config parts directory) at private paths. Proxy
//! settings from `/etc/apt` are therefore not used; `http_proxy` in the environment is.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, bail};

use super::os::DebianRelease;

/// The keyring that verifies Debian's archive (package debian-archive-keyring).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Debian's main archive.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Debian's security archive (`<suite>-security`).
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Where packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSources {
    /// Archive for `<suite>` (and `<suite>-updates`), e.g. [`DEFAULT_MIRROR`].
    pub mirror: String,
    /// Archive for `<suite>-security`; `None` leaves security updates out.
    pub security_mirror: Option<String>,
    /// Whether to add `<suite>-updates` (stable point-release updates).
    pub updates: bool,
    /// Keyring that signs the archives (`Signed-By`).
    pub keyring: PathBuf,
}

impl Default for AptSources {
    fn default() -> Self {
        AptSources {
            mirror: DEFAULT_MIRROR.to_owned(),
            security_mirror: Some(DEFAULT_SECURITY_MIRROR.to_owned()),
            updates: true,
            keyring: PathBuf::from(DEBIAN_KEYRING),
        }
    }
}

impl AptSources {
    /// Fails when the keyring is missing, before apt reports it less clearly.
    pub fn check_keyring(&self) -> anyhow::Result<()> {
        if !self.keyring.is_file() {
            bail!(
                "keyring {} not found; install the debian-archive-keyring package or set the \
                 keyring of your mirror",
                self.keyring.display()
            );
        }
        Ok(())
    }

    /// The `sources.list` text for `release`.
    pub fn sources_list(&self, release: &DebianRelease) -> String {
        let key = self.keyring.display();
        let suite = release.codename;
        let mut s = format!("deb [signed-by={key}] {} {suite} main\n", self.mirror);
        if self.updates {
            let _ = writeln!(
                s,
                "deb [signed-by={key}] {} {suite}-updates main",
                self.mirror
            );
        }
        if let Some(security) = &self.security_mirror {
            let _ = writeln!(s, "deb [signed-by={key}] {security} {suite}-security main");
        }
        s
    }
}

/// One package that apt decided to fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// Requested packages that the archive does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "package(s) not found in {suite} at {mirror}: {}; check the names with \
     `apt-cache policy NAME` on a {suite} host, or remove them from the package list",
    names.join(", ")
)]
pub struct PackagesNotFound {
    pub names: Vec<String>,
    pub suite: String,
    pub mirror: String,
}

/// Directories apt may keep between runs: the downloaded package lists, and the binary
/// cache apt builds from them (`pkgcache.bin`; apt rebuilds it when lists or status change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptDirs {
    pub lists: PathBuf,
    pub cache: PathBuf,
}

impl AptDirs {
    /// `lists/` and `pkgcache/` under `base`.
    pub fn under(base: &Path) -> Self {
        AptDirs {
            lists: base.join("lists"),
            cache: base.join("pkgcache"),
        }
    }
}

/// apt configured for one release, with private state in a temporary directory and the
/// package lists in a cache directory that outlives it.
pub struct PrivateApt {
    release: DebianRelease,
    origin: String,
    config: PathBuf,
    lists: PathBuf,
    _state: tempfile::TempDir,
}

impl PrivateApt {
    /// Set up apt for `release` reading `sources_list` (`origin` names it in errors).
    /// `status` is the dpkg status text apt treats as installed (empty for a full dependency
    /// closure); downloads go to `archives`.
    pub fn new(
        release: DebianRelease,
        sources_list: &str,
        origin: &str,
        architecture: &str,
        dirs: &AptDirs,
        status: &str,
        archives: &Path,
    ) -> anyhow::Result<Self> {
        let lists = dirs.lists.as_path();
        let state = tempfile::Builder::new()
            .prefix("tpa-apt-")
            .tempdir()
            .context("creating a temporary directory for apt state")?;
        let root = state.path();
        for dir in ["parts", "preferences", "trusted", "state", "log"] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        for dir in [
            lists.join("partial"),
            dirs.cache.clone(),
            archives.to_path_buf(),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let sources_file = root.join("sources.list");
        fs::write(&sources_file, sources_list)
            .with_context(|| format!("writing {}", sources_file.display()))?;
        let status_file = root.join("status");
        fs::write(&status_file, status)
            .with_context(|| format!("writing {}", status_file.display()))?;

        let config = root.join("apt.conf");
        let text = apt_conf(&[
            ("Dir::Etc::main", Path::new("/dev/null")),
            ("Dir::Etc::parts", &root.join("parts")),
            ("Dir::Etc::sourcelist", &sources_file),
            ("Dir::Etc::sourceparts", Path::new("-")),
            ("Dir::Etc::preferences", Path::new("/dev/null")),
            ("Dir::Etc::preferencesparts", &root.join("preferences")),
            ("Dir::Etc::trusted", Path::new("/dev/null")),
            ("Dir::Etc::trustedparts", &root.join("trusted")),
            ("Dir::State", &root.join("state")),
            ("Dir::State::Lists", lists),
            ("Dir::State::status", &status_file),
            ("Dir::Cache", &dirs.cache),
            ("Dir::Cache::archives", archives),
            ("Dir::Log", &root.join("log")),
        ])?;
        let text = format!(
            "{text}APT::Architecture \"{architecture}\";\n\
             APT::Architectures {{ \"{architecture}\"; }};\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"3\";\n\
             APT::Install-Recommends \"false\";\n"
        );
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(PrivateApt {
            release,
            origin: origin.to_owned(),
            config,
            lists: lists.to_path_buf(),
            _state: state,
        })
    }

    /// Refresh the package lists. When the archive is unreachable but lists from an earlier
    /// run exist, carry on with those and return a warning instead of failing.
    pub fn update(&self) -> anyhow::Result<Option<String>> {
        let out = self.apt_get(&["update"])?;
        if out.status.success() {
            return Ok(None);
        }
        let cached = fs::read_dir(&self.lists)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false);
        let detail = last_lines(&stderr(&out), 8);
        if cached {
            Ok(Some(format!(
                "apt-get update for {} failed, using package lists cached in {}: {detail}",
                self.release,
                self.lists.display()
            )))
        } else {
            bail!(
                "apt-get update for {} from {} failed: {detail}; check that this machine \
                 reaches the mirror (or set http_proxy)",
                self.release,
                self.origin
            )
        }
    }

    /// Every package apt would fetch to install `packages` on a host whose dpkg status is the
    /// one given to [`PrivateApt::new`].
    pub fn resolve(&self, packages: &[String]) -> anyhow::Result<Vec<ResolvedPackage>> {
        let mut args = vec!["install", "--simulate", "--no-install-recommends", "--"];
        args.extend(packages.iter().map(String::as_str));
        let out = self.apt_get(&args)?;
        self.check(&out, "resolving packages")?;
        let mut resolved = parse_simulation(&String::from_utf8_lossy(&out.stdout));
        resolved.sort();
        Ok(resolved)
    }

    /// Download `packages` and their dependencies into the archives directory. Files already
    /// there with the right hash are not fetched again.
    pub fn download(&self, packages: &[String]) -> anyhow::Result<()> {
        let mut args = vec![
            "install",
            "--download-only",
            "--yes",
            "--no-install-recommends",
            "--",
        ];
        args.extend(packages.iter().map(String::as_str));
        let out = self.apt_get(&args)?;
        self.check(&out, "downloading packages")
    }

    fn apt_get(&self, args: &[&str]) -> anyhow::Result<Output> {
        crate::process::command("apt-get")
            .arg("-q")
            .args(args)
            .env("APT_CONFIG", &self.config)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context(
                "running apt-get; download-packages needs a Debian or Ubuntu controller with apt",
            )
    }

    fn check(&self, out: &Output, what: &str) -> anyhow::Result<()> {
        let err = stderr(out);
        let missing = missing_packages(&err);
        if !missing.is_empty() {
            return Err(PackagesNotFound {
                names: missing,
                suite: self.release.codename.to_owned(),
                mirror: self.origin.clone(),
            }
            .into());
        }
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            bail!(
                "apt-get failed {what} for {}: {}",
                self.release,
                last_lines(&format!("{stdout}{err}"), 15)
            );
        }
        Ok(())
    }
}

/// An apt.conf fragment setting each key to a path. apt.conf strings cannot contain quotes.
fn apt_conf(entries: &[(&str, &Path)]) -> anyhow::Result<String> {
    let mut s = String::new();
    for (key, path) in entries {
        let p = path
            .to_str()
            .with_context(|| format!("path {} is not UTF-8", path.display()))?;
        if p.contains('"') {
            bail!(
                "path {p} contains a double quote, which apt.conf cannot express; use another directory"
            );
        }
        let _ = writeln!(s, "{key} \"{p}\";");
    }
    Ok(s)
}

/// Packages from `apt-get install --simulate` output lines such as
/// `Inst libssl3 [3.0.11-1~deb12u2] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])`.
pub fn parse_simulation(stdout: &str) -> Vec<ResolvedPackage> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let name = rest.split_whitespace().next()?;
            let inside = rest.split_once('(')?.1.split_once(')')?.0;
            let version = inside.split_whitespace().next()?;
            let architecture = inside
                .rsplit_once('[')
                .and_then(|(_, a)| a.split_once(']'))
                .map_or("", |(a, _)| a);
            Some(ResolvedPackage {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: architecture.to_owned(),
            })
        })
        .collect()
}

/// Package names apt could not find, from its error lines.
pub fn missing_packages(stderr: &str) -> Vec<String> {
    let mut names: Vec<String> = stderr
        .lines()
        .filter_map(|line| {
            if let Some(name) = line.strip_prefix("E: Unable to locate package ") {
                return Some(name.trim().to_owned());
            }
            let rest = line.strip_prefix("E: Package '")?;
            let (name, tail) = rest.split_once('\'')?;
            tail.contains("has no installation candidate")
                .then(|| name.to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn sources_cover_main_updates_and_security() {
        let release = DebianRelease::from_major(13).expect("supported");
        expect![[r#"
            deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
            deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-updates main
            deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security trixie-security main
        "#]]
        .assert_eq(&AptSources::default().sources_list(&release));
        let minimal = AptSources {
            mirror: "http://mirror.example/debian".into(),
            security_mirror: None,
            updates: false,
            ..AptSources::default()
        };
        assert_eq!(minimal.sources_list(&release).lines().count(), 1);
    }

    #[test]
    fn simulation_output_yields_name_version_and_arch() {
        let out = "\
NOTE: This is only a simulation!
Inst libssl3 [3.0.11-1~deb12u2] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst cron-daemon-common (3.0pl1-162 Debian:12.12/oldstable [all])
Inst perl-base [5.36.0-7+deb12u1] (5.36.0-7+deb12u2 Debian:12.12/oldstable [amd64]) []
Conf cron-daemon-common (3.0pl1-162 Debian:12.12/oldstable [all])
";
        let got = parse_simulation(out);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            ResolvedPackage {
                name: "libssl3".into(),
                version: "3.0.17-1~deb12u2".into(),
                architecture: "amd64".into()
            }
        );
        assert_eq!(got[1].architecture, "all");
        assert_eq!(got[2].version, "5.36.0-7+deb12u2");
    }

    #[test]
    fn missing_package_errors_are_collected() {
        let err = "\
E: Unable to locate package postgresql-16
E: Package 'etcd' has no installation candidate
E: Unable to locate package postgresql-16
";
        assert_eq!(missing_packages(err), ["etcd", "postgresql-16"]);
        let e = PackagesNotFound {
            names: missing_packages(err),
            suite: "bookworm".into(),
            mirror: DEFAULT_MIRROR.into(),
        };
        expect![[r#"package(s) not found in bookworm at http://deb.debian.org/debian: etcd, postgresql-16; check the names with `apt-cache policy NAME` on a bookworm host, or remove them from the package list"#]]
        .assert_eq(&e.to_string());
    }

    #[test]
    fn apt_conf_rejects_quotes() {
        assert!(apt_conf(&[("Dir", Path::new("/tmp/a\"b"))]).is_err());
        assert_eq!(
            apt_conf(&[("Dir::Cache", Path::new("/tmp/c"))]).expect("plain path"),
            "Dir::Cache \"/tmp/c\";\n"
        );
    }
}
