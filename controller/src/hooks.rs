//! Hooks: the operator's executables in `<cluster dir>/hooks/`, named after TPA's hook points,
//! that deploy ships to the hosts and runs there through the agents (`docs/hooks.md`).
//!
//! This module reads and validates the directory (names, file types, the `# tpa-hosts:` line);
//! `planner::hooks` decides where in each host's stages they run and with what environment.

use std::fmt;
use std::path::Path;

use crate::config::Cluster;
use crate::selector::Selector;

/// Largest hook accepted (it travels whole in one Apply call).
pub const MAX_BYTES: usize = 1024 * 1024;

/// How many of a hook's first lines are searched for its `# tpa-hosts:` line.
const HEADER_LINES: usize = 20;

/// TPA's hook points that tpa runs, in deploy order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Point {
    PreDeploy,
    PostRepo,
    PreInitdb,
    PostgresConfig,
    PostgresConfigFinal,
    BarmanPreConfig,
    PostDeploy,
}

impl Point {
    pub const ALL: [Point; 7] = [
        Point::PreDeploy,
        Point::PostRepo,
        Point::PreInitdb,
        Point::PostgresConfig,
        Point::PostgresConfigFinal,
        Point::BarmanPreConfig,
        Point::PostDeploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Point::PreDeploy => "pre-deploy",
            Point::PostRepo => "post-repo",
            Point::PreInitdb => "pre-initdb",
            Point::PostgresConfig => "postgres-config",
            Point::PostgresConfigFinal => "postgres-config-final",
            Point::BarmanPreConfig => "barman-pre-config",
            Point::PostDeploy => "post-deploy",
        }
    }

    pub fn parse(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated hook.
#[derive(Clone, PartialEq, Eq)]
pub struct HookFile {
    pub point: Point,
    /// Its name in `hooks/` (`pre-deploy` or `pre-deploy.sh`).
    pub file_name: String,
    pub content: Vec<u8>,
    /// Its `# tpa-hosts:` line; None: every host the point applies to.
    pub hosts: Option<Selector>,
}

impl fmt::Debug for HookFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookFile")
            .field("point", &self.point)
            .field("file_name", &self.file_name)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("hosts", &self.hosts.as_ref().map(ToString::to_string))
            .finish()
    }
}

/// Reads `<dir>/hooks/` (absent: no hooks), in deploy order, or every reason it cannot be used.
pub fn read(dir: &Path, cluster: &Cluster) -> Result<Vec<HookFile>, Vec<String>> {
    let hooks_dir = dir.join("hooks");
    let meta = match std::fs::symlink_metadata(&hooks_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(vec![format!("{}: {e}", hooks_dir.display())]),
    };
    if !meta.is_dir() {
        return Err(vec![format!(
            "{}: must be a directory of executables (not a symbolic link or a file)",
            hooks_dir.display()
        )]);
    }
    let real_dir = std::fs::canonicalize(&hooks_dir)
        .map_err(|e| vec![format!("{}: {e}", hooks_dir.display())])?;
    let entries =
        std::fs::read_dir(&hooks_dir).map_err(|e| vec![format!("{}: {e}", hooks_dir.display())])?;
    let mut names: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => match e.file_name().into_string() {
                Ok(n) => names.push(n),
                Err(n) => errors.push(format!(
                    "{}/{}: not a UTF-8 name",
                    hooks_dir.display(),
                    n.to_string_lossy()
                )),
            },
            Err(e) => errors.push(format!("{}: {e}", hooks_dir.display())),
        }
    }
    names.sort();
    let mut hooks = Vec::new();
    for name in names {
        // Editors' and VCS's hidden files.
        if name.starts_with('.') {
            continue;
        }
        let path = hooks_dir.join(&name);
        let shown = format!("hooks/{name}");
        let point = match point_of(&name) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{shown}: {e}"));
                continue;
            }
        };
        match read_one(&path, &real_dir) {
            Ok((content, executable)) => {
                if !executable {
                    errors.push(format!(
                        "{shown}: not executable; run `chmod +x {}`",
                        path.display()
                    ));
                    continue;
                }
                match parse(point, &name, content, cluster) {
                    Ok(h) => hooks.push(h),
                    Err(e) => errors.push(format!("{shown}{e}")),
                }
            }
            Err(e) => errors.push(format!("{shown}: {e}")),
        }
    }
    for point in Point::ALL {
        let files: Vec<&str> = hooks
            .iter()
            .filter(|h: &&HookFile| h.point == point)
            .map(|h| h.file_name.as_str())
            .collect();
        if files.len() > 1 {
            errors.push(format!(
                "hooks/: {} are the same hook point ({point}); keep one",
                files.join(" and ")
            ));
        }
    }
    if errors.is_empty() {
        hooks.sort_by_key(|h| h.point);
        Ok(hooks)
    } else {
        Err(errors)
    }
}

/// The hook point a file name stands for, or why it is not a hook.
pub fn point_of(name: &str) -> Result<Point, String> {
    if let Some(stem) = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
    {
        let target = Point::parse(stem).map_or("<point>", Point::as_str);
        return Err(format!(
            "TPA's Ansible task hooks are not supported: tpa runs executables on the hosts, \
             through their agents. Rewrite the tasks as a program (e.g. a shell script starting \
             with `#!/bin/sh` and `set -eu`, doing what the tasks did; the host and cluster are in \
             TPA_* environment variables, see docs/hooks.md), save it as hooks/{target}, \
             `chmod +x` it and remove {name}"
        ));
    }
    let stem = name.strip_suffix(".sh").unwrap_or(name);
    Point::parse(stem).ok_or_else(|| {
        format!(
            "not a hook point; name a hook after one of {} (a .sh suffix is fine), or move \
             the file out of hooks/",
            Point::ALL.map(Point::as_str).join(", ")
        )
    })
}

/// A hook's content and whether its owner may run it: a regular file, or a symbolic link to
/// one inside the hooks directory.
fn read_one(path: &Path, real_dir: &Path) -> Result<(Vec<u8>, bool), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let link = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if link.file_type().is_symlink() {
        let target = std::fs::canonicalize(path)
            .map_err(|e| format!("a symbolic link that cannot be followed: {e}"))?;
        if target.parent() != Some(real_dir) {
            return Err(format!(
                "a symbolic link to {}, outside hooks/; copy the file into hooks/ instead",
                target.display()
            ));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file; a hook is one executable file".to_string());
    }
    if meta.len() > MAX_BYTES as u64 {
        return Err(format!(
            "{} bytes, larger than the {MAX_BYTES} bytes a hook may have",
            meta.len()
        ));
    }
    let content = std::fs::read(path).map_err(|e| e.to_string())?;
    Ok((content, meta.permissions().mode() & 0o100 != 0))
}

/// Validates a hook's content and reads its `# tpa-hosts:` line. Errors start with `:` or
/// `:<line>:`, to follow the file name.
pub fn parse(
    point: Point,
    file_name: &str,
    content: Vec<u8>,
    cluster: &Cluster,
) -> Result<HookFile, String> {
    if !(content.starts_with(b"#!") || content.starts_with(b"\x7fELF")) {
        return Err(
            ": starts with neither `#!` nor an ELF header, so the host cannot run it; add an \
             interpreter line such as `#!/bin/sh`"
                .to_string(),
        );
    }
    let mut hosts = None;
    let text = String::from_utf8_lossy(&content);
    for (n, line) in text.lines().take(HEADER_LINES).enumerate() {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix("tpa-hosts:") else {
            continue;
        };
        if hosts.is_some() {
            return Err(format!(":{}: a second `# tpa-hosts:` line", n + 1));
        }
        hosts = Some(
            Selector::parse(value.trim(), cluster)
                .map_err(|e| format!(":{}: tpa-hosts: {e}", n + 1))?,
        );
    }
    Ok(HookFile {
        point,
        file_name: file_name.to_string(),
        content,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn cluster() -> Cluster {
        crate::selector::tests::cluster()
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn names_map_to_points_and_yaml_is_refused() {
        assert_eq!(point_of("pre-deploy"), Ok(Point::PreDeploy));
        assert_eq!(point_of("post-deploy.sh"), Ok(Point::PostDeploy));
        let yaml = point_of("pre-deploy.yml").unwrap_err();
        assert!(yaml.contains("save it as hooks/pre-deploy"), "{yaml}");
        assert!(yaml.contains("remove pre-deploy.yml"), "{yaml}");
        assert!(
            point_of("notes.txt")
                .unwrap_err()
                .contains("not a hook point")
        );
        assert!(point_of("pre-deploy.py").is_err());
    }

    #[test]
    fn reads_a_directory_in_deploy_order() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        write(&hooks, "post-deploy.sh", "#!/bin/sh\ntrue\n", 0o755);
        write(
            &hooks,
            "pre-deploy",
            "#!/bin/sh\n# tpa-hosts: role:replica, ulb\ntrue\n",
            0o700,
        );
        write(&hooks, ".pre-deploy.swp", "junk", 0o600);
        let read = read(dir.path(), &cluster()).unwrap();
        let points: Vec<_> = read.iter().map(|h| h.point).collect();
        assert_eq!(points, [Point::PreDeploy, Point::PostDeploy]);
        assert_eq!(
            read[0].hosts.as_ref().map(ToString::to_string).as_deref(),
            Some("role:replica,ulb")
        );
        assert_eq!(read[1].hosts, None);
        // No hooks directory: no hooks.
        assert_eq!(super::read(&hooks, &cluster()).unwrap(), vec![]);
    }

    #[test]
    fn every_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        write(&hooks, "pre-deploy", "#!/bin/sh\n", 0o644);
        write(&hooks, "post-repo", "echo no interpreter\n", 0o755);
        write(&hooks, "pre-initdb", "#!/bin/sh\n#tpa-hosts: nope\n", 0o755);
        write(&hooks, "post-deploy", "#!/bin/sh\n", 0o755);
        write(&hooks, "post-deploy.sh", "#!/bin/sh\n", 0o755);
        write(&hooks, "postgres-config.yml", "- debug: msg=x\n", 0o644);
        let outside = dir.path().join("elsewhere");
        write(dir.path(), "elsewhere", "#!/bin/sh\n", 0o755);
        std::os::unix::fs::symlink(&outside, hooks.join("barman-pre-config")).unwrap();
        std::fs::create_dir(hooks.join("postgres-config-final")).unwrap();
        let errors = read(dir.path(), &cluster()).unwrap_err().join("\n");
        for expected in [
            "hooks/pre-deploy: not executable; run `chmod +x",
            "hooks/post-repo: starts with neither `#!`",
            "hooks/pre-initdb:2: tpa-hosts: `nope`: config.yml has no host `nope`",
            "hooks/: post-deploy and post-deploy.sh are the same hook point (post-deploy)",
            "hooks/postgres-config.yml: TPA's Ansible task hooks are not supported",
            "hooks/barman-pre-config: a symbolic link to",
            "hooks/postgres-config-final: not a regular file",
        ] {
            assert!(errors.contains(expected), "{expected} in\n{errors}");
        }
    }

    #[test]
    fn a_link_inside_the_directory_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        write(&hooks, "post-deploy", "#!/bin/sh\n", 0o755);
        std::os::unix::fs::symlink("post-deploy", hooks.join("pre-deploy")).unwrap();
        assert_eq!(read(dir.path(), &cluster()).unwrap().len(), 2);
    }
}
