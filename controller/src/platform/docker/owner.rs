//! Which cluster directory owns a Docker container or network.
//!
//! Docker names are global to the engine, and two cluster directories may use the same
//! `cluster_name` (and so the same network and container names). Every object tpa creates
//! carries the cluster name (TPA's `Cluster` label) and the owning directory's absolute
//! path; provision and deprovision touch only objects whose directory label is theirs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// TPA's label: the cluster name.
pub const CLUSTER_LABEL: &str = "Cluster";
/// The absolute path of the cluster directory that created the object.
pub const DIR_LABEL: &str = "tpa.cluster.dir";

/// The labels every object provision creates carries (besides `cluster_tags`).
pub fn labels(cluster: &str, dir: &Path) -> HashMap<String, String> {
    HashMap::from([
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
        (DIR_LABEL.to_string(), dir.display().to_string()),
    ])
}

/// Who an existing object belongs to, as far as this cluster directory is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This cluster directory.
    Us,
    /// A cluster of the same name in another directory (which may no longer exist).
    SameName { dir: PathBuf, dir_exists: bool },
    /// A cluster of the same name made by a tpa that did not record its directory, and
    /// not in this directory's inventory.
    SameNameUnknownDir,
    /// Another cluster (its name and directory when labelled), or nothing tpa made.
    Other {
        cluster: Option<String>,
        dir: Option<PathBuf>,
    },
}

/// Classifies an object by its labels. `recorded`: this directory's inventory names the
/// object, which proves ownership when the labelled directory was moved here, or when the
/// object predates the directory label. `dir_exists` tells whether a directory still holds
/// a cluster.
pub fn owner(
    labels: &HashMap<String, String>,
    cluster: &str,
    dir: &Path,
    recorded: bool,
    dir_exists: impl Fn(&Path) -> bool,
) -> Owner {
    let labelled_dir = labels.get(DIR_LABEL).map(PathBuf::from);
    if labels.get(CLUSTER_LABEL).map(String::as_str) != Some(cluster) {
        return Owner::Other {
            cluster: labels.get(CLUSTER_LABEL).cloned(),
            dir: labelled_dir,
        };
    }
    match labelled_dir {
        Some(d) if d == dir => Owner::Us,
        Some(d) => {
            let exists = dir_exists(&d);
            if recorded && !exists {
                Owner::Us
            } else {
                Owner::SameName {
                    dir: d,
                    dir_exists: exists,
                }
            }
        }
        None if recorded => Owner::Us,
        None => Owner::SameNameUnknownDir,
    }
}

/// Whether `dir` still holds a cluster directory.
pub fn holds_cluster(dir: &Path) -> bool {
    dir.join("config.yml").is_file()
}

/// The message for an object of our cluster name that another directory owns: which
/// cluster has the name, and what to do. `None` for [`Owner::Us`] and [`Owner::Other`].
pub fn name_taken(object: &str, owner: &Owner, cluster: &str, our_dir: &Path) -> Option<String> {
    let choose = format!(
        "choose another cluster_name in {}",
        our_dir.join("config.yml").display()
    );
    match owner {
        Owner::SameName {
            dir,
            dir_exists: true,
        } => Some(format!(
            "cluster_name `{cluster}` is already used by the cluster in {d}, which owns {object}: \
             deprovision that cluster (tpa-controller deprovision {d}) or {choose}",
            d = dir.display()
        )),
        Owner::SameName {
            dir,
            dir_exists: false,
        } => Some(format!(
            "cluster_name `{cluster}` is already used by a cluster whose directory {d} no longer \
             exists, and it owns {object}: remove what it left (its containers and network carry \
             the label {DIR_LABEL}={d}; docker rm -f / docker network rm them) or {choose}",
            d = dir.display()
        )),
        Owner::SameNameUnknownDir => Some(format!(
            "cluster_name `{cluster}` is already used by another cluster directory, which owns \
             {object} (an older tpa made it without recording which directory): deprovision \
             that cluster or {choose}"
        )),
        Owner::Us | Owner::Other { .. } => None,
    }
}

/// "cluster `x` in /dir", "cluster `x`", or "nothing tpa made", for messages about
/// [`Owner::Other`].
pub fn describe_other(cluster: Option<&str>, dir: Option<&Path>) -> String {
    match (cluster, dir) {
        (Some(c), Some(d)) => format!("cluster `{c}` in {}", d.display()),
        (Some(c), None) => format!("cluster `{c}`"),
        (None, _) => "no tpa cluster".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: &str = "/clusters/fosdem";

    fn owner_of(labels: &[(&str, &str)], recorded: bool, exists: bool) -> Owner {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        owner(&labels, "fosdem", Path::new(HERE), recorded, |_| exists)
    }

    #[test]
    fn our_directory_label_means_ours() {
        let ours = labels("fosdem", Path::new(HERE));
        assert_eq!(
            owner(&ours, "fosdem", Path::new(HERE), false, |_| true),
            Owner::Us
        );
    }

    #[test]
    fn same_name_from_another_directory_is_not_ours() {
        let theirs = [("Cluster", "fosdem"), (DIR_LABEL, "/home/ann/fosdem")];
        let expected = Owner::SameName {
            dir: "/home/ann/fosdem".into(),
            dir_exists: true,
        };
        assert_eq!(owner_of(&theirs, false, true), expected);
        // Even if our inventory names it (a copied directory): the other one still exists.
        assert_eq!(owner_of(&theirs, true, true), expected);
        let message = name_taken(
            "Docker network fosdem",
            &expected,
            "fosdem",
            Path::new(HERE),
        )
        .unwrap();
        expect_test::expect![[r#"cluster_name `fosdem` is already used by the cluster in /home/ann/fosdem, which owns Docker network fosdem: deprovision that cluster (tpa-controller deprovision /home/ann/fosdem) or choose another cluster_name in /clusters/fosdem/config.yml"#]]
        .assert_eq(&message);
    }

    #[test]
    fn a_moved_directory_keeps_what_its_inventory_recorded() {
        let moved = [("Cluster", "fosdem"), (DIR_LABEL, "/old/place")];
        assert_eq!(owner_of(&moved, true, false), Owner::Us);
        assert_eq!(
            owner_of(&moved, false, false),
            Owner::SameName {
                dir: "/old/place".into(),
                dir_exists: false
            }
        );
    }

    #[test]
    fn unlabelled_objects_are_ours_only_when_recorded() {
        let legacy = [("Cluster", "fosdem")];
        assert_eq!(owner_of(&legacy, true, true), Owner::Us);
        assert_eq!(owner_of(&legacy, false, true), Owner::SameNameUnknownDir);
    }

    #[test]
    fn other_clusters_and_strangers() {
        let other = [("Cluster", "brugge"), (DIR_LABEL, "/b")];
        assert_eq!(
            owner_of(&other, true, true),
            Owner::Other {
                cluster: Some("brugge".into()),
                dir: Some("/b".into())
            }
        );
        assert_eq!(
            owner_of(&[], false, true),
            Owner::Other {
                cluster: None,
                dir: None
            }
        );
    }
}
