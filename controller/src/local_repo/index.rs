//! The apt index of a flat local repository: `Packages`, `Packages.gz` and `Release`.
//!
//! Written here rather than by `dpkg-scanpackages` (dpkg-dev) or `apt-ftparchive`
//! (apt-utils) so the controller needs nothing beyond `dpkg-deb`, which every Debian system
//! has (dpkg is Essential). Each stanza is the package's own control file plus `Filename`,
//! `Size` and `SHA256`, as dpkg-scanpackages writes it. All versions of a package are listed,
//! like `dpkg-scanpackages -m`, and apt picks the newest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// What `write_index` indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSummary {
    /// Number of `.deb` files listed in `Packages`.
    pub packages: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Index every `.deb` file directly in `dir`, replacing any previous index.
///
/// Files are written under a temporary name and renamed, so a reader never sees half an index.
pub fn write_index(dir: &Path, codename: &str) -> anyhow::Result<IndexSummary> {
    let debs = deb_files(dir)?;
    // Stanzas of the previous index are reused for files whose size and hash still match:
    // running dpkg-deb on every file again is most of a re-run's time.
    let previous = fs::read_to_string(dir.join("Packages")).unwrap_or_default();
    let previous = previous_stanzas(&previous);
    let mut packages = String::new();
    let mut bytes = 0;
    for deb in &debs {
        let (stanza, size) = stanza_for(deb, &previous)?;
        packages.push_str(&stanza);
        packages.push('\n');
        bytes += size;
    }
    let gz = gzip(packages.as_bytes())
        .with_context(|| format!("compressing the Packages index of {}", dir.display()))?;
    let release = release_file(
        codename,
        &[("Packages", packages.as_bytes()), ("Packages.gz", &gz)],
    );
    write_atomically(&dir.join("Packages"), packages.as_bytes())?;
    write_atomically(&dir.join("Packages.gz"), &gz)?;
    write_atomically(&dir.join("Release"), release.as_bytes())?;
    Ok(IndexSummary {
        packages: debs.len(),
        bytes,
    })
}

/// The `.deb` files directly in `dir`, sorted by name so the index is reproducible.
pub fn deb_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "deb") && path.is_file() {
            debs.push(path);
        }
    }
    debs.sort();
    Ok(debs)
}

/// Stanzas of an existing `Packages` text by file name, each ending in a newline.
fn previous_stanzas(packages: &str) -> HashMap<&str, String> {
    packages
        .split("\n\n")
        .filter_map(|stanza| {
            let name = stanza
                .lines()
                .find_map(|l| l.strip_prefix("Filename: ./"))?;
            Some((name.trim(), format!("{}\n", stanza.trim_end())))
        })
        .collect()
}

/// One `Packages` stanza (ending in a newline) and the file size.
fn stanza_for(deb: &Path, previous: &HashMap<&str, String>) -> anyhow::Result<(String, u64)> {
    let content = fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let file_name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fingerprint = format!(
        "\nSize: {}\nSHA256: {}\n",
        content.len(),
        hex::encode(Sha256::digest(&content))
    );
    if let Some(old) = previous.get(file_name.as_str())
        && old.ends_with(&fingerprint)
    {
        return Ok((old.clone(), content.len() as u64));
    }
    let output = crate::process::command("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .env("LC_ALL", "C")
        .output()
        .context("running dpkg-deb (package dpkg); download-packages needs a Debian controller")?;
    if !output.status.success() {
        bail!(
            "dpkg-deb cannot read {}: {}; delete the file and run download-packages again",
            deb.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let control = String::from_utf8(output.stdout)
        .with_context(|| format!("control file of {} is not UTF-8", deb.display()))?;
    Ok((stanza(&control, &file_name, &content), content.len() as u64))
}

/// The control fields followed by the fields apt needs to fetch and verify the file.
fn stanza(control: &str, file_name: &str, content: &[u8]) -> String {
    let mut s = control.trim_end().to_owned();
    // writeln! to a String cannot fail.
    let _ = write!(
        s,
        "\nFilename: ./{file_name}\nSize: {}\nSHA256: {}\n",
        content.len(),
        hex::encode(Sha256::digest(content))
    );
    s
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // GzBuilder leaves mtime at 0, so the same Packages gives the same Packages.gz.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

/// An unsigned `Release` file. apt accepts the repository without one (`trusted=yes`) but
/// warns; with one, apt checks the index hashes.
///
/// `Date` is a constant on purpose. apt warns when it is missing, refuses a `Release` dated
/// more than a few seconds in the future (a host whose clock lags the controller's), and
/// silently ignores one dated *earlier* than the copy it already has (replay protection), so
/// a repository rebuilt on a machine with a slower clock would never be read. With a constant
/// date none of these can happen, and the hashes still make apt fetch a changed index.
fn release_file(codename: &str, files: &[(&str, &[u8])]) -> String {
    let mut s = format!(
        "Origin: tpa\nLabel: tpa local-repo\nCodename: {codename}\nDate: {RELEASE_DATE}\n\
         Description: packages downloaded by tpa-controller download-packages\nSHA256:\n"
    );
    for (name, content) in files {
        let _ = writeln!(
            s,
            " {} {} {name}",
            hex::encode(Sha256::digest(content)),
            content.len()
        );
    }
    s
}

/// See [`release_file`].
const RELEASE_DATE: &str = "Thu, 01 Jan 1970 00:00:00 UTC";

/// The index lives in the cluster directory: written like every other file there.
fn write_atomically(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    crate::cluster_dir::write_file(path, content, 0o644)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use expect_test::expect;

    use super::*;

    #[test]
    fn stanza_appends_location_size_and_hash_to_control() {
        let control =
            "Package: hello\nVersion: 1.0\nArchitecture: all\nDescription: hi\n there\n\n";
        expect![[r#"
            Package: hello
            Version: 1.0
            Architecture: all
            Description: hi
             there
            Filename: ./hello_1.0_all.deb
            Size: 3
            SHA256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        "#]]
        .assert_eq(&stanza(control, "hello_1.0_all.deb", b"abc"));
    }

    #[test]
    fn release_lists_index_hashes_under_a_constant_date() {
        expect![[r#"
            Origin: tpa
            Label: tpa local-repo
            Codename: bookworm
            Date: Thu, 01 Jan 1970 00:00:00 UTC
            Description: packages downloaded by tpa-controller download-packages
            SHA256:
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 Packages
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 3 Packages.gz
        "#]]
        .assert_eq(&release_file(
            "bookworm",
            &[("Packages", b""), ("Packages.gz", b"abc")],
        ));
    }

    #[test]
    fn previous_stanzas_are_found_by_file_name() {
        let packages = "Package: a\nFilename: ./a_1_all.deb\nSize: 3\n\nPackage: b\nFilename: ./b_1_all.deb\nSize: 4\n";
        let map = previous_stanzas(packages);
        assert_eq!(
            map["a_1_all.deb"],
            "Package: a\nFilename: ./a_1_all.deb\nSize: 3\n"
        );
        assert_eq!(
            map["b_1_all.deb"],
            "Package: b\nFilename: ./b_1_all.deb\nSize: 4\n"
        );
    }

    #[test]
    fn gzip_round_trips() {
        let gz = gzip(b"Package: x\n").expect("compress");
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .expect("decompress");
        assert_eq!(out, "Package: x\n");
    }

    #[test]
    fn empty_directory_gets_an_empty_but_valid_index() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let summary = write_index(tmp.path(), "trixie").expect("index");
        assert_eq!(
            summary,
            IndexSummary {
                packages: 0,
                bytes: 0
            }
        );
        assert!(tmp.path().join("Packages.gz").is_file());
        let release = fs::read_to_string(tmp.path().join("Release")).expect("Release");
        assert!(release.contains("Codename: trixie"), "{release}");
    }
}
