//! Host images built without a registry: a debootstrap root filesystem, adjusted to boot
//! systemd in an unprivileged container, then `docker import`ed as `tpa/debian:<major>`.
//!
//! Why debootstrap: these machines reach Debian's archive but no container registry, and
//! real air-gapped users are in the same position. The recipe is versioned by
//! [`RECIPE_VERSION`], stored as an image label, so a changed recipe rebuilds old images.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::process::tokio_command;
use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use crate::platform::Say;

/// Bump when the recipe below changes: images carrying an older label are rebuilt.
pub const RECIPE_VERSION: &str = "2";
pub const RECIPE_LABEL: &str = "tpa.image.recipe";
/// The Debian major a bare `tpa/debian` means.
pub const DEFAULT_DEBIAN_MAJOR: u32 = 12;
/// The Debian archive debootstrap reads from, the same one download-packages uses.
pub use crate::local_repo::DEFAULT_MIRROR;

/// What the image must contain for a host that behaves like a small VM.
const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "iproute2",
    "ca-certificates",
    "locales",
];

/// A Debian host image tpa knows how to build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    /// Repository, e.g. `tpa/debian`.
    pub repo: String,
    /// Tag, e.g. `12`.
    pub tag: String,
}

impl ImageRef {
    /// `tpa/debian` → `tpa/debian:12`; `tpa/debian:13` stays; other names are kept as given
    /// (they must exist locally, tpa only builds `tpa/debian`).
    pub fn parse(name: &str) -> ImageRef {
        let (repo, tag) = match name.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ if name == "tpa/debian" => (name.to_string(), DEFAULT_DEBIAN_MAJOR.to_string()),
            _ => (name.to_string(), "latest".to_string()),
        };
        ImageRef { repo, tag }
    }

    /// The image config.yml names for `instance` (`tpa/debian:12` when it names none).
    pub fn of(instance: &crate::config::Instance) -> ImageRef {
        ImageRef::parse(instance.image.as_deref().unwrap_or("tpa/debian"))
    }

    pub fn debian(major: u32) -> ImageRef {
        ImageRef {
            repo: "tpa/debian".into(),
            tag: major.to_string(),
        }
    }

    /// The Debian major version when this is an image tpa can build.
    pub fn buildable_debian_major(&self) -> Option<u32> {
        if self.repo != "tpa/debian" {
            return None;
        }
        self.tag.parse().ok().filter(|m| suite_for(*m).is_some())
    }

    pub fn full(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }
}

/// Debian major version → suite name.
pub fn suite_for(major: u32) -> Option<&'static str> {
    match major {
        12 => Some("bookworm"),
        13 => Some("trixie"),
        _ => None,
    }
}

/// Whether `image` exists locally with the current recipe.
pub async fn is_current(docker: &Docker, image: &ImageRef) -> anyhow::Result<bool> {
    match docker.inspect_image(&image.full()).await {
        Ok(info) => {
            let label = info
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(RECIPE_LABEL).cloned());
            // Images not built by tpa (no label) are the user's: take them as they are.
            Ok(label.is_none_or(|v| v == RECIPE_VERSION))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).context("asking Docker about the host image"),
    }
}

/// How long building one host image usually takes (debootstrap from a nearby mirror).
pub const TYPICAL_BUILD: &str = "about 90 s";

/// Makes sure `image` exists, building it when tpa knows how; says so before and after a
/// build, which takes long enough to look like a hang. True when it built.
pub async fn ensure(
    docker: &Docker,
    image: &ImageRef,
    mirror: &str,
    say: Say<'_>,
) -> anyhow::Result<bool> {
    if is_current(docker, image).await? {
        return Ok(false);
    }
    let Some(major) = image.buildable_debian_major() else {
        bail!(
            "image {} is not present in the local Docker engine, and tpa can build only \
             tpa/debian:12 and tpa/debian:13 (no registry is used): build or load it first",
            image.full()
        );
    };
    say(&format!(
        "{} is missing: {}; later runs reuse it",
        image.full(),
        building_notice(image, mirror)
    ));
    let started = Instant::now();
    build(docker, major, mirror).await?;
    say(&built_notice(image, started.elapsed()));
    Ok(true)
}

/// Said before a build: what is happening and how long it usually takes.
pub fn building_notice(image: &ImageRef, mirror: &str) -> String {
    format!(
        "building host image {} from {mirror} with debootstrap (usually {TYPICAL_BUILD})",
        image.full()
    )
}

/// Said after a build, with the time it took.
pub fn built_notice(image: &ImageRef, took: std::time::Duration) -> String {
    format!(
        "built host image {} in {:.1}s",
        image.full(),
        took.as_secs_f64()
    )
}

/// Builds `tpa/debian:<major>` from scratch. Needs root (debootstrap) and Debian's archive.
pub async fn build(docker: &Docker, major: u32, mirror: &str) -> anyhow::Result<ImageRef> {
    let suite = suite_for(major)
        .with_context(|| format!("Debian {major} is not supported: use 12 or 13"))?;
    which("debootstrap")
        .context("debootstrap is needed to build host images: apt-get install debootstrap")?;
    let started = Instant::now();
    let work = tempfile_dir("tpa-image")?;
    let rootfs = work.join("rootfs");
    let result = async {
        debootstrap(suite, &rootfs, mirror).await?;
        customise(&rootfs).await?;
        let image = ImageRef::debian(major);
        import(docker, &rootfs, &image).await?;
        Ok::<_, anyhow::Error>(image)
    }
    .await;
    // The rootfs is large and owned by root: always remove it, even after a failure.
    let _ = tokio::fs::remove_dir_all(&work).await;
    let image = result?;
    tracing::info!(image = %image.full(), secs = started.elapsed().as_secs_f32(), "built host image");
    Ok(image)
}

async fn debootstrap(suite: &str, rootfs: &Path, mirror: &str) -> anyhow::Result<()> {
    let output = tokio_command("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(suite)
        .arg(rootfs)
        .arg(mirror)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running debootstrap")?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "debootstrap of Debian {suite} from {mirror} failed ({}):\n{}\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A unit that creates SSH host keys at first boot, so no two hosts share a key.
const HOSTKEYS_UNIT: &str = "\
[Unit]
Description=Generate SSH host keys on first boot (tpa)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

/// dpkg settings for container hosts (see `customise`).
const DPKG_CONTAINER_CFG: &str = "\
# tpa host image: no fsync per file, no documentation
force-unsafe-io
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
";

/// Units that make no sense in a container and only slow boot or fail.
const MASKED_UNITS: &[&str] = &[
    "getty@tty1.service",
    "console-getty.service",
    "systemd-networkd-wait-online.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];

async fn customise(rootfs: &Path) -> anyhow::Result<()> {
    let write = |rel: &str, content: &str| {
        let path = rootfs.join(rel);
        let content = content.to_string();
        async move {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::write(&path, content).await
        }
    };
    // No baked-in host identity: keys come from the first-boot unit, machine-id from systemd.
    let mut entries = tokio::fs::read_dir(rootfs.join("etc/ssh")).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    write("etc/machine-id", "").await?;
    let _ = tokio::fs::remove_file(rootfs.join("var/lib/dbus/machine-id")).await;
    write("etc/systemd/system/tpa-ssh-hostkeys.service", HOSTKEYS_UNIT).await?;
    symlink(
        "/etc/systemd/system/tpa-ssh-hostkeys.service",
        &rootfs.join("etc/systemd/system/multi-user.target.wants/tpa-ssh-hostkeys.service"),
    )?;
    for unit in MASKED_UNITS {
        symlink("/dev/null", &rootfs.join("etc/systemd/system").join(unit))?;
    }
    // As Debian's own container images do: dpkg skips fsync (a container's filesystem is
    // disposable; installs are a third faster on overlay filesystems) and documentation.
    write("etc/dpkg/dpkg.cfg.d/tpa-container", DPKG_CONTAINER_CFG).await?;
    // The locale TPA uses by default (user_locale, postgres_locale).
    write("etc/locale.gen", "en_US.UTF-8 UTF-8\n").await?;
    write("etc/default/locale", "LANG=en_US.UTF-8\n").await?;
    chroot(rootfs, &["locale-gen"]).await?;
    // Containers have no network: drop the package caches debootstrap left.
    chroot(rootfs, &["apt-get", "clean"]).await?;
    let lists = rootfs.join("var/lib/apt/lists");
    let mut entries = tokio::fs::read_dir(&lists).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    Ok(())
}

fn symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("creating symlink {}", link.display()))
}

async fn chroot(rootfs: &Path, argv: &[&str]) -> anyhow::Result<()> {
    let output = tokio_command("chroot")
        .arg(rootfs)
        .args(argv)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {argv:?} in the image root"))?;
    if !output.status.success() {
        bail!(
            "{argv:?} in the image root failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Streams `tar` of the root filesystem into Docker's image import (POST /images/create).
async fn import(docker: &Docker, rootfs: &Path, image: &ImageRef) -> anyhow::Result<()> {
    let mut tar = tokio_command("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-c", "."])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .context("running tar")?;
    let stdout = tar.stdout.take().context("tar has no stdout")?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(stdout));
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(&image.repo)
        .tag(&image.tag)
        .changes(vec![
            r#"CMD ["/sbin/init"]"#.to_string(),
            "ENV container=docker".to_string(),
            format!("LABEL {RECIPE_LABEL}={RECIPE_VERSION}"),
        ])
        .build();
    let mut stream = docker.create_image(Some(options), Some(body), None);
    while let Some(info) = stream.next().await {
        let info = info.context("importing the root filesystem into Docker")?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            bail!("Docker refused the image import: {err}");
        }
    }
    let status = tar.wait().await?;
    if !status.success() {
        bail!("tar of the image root failed ({status})");
    }
    Ok(())
}

fn which(cmd: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .with_context(|| format!("{cmd} not found"))
}

/// A fresh directory on disk (not tmpfs: a root filesystem is hundreds of MB).
fn tempfile_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("TPA_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_announced_with_its_usual_duration_and_reported_with_its_own() {
        let image = ImageRef::debian(13);
        let before = building_notice(&image, "http://deb.debian.org/debian");
        assert!(
            before
                .starts_with("building host image tpa/debian:13 from http://deb.debian.org/debian"),
            "{before}"
        );
        assert!(before.contains("usually about 90 s"), "{before}");
        let after = built_notice(&image, std::time::Duration::from_millis(93_240));
        assert_eq!(after, "built host image tpa/debian:13 in 93.2s");
    }

    #[test]
    fn untagged_tpa_debian_means_the_default_major() {
        assert_eq!(ImageRef::parse("tpa/debian").full(), "tpa/debian:12");
        assert_eq!(
            ImageRef::parse("tpa/debian:13").buildable_debian_major(),
            Some(13)
        );
        assert_eq!(
            ImageRef::parse("tpa/debian:11").buildable_debian_major(),
            None
        );
        assert_eq!(
            ImageRef::parse("tpa/rocky:9").buildable_debian_major(),
            None
        );
        assert_eq!(
            ImageRef::parse("localhost:5000/x").full(),
            "localhost:5000/x:latest"
        );
    }
}
