//! `File` resource: a regular file with exact content, owner, group and mode.
//!
//! Example spec: `File { path: "/etc/postgresql/15/main/conf.d/0000-tpa.conf", content: b"port = 5432\n",
//! owner: "postgres", group: "postgres", mode: 0o640, secret: false }`.
//!
//! Content changes are written atomically: a temp file in the same directory gets the content,
//! owner and mode, is fsynced and renamed over the target. When only metadata differs, only
//! chown/chmod run, through a descriptor opened without following links. A symlink at the path
//! is replaced by a regular file, never followed. Diffs of secret or non-UTF-8 content are masked.
//! The helpers here serve `FileIfAbsent` too.

use std::fs;
use std::io::{Read as _, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tpa_common::resource::File;

use super::nofollow::{self, Expect};
use super::{Apply, Ctx, ResourceError, State, owner};

impl Apply for File {
    /// Compares the file on disk with the resource; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        check(&self.view())
    }

    /// Makes the file match (idempotent: does nothing when it already does).
    fn apply(&self, _ctx: &mut Ctx) -> Result<String, ResourceError> {
        apply(&self.view())
    }
}

/// Borrowed view of a file's desired state, shared with `FileIfAbsent`.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    pub owner: &'a str,
    pub group: &'a str,
    pub mode: u32,
    pub secret: bool,
}

trait View {
    fn view(&self) -> FileSpec<'_>;
}

impl View for File {
    fn view(&self) -> FileSpec<'_> {
        FileSpec {
            path: &self.path,
            content: self.content.as_bytes(),
            owner: &self.owner,
            group: &self.group,
            mode: self.mode,
            secret: self.secret,
        }
    }
}

/// What is on disk now.
#[derive(Debug)]
enum Current {
    Absent,
    /// A symlink (or other non-regular, non-directory entry) that will be replaced by a regular file.
    Replaceable(&'static str),
    Regular {
        content: Vec<u8>,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// Compares the file on disk with `spec`; never writes.
fn check(spec: &FileSpec<'_>) -> Result<State, ResourceError> {
    owner::validate_mode(spec.mode)?;
    let uid = owner::uid(spec.owner)?;
    let gid = owner::gid(spec.group)?;
    let current = observe(spec.path)?;
    let (old_content, mut meta) = match &current {
        Current::Absent => (None, Vec::new()),
        Current::Replaceable(what) => (
            None,
            vec![format!("# {what} will be replaced by a regular file")],
        ),
        Current::Regular {
            content,
            uid: cur_uid,
            gid: cur_gid,
            mode,
        } => {
            let meta = metadata_changes((*cur_uid, *cur_gid, *mode), (uid, gid, spec.mode));
            if content.as_slice() == spec.content {
                if meta.is_empty() {
                    return Ok(State::in_state("content, owner and mode as desired"));
                }
                return Ok(State::differs(
                    Some(meta.join("\n") + "\n"),
                    format!("{} differ", summary(&meta)),
                ));
            }
            (Some(content.as_slice()), meta)
        }
    };
    let created = old_content.is_none();
    if created {
        meta.push(format!(
            "# create with owner {}:{} mode {:04o}",
            spec.owner, spec.group, spec.mode
        ));
    }
    let mut diff = meta.join("\n");
    if !diff.is_empty() {
        diff.push('\n');
    }
    diff.push_str(&render_diff(
        spec.path,
        old_content,
        spec.content,
        spec.secret,
    ));
    let message = if created { "absent" } else { "content differs" };
    Ok(State::differs(Some(diff), message))
}

/// Makes the file match `spec` (idempotent: does nothing when it already does).
fn apply(spec: &FileSpec<'_>) -> Result<String, ResourceError> {
    owner::validate_mode(spec.mode)?;
    let uid = owner::uid(spec.owner)?;
    let gid = owner::gid(spec.group)?;
    match observe(spec.path)? {
        Current::Regular {
            content,
            uid: cur_uid,
            gid: cur_gid,
            mode,
        } if content.as_slice() == spec.content => {
            let meta = metadata_changes((cur_uid, cur_gid, mode), (uid, gid, spec.mode));
            if !meta.is_empty() {
                set_metadata(spec.path, uid, gid, spec.mode)?;
            }
            Ok(format!("fixed {}", summary(&meta)))
        }
        Current::Absent => {
            write_atomically(spec.path, spec.content, uid, gid, spec.mode)?;
            Ok("created".to_owned())
        }
        Current::Replaceable(_) | Current::Regular { .. } => {
            write_atomically(spec.path, spec.content, uid, gid, spec.mode)?;
            Ok("content updated".to_owned())
        }
    }
}

fn observe(path: &str) -> Result<Current, ResourceError> {
    let Some(meta) = fs::symlink_metadata(path)
        .map(Some)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(None),
            _ => Err(ResourceError::io("inspect", path, e)),
        })?
    else {
        return Ok(Current::Absent);
    };
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return Err(ResourceError::Invalid(format!(
            "{path} is a directory; remove it or fix the path of this file resource"
        )));
    }
    // A link is never followed: it is replaced by a regular file (rename does not follow it).
    if file_type.is_symlink() {
        return Ok(Current::Replaceable("symlink"));
    }
    if !file_type.is_file() {
        return Ok(Current::Replaceable("special file"));
    }
    // Read what was opened without following a link, not whatever the path names by then.
    let Some((mut file, meta)) = nofollow::open(path, Expect::File, false)? else {
        return Ok(Current::Absent);
    };
    let mut content = Vec::new();
    file.read_to_end(&mut content)
        .map_err(|e| ResourceError::io("read", path, e))?;
    let (uid, gid, mode) = nofollow::owner_and_mode(&meta);
    Ok(Current::Regular {
        content,
        uid,
        gid,
        mode,
    })
}

/// Lines describing owner/group/mode differences (empty when none).
pub(super) fn metadata_changes(current: (u32, u32, u32), desired: (u32, u32, u32)) -> Vec<String> {
    let mut lines = Vec::new();
    if current.0 != desired.0 {
        lines.push(format!(
            "# owner {} -> {}",
            owner::user_name(current.0),
            owner::user_name(desired.0)
        ));
    }
    if current.1 != desired.1 {
        lines.push(format!(
            "# group {} -> {}",
            owner::group_name(current.1),
            owner::group_name(desired.1)
        ));
    }
    if current.2 != desired.2 {
        lines.push(format!("# mode {:04o} -> {:04o}", current.2, desired.2));
    }
    lines
}

/// "owner, mode" from metadata change lines, for messages.
fn summary(meta: &[String]) -> String {
    let words: Vec<&str> = meta
        .iter()
        .filter_map(|l| l.strip_prefix("# ")?.split(' ').next())
        .collect();
    if words.is_empty() {
        "nothing".to_owned()
    } else {
        words.join(", ")
    }
}

/// A unified diff from `old` (None: file absent) to `new`; masked when secret or not UTF-8.
pub fn render_diff(path: &str, old: Option<&[u8]>, new: &[u8], secret: bool) -> String {
    let old_len = old.map_or(0, <[u8]>::len);
    if secret {
        return format!(
            "# secret content masked ({old_len} -> {} bytes)\n",
            new.len()
        );
    }
    let (Ok(old_text), Ok(new_text)) = (
        std::str::from_utf8(old.unwrap_or_default()),
        std::str::from_utf8(new),
    ) else {
        return format!(
            "# binary content differs ({old_len} -> {} bytes)\n",
            new.len()
        );
    };
    let old_name = if old.is_some() { path } else { "/dev/null" };
    similar::TextDiff::from_lines(old_text, new_text)
        .unified_diff()
        .header(old_name, path)
        .to_string()
}

/// chown and chmod through a descriptor opened without following a link, so a link swapped in
/// since `observe` cannot redirect them.
fn set_metadata(path: &str, uid: u32, gid: u32, mode: u32) -> Result<(), ResourceError> {
    let Some((file, _)) = nofollow::open(path, Expect::File, false)? else {
        return Err(ResourceError::Failed(format!(
            "{path} disappeared while it was being updated; deploy again"
        )));
    };
    nofollow::set_owner_and_mode(&file, path, uid, gid, mode)
}

/// Writes `content` to a temp file beside `path` with final owner and mode, fsyncs it, renames it
/// over `path` and fsyncs the directory, so readers see the old or the new file, never a mix.
pub fn write_atomically(
    path: &str,
    content: &[u8],
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<(), ResourceError> {
    let parent = match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => {
            return Err(ResourceError::Invalid(format!(
                "{path} is not an absolute file path"
            )));
        }
    };
    if !parent.is_dir() {
        return Err(ResourceError::Failed(format!(
            "parent directory {} does not exist; add a directory resource before this file",
            parent.display()
        )));
    }
    {
        // No process may start while a program is open for writing: it would hold it open
        // too, and running the program would fail (see run::writing). The file is closed when
        // `persist`'s result is dropped.
        let _gate = (mode & 0o111 != 0).then(super::run::writing);
        let mut temp = tempfile::Builder::new()
            .prefix(".tpa-")
            .suffix(".tmp")
            .tempfile_in(parent)
            .map_err(|e| {
                ResourceError::io("create a temp file in", parent.display().to_string(), e)
            })?;
        let write_error = |e| ResourceError::io("write temp file for", path, e);
        temp.write_all(content).map_err(write_error)?;
        let file = temp.as_file();
        std::os::unix::fs::fchown(file, Some(uid), Some(gid))
            .map_err(|e| ResourceError::io("chown temp file for", path, e))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| ResourceError::io("chmod temp file for", path, e))?;
        file.sync_all().map_err(write_error)?;
        temp.persist(path)
            .map_err(|e| ResourceError::io("rename temp file onto", path, e.error))?;
    }
    // The rename is durable only once the directory entry is on disk.
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ResourceError::io("fsync directory", parent.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use expect_test::expect;

    #[test]
    fn a_program_just_written_runs_while_other_threads_spawn() {
        use super::super::run::{Invocation, run};
        // Without the spawn gate, a child spawned by another thread while the temp file was
        // open inherits its descriptor until it execs, and running the file fails with "Text
        // file busy" (ETXTBSY): a hook written then run while a health round spawned psql.
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("hook");
        let program = program.to_str().expect("utf-8 path");
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let stop = std::sync::atomic::AtomicBool::new(false);
        let spawner = || {
            let argv = ["true".to_owned()];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = run(&Invocation {
                    argv: &argv,
                    ..Default::default()
                });
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(spawner);
            scope.spawn(spawner);
            for round in 0..300 {
                let script = format!("#!/bin/sh\nexit {}\n", round % 2);
                write_atomically(program, script.as_bytes(), uid, gid, 0o700).expect("write");
                let output = run(&Invocation {
                    argv: &[program.to_owned()],
                    ..Default::default()
                });
                let output = output.unwrap_or_else(|e| {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    panic!("round {round}: {e}")
                });
                assert_eq!(output.status.code(), Some(round % 2), "round {round}");
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        path: String,
    }

    fn fixture() -> Option<Fixture> {
        if !owner::is_root() {
            eprintln!("skipping: file tests chown to root and need to run as root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir
            .path()
            .join("app.conf")
            .to_str()
            .expect("utf8")
            .to_owned();
        Some(Fixture { _dir: dir, path })
    }

    fn spec<'a>(path: &'a str, content: &'a [u8], mode: u32) -> FileSpec<'a> {
        FileSpec {
            path,
            content,
            owner: "root",
            group: "root",
            mode,
            secret: false,
        }
    }

    fn mode_of(path: &str) -> u32 {
        fs::metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn creates_then_is_unchanged() {
        let Some(f) = fixture() else { return };
        let s = spec(&f.path, b"a = 1\n", 0o640);
        let state = check(&s).expect("check");
        assert!(!state.in_state);
        assert!(state.diff.as_deref().unwrap_or_default().contains("+a = 1"));
        assert_eq!(apply(&s).expect("apply"), "created");
        assert_eq!(fs::read(&f.path).expect("read"), b"a = 1\n");
        assert_eq!(mode_of(&f.path), 0o640);
        assert!(
            check(&s).expect("check").in_state,
            "second check sees no difference"
        );
        // No temp files are left behind.
        let dir = Path::new(&f.path).parent().expect("parent");
        assert_eq!(fs::read_dir(dir).expect("list").count(), 1);
    }

    #[test]
    fn metadata_only_change_keeps_content_and_inode() {
        let Some(f) = fixture() else { return };
        apply(&spec(&f.path, b"a = 1\n", 0o644)).expect("create");
        let inode = fs::metadata(&f.path).expect("stat").ino();
        let s = spec(&f.path, b"a = 1\n", 0o600);
        let state = check(&s).expect("check");
        assert!(!state.in_state);
        assert_eq!(state.diff.as_deref(), Some("# mode 0644 -> 0600\n"));
        assert_eq!(apply(&s).expect("apply"), "fixed mode");
        assert_eq!(mode_of(&f.path), 0o600);
        assert_eq!(
            fs::metadata(&f.path).expect("stat").ino(),
            inode,
            "metadata fix must not rewrite the file"
        );
    }

    #[test]
    fn content_change_shows_unified_diff() {
        let Some(f) = fixture() else { return };
        apply(&spec(&f.path, b"a = 1\nb = 2\n", 0o644)).expect("create");
        let state = check(&spec(&f.path, b"a = 1\nb = 3\n", 0o644)).expect("check");
        let diff = state.diff.expect("diff").replace(&f.path, "PATH");
        expect![[r#"
            --- PATH
            +++ PATH
            @@ -1,2 +1,2 @@
             a = 1
            -b = 2
            +b = 3
        "#]]
        .assert_eq(&diff);
        apply(&spec(&f.path, b"a = 1\nb = 3\n", 0o644)).expect("apply");
        assert_eq!(fs::read(&f.path).expect("read"), b"a = 1\nb = 3\n");
    }

    #[test]
    fn secret_diff_is_masked() {
        let Some(f) = fixture() else { return };
        let mut s = spec(&f.path, b"password = hunter2\n", 0o600);
        s.secret = true;
        let diff = check(&s).expect("check").diff.expect("diff");
        assert!(!diff.contains("hunter2"), "{diff}");
        assert!(
            diff.contains("secret content masked (0 -> 19 bytes)"),
            "{diff}"
        );
    }

    #[test]
    fn binary_diff_is_masked() {
        assert_eq!(
            render_diff("/x", Some(b"\xff\xfe"), b"ok\n", false),
            "# binary content differs (2 -> 3 bytes)\n"
        );
    }

    #[test]
    fn check_does_not_write() {
        let Some(f) = fixture() else { return };
        fs::write(&f.path, b"old\n").expect("seed");
        let state = check(&spec(&f.path, b"new\n", 0o600)).expect("check");
        assert!(!state.in_state);
        assert_eq!(fs::read(&f.path).expect("read"), b"old\n");
        assert!(check(&spec(&format!("{}.absent", f.path), b"x", 0o600)).is_ok());
        assert!(!Path::new(&format!("{}.absent", f.path)).exists());
    }

    #[test]
    fn symlink_is_replaced_by_regular_file() {
        let Some(f) = fixture() else { return };
        let target = format!("{}.target", f.path);
        fs::write(&target, b"target\n").expect("seed");
        std::os::unix::fs::symlink(&target, &f.path).expect("symlink");
        let s = spec(&f.path, b"own\n", 0o644);
        assert!(
            check(&s)
                .expect("check")
                .diff
                .unwrap_or_default()
                .contains("symlink will be replaced")
        );
        apply(&s).expect("apply");
        assert!(fs::symlink_metadata(&f.path).expect("stat").is_file());
        assert_eq!(
            fs::read(&target).expect("read"),
            b"target\n",
            "the symlink target is untouched"
        );
    }

    #[test]
    fn unknown_owner_fails_with_hint() {
        let s = FileSpec {
            path: "/tmp/x",
            content: b"",
            owner: "tpa-no-such-user",
            group: "root",
            mode: 0o644,
            secret: false,
        };
        let error = check(&s).expect_err("unknown owner");
        assert!(error.to_string().contains("create it with a user resource"));
    }

    #[test]
    fn metadata_is_never_fixed_through_a_symlink() {
        let Some(f) = fixture() else { return };
        let target = format!("{}.target", f.path);
        fs::write(&target, b"x").expect("seed");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::symlink(&target, &f.path).expect("symlink");
        // A link swapped in after the check: the metadata fix must refuse it, not chmod the target.
        let error = set_metadata(&f.path, 0, 0, 0o600).expect_err("a link");
        assert!(
            error
                .to_string()
                .starts_with(&format!("refusing {}: it is a symbolic link", f.path)),
            "{error}"
        );
        assert_eq!(mode_of(&target), 0o644, "the link's target is untouched");
    }

    #[test]
    fn a_file_resource_runs_through_the_trait() {
        let Some(f) = fixture() else { return };
        let file = File {
            path: f.path.clone(),
            content: tpa_common::resource::Content::from("a\n"),
            owner: "root".into(),
            group: "root".into(),
            mode: 0o600,
            secret: false,
        };
        let mut ctx = Ctx::default();
        assert!(!Apply::check(&file, &ctx).expect("check").in_state);
        Apply::apply(&file, &mut ctx).expect("apply");
        assert!(Apply::check(&file, &ctx).expect("check").in_state);
    }
}
