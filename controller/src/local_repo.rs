//! `download-packages`: the cluster's local apt repository, for hosts that reach no package
//! archive (TPA's `local-repo`).
//!
//! [`download`] resolves every package a cluster needs for one Debian release with a private
//! apt (the controller's own apt state is never read or changed), downloads them with their
//! dependencies into `<cluster>/local-repo/Debian/<major>/`, and writes the apt index there, so
//! `deb [trusted=yes] file:/var/opt/tpa/local-repo ./` works on a host. Packages the host
//! image already has (its dpkg status, the *baseline*) are left out.
//!
//! # Layout
//! - `os`: supported Debian releases, their suites and the PostgreSQL version each ships.
//! - `packages`: the package list for a set of roles ([`packages_for`]).
//! - `apt`: the private apt (`apt-get update`, simulate, `--download-only`).
//! - `status`: reading a dpkg status file (the baseline).
//! - `index`: `Packages`, `Packages.gz` and `Release`.
//! - `lookup`: where the repository lives and which directory a host uses.
//!
//! [`download`] blocks (it runs `apt-get`); call it from `tokio::task::spawn_blocking`.

mod apt;
mod index;
mod lookup;
mod os;
mod packages;
mod status;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use self::apt::{
    AptSources, DEBIAN_KEYRING, DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR, PackagesNotFound,
    ResolvedPackage,
};
pub use self::index::{IndexSummary, write_index};
pub use self::lookup::{
    DEBIAN, HOST_APT_SOURCE, LOCAL_REPO_DIR, apt_source_line, candidates, find_repo_for_host,
    has_index, host_repo_dir, repo_dir_for,
};
pub use self::os::{DebianRelease, SUPPORTED, UnsupportedOs};
pub use self::packages::{PackageSetError, packages_for};
pub use self::status::installed_packages;

/// What to download, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRequest {
    /// The repository directory, normally [`repo_dir_for`]`(cluster_dir, os_major)`.
    pub repo_dir: PathBuf,
    /// Debian major version of the hosts (12 or 13).
    pub os_major: u32,
    /// Packages the hosts install, e.g. from [`packages_for`] over every role in the cluster.
    pub packages: Vec<String>,
    /// The hosts' image dpkg status file; its installed packages are not downloaded.
    /// `None` downloads the full dependency closure.
    pub baseline_status: Option<PathBuf>,
    /// Archives and keyring to use.
    pub sources: AptSources,
    /// Debian architecture of the hosts, e.g. `amd64`.
    pub architecture: String,
    /// Where apt's package lists are cached between runs; `None` uses
    /// [`default_cache_dir`] (`$XDG_CACHE_HOME/tpa/apt`, else `~/.cache/tpa/apt`).
    pub cache_dir: Option<PathBuf>,
}

impl DownloadRequest {
    /// A request with Debian's own archives, `amd64`, no baseline and the default cache.
    pub fn new(repo_dir: PathBuf, os_major: u32, packages: Vec<String>) -> Self {
        DownloadRequest {
            repo_dir,
            os_major,
            packages,
            baseline_status: None,
            sources: AptSources::default(),
            architecture: "amd64".to_owned(),
            cache_dir: None,
        }
    }
}

/// What [`download`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    pub release: DebianRelease,
    pub repo_dir: PathBuf,
    /// Requested packages that the baseline already has installed, so not downloaded.
    pub already_installed: Vec<String>,
    /// Every package the hosts need beyond the baseline: the requested ones and their
    /// dependencies.
    pub packages: Vec<ResolvedPackage>,
    /// `.deb` files fetched by this run, and their size.
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    /// Needed packages whose `.deb` was already in the repository.
    pub already_present: usize,
    /// What the index lists (every `.deb` in the directory, older versions included).
    pub index: IndexSummary,
    /// Problems that did not stop the run, e.g. package lists reused because the archive was
    /// unreachable.
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

impl fmt::Display for DownloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} packages needed beyond the host image, {} downloaded ({}), {} already present",
            self.release,
            self.packages.len(),
            self.downloaded,
            megabytes(self.downloaded_bytes),
            self.already_present
        )?;
        write!(
            f,
            "index of {} packages ({}) in {}, {:.1} s",
            self.index.packages,
            megabytes(self.index.bytes),
            self.repo_dir.display(),
            self.elapsed.as_secs_f64()
        )?;
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// `$XDG_CACHE_HOME/tpa/apt`, else `$HOME/.cache/tpa/apt`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tpa").join("apt"))
}

/// Resolve, download and index `req.packages` for Debian `req.os_major` in `req.repo_dir`.
///
/// Re-running with everything present downloads nothing. Blocks; see the module docs.
pub fn download(req: &DownloadRequest) -> anyhow::Result<DownloadReport> {
    let started = Instant::now();
    let release = DebianRelease::from_major(req.os_major)?;
    check_names(&req.packages)?;

    let baseline = match &req.baseline_status {
        Some(path) => fs::read_to_string(path)
            .with_context(|| format!("reading baseline dpkg status {}", path.display()))?,
        None => String::new(),
    };
    let installed = installed_packages(&baseline);
    if req.baseline_status.is_some() && installed.is_empty() {
        bail!(
            "baseline dpkg status {} lists no installed package; pass the host image's \
             /var/lib/dpkg/status, or no baseline for a full download",
            req.baseline_status
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        );
    }
    // Deploy installs with "state present": a package the image has is not upgraded, so its
    // newer version need not be in the repository. Dependencies that need newer versions of
    // installed packages are still resolved by apt.
    let (already_installed, wanted): (Vec<String>, Vec<String>) = req
        .packages
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .partition(|p| installed.contains(p));

    let cache = match &req.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir().context(
            "neither XDG_CACHE_HOME nor HOME is set; set one so apt lists can be cached",
        )?,
    };
    let suite_cache = cache.join(release.codename);
    fs::create_dir_all(&suite_cache)
        .with_context(|| format!("creating apt cache directory {}", suite_cache.display()))?;
    let _lock = lock_cache(&suite_cache)?;
    let dirs = apt::AptDirs::under(&suite_cache);
    fs::create_dir_all(&req.repo_dir)
        .with_context(|| format!("creating {}", req.repo_dir.display()))?;
    req.sources.check_keyring()?;
    let apt = apt::PrivateApt::new(
        release,
        &req.sources.sources_list(&release),
        &req.sources.mirror,
        &req.architecture,
        &dirs,
        &baseline,
        &req.repo_dir,
    )?;

    tracing::info!(%release, lists = %dirs.lists.display(), "updating apt package lists");
    let mut warnings = Vec::new();
    warnings.extend(apt.update()?);

    let packages = if wanted.is_empty() {
        Vec::new()
    } else {
        apt.resolve(&wanted)?
    };
    let before = deb_names(&req.repo_dir)?;
    if !packages.is_empty() {
        tracing::info!(%release, count = packages.len(), "downloading packages");
        apt.download(&wanted)?;
    }
    remove_apt_leftovers(&req.repo_dir);

    let mut downloaded = 0;
    let mut downloaded_bytes = 0;
    for deb in index::deb_files(&req.repo_dir)? {
        let name = deb.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| !before.contains(&n)) {
            downloaded += 1;
            downloaded_bytes += fs::metadata(&deb).map_or(0, |m| m.len());
        }
    }
    tracing::info!(dir = %req.repo_dir.display(), "writing apt index");
    let index = write_index(&req.repo_dir, release.codename)?;
    if !wanted.is_empty() {
        check_self_contained(
            &req.repo_dir,
            release,
            &req.architecture,
            &baseline,
            &wanted,
        )?;
    }

    Ok(DownloadReport {
        release,
        repo_dir: req.repo_dir.clone(),
        already_installed,
        already_present: packages.len().saturating_sub(downloaded),
        packages,
        downloaded,
        downloaded_bytes,
        index,
        warnings,
        elapsed: started.elapsed(),
    })
}

/// Prove that a host whose dpkg status is `baseline` can install `packages` from the
/// repository in `repo_dir` alone (`use_local_repo_only`): apt resolves them against
/// `deb [trusted=yes] file:<repo_dir> ./` and nothing else.
pub fn check_self_contained(
    repo_dir: &Path,
    release: DebianRelease,
    architecture: &str,
    baseline: &str,
    packages: &[String],
) -> anyhow::Result<Vec<ResolvedPackage>> {
    let scratch = tempfile::Builder::new()
        .prefix("tpa-repo-check-")
        .tempdir()
        .context("creating a temporary directory for the repository check")?;
    let origin = format!("file:{}", repo_dir.display());
    let apt = apt::PrivateApt::new(
        release,
        &apt_source_line(repo_dir),
        &origin,
        architecture,
        &apt::AptDirs::under(scratch.path()),
        baseline,
        &scratch.path().join("archives"),
    )?;
    if let Some(warning) = apt.update()? {
        bail!("reading the local repository {origin}: {warning}");
    }
    apt.resolve(packages).with_context(|| {
        format!(
            "the local repository {} is not self-contained: a host could not install the \
             cluster's packages from it alone",
            repo_dir.display()
        )
    })
}

/// Debian package names: lower case letters, digits, `+`, `-`, `.`, starting alphanumeric.
/// Checked before they reach apt-get's command line, where `-x` would be an option and `*` a
/// pattern.
fn check_names(packages: &[String]) -> anyhow::Result<()> {
    if packages.is_empty() {
        bail!("no packages to download; the package list is empty");
    }
    for p in packages {
        let valid = p.len() >= 2
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
            });
        if !valid {
            bail!("{p:?} is not a Debian package name (lower case letters, digits, + - .)");
        }
    }
    Ok(())
}

/// Serialise runs that share a suite's list cache (two clusters, or parallel tests): apt
/// itself would fail at once on its lists lock instead of waiting.
fn lock_cache(suite_cache: &Path) -> anyhow::Result<fs::File> {
    let path = suite_cache.join("tpa.lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        tracing::info!(lock = %path.display(), "waiting for another download-packages run");
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

fn deb_names(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    Ok(index::deb_files(dir)?
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect())
}

/// apt leaves its `lock` file and `partial/` directory in the archives directory; neither
/// belongs in a repository that is copied to every host.
fn remove_apt_leftovers(repo_dir: &Path) {
    let _ = fs::remove_file(repo_dir.join("lock"));
    let _ = fs::remove_dir(repo_dir.join("partial"));
}

#[cfg(test)]
mod tests;
