//! `tpa-controller configure DIR --architecture M1 …`: writes DIR/config.yml for a new M1
//! cluster (see `crate::configure`), and `git init` + a first commit unless `--no-git`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use ipnet::Ipv4Net;
use rand::seq::SliceRandom;

use crate::config::Platform;
use crate::configure::layout::{LayoutOptions, Manager};
use crate::configure::{self, HostEntry, Options};

/// Write config.yml for a new cluster (TPA's `configure`). Refuses an existing directory.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  tpa-controller configure ~/clusters/fosdem --architecture M1 --postgresql 15 \\\n      --platform docker --failover-manager repmgr --location-names brussels ghent"
)]
pub struct Args {
    /// The cluster directory to create; its last component is the cluster name. Must not exist.
    pub cluster_dir: PathBuf,
    /// The architecture: only M1 (TPA's PGD architectures are not supported).
    #[arg(short = 'a', long)]
    pub architecture: String,
    /// PostgreSQL (community) major version, e.g. 15. Same as
    /// `--postgres-flavour postgresql --postgres-version N`.
    #[arg(long, value_name = "N", conflicts_with_all = ["postgres_flavour", "postgres_version"])]
    pub postgresql: Option<String>,
    /// Postgres flavour: `postgresql`. EDB's flavours (epas, pgextended, edbpge) are refused.
    #[arg(long, requires = "postgres_version")]
    pub postgres_flavour: Option<String>,
    /// Postgres major version (with --postgres-flavour).
    #[arg(long, value_name = "N")]
    pub postgres_version: Option<String>,
    /// The failover manager: repmgr or patroni (efm, EDB's, is refused).
    #[arg(long)]
    pub failover_manager: String,
    /// Where hosts run: docker (containers here), bare (existing machines: give their names
    /// and addresses with --hostnames-from) or aws (EC2).
    #[arg(long, default_value = "docker")]
    pub platform: String,
    /// Operating system of the hosts: Debian (the only one our images and packages cover).
    #[arg(long, alias = "distribution", default_value = "Debian")]
    pub os: String,
    /// OS major version: 12 or 13 (default: 13 for PostgreSQL 17, which Debian 13 ships; else
    /// 12, which ships 15).
    #[arg(long)]
    pub os_version: Option<String>,
    /// Docker image (default tpa/debian:<os-version>) or, on AWS, the AMI name pattern
    /// (default debian-<os-version>-amd64-*).
    #[arg(long, alias = "os-image")]
    pub image: Option<String>,
    /// Location names, in order (default: one location, `main`).
    #[arg(long, num_args = 1.., value_name = "NAME")]
    pub location_names: Vec<String>,
    /// The location of the primary (default: the first location with data nodes).
    #[arg(long, value_name = "NAME")]
    pub primary_location: Option<String>,
    /// Postgres nodes in each location with data nodes (default 2).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub data_nodes_per_location: u32,
    /// A location holding only a repmgr witness (needs two other locations; not with patroni).
    #[arg(long, value_name = "NAME", conflicts_with = "single_node_location")]
    pub witness_only_location: Option<String>,
    /// A location holding one replica of the primary.
    #[arg(long, value_name = "NAME")]
    pub single_node_location: Option<String>,
    /// Add PgBouncer to the data nodes: refused, PgBouncer is not deployable yet.
    #[arg(long)]
    pub enable_pgbouncer: bool,
    /// Add HAProxy nodes (patroni): refused, HAProxy is not deployable yet.
    #[arg(long)]
    pub enable_haproxy: bool,
    /// Take host names (and addresses) from FILE: one host a line, `name [ip [private_ip]]`
    /// (one address: ip_address; two: public_ip and private_ip). `#` starts a comment.
    #[arg(long, value_name = "FILE")]
    pub hostnames_from: Option<PathBuf>,
    /// Use only host names matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub hostnames_pattern: Option<String>,
    /// Prefix each host name with the cluster name (`<cluster>-<name>`); on docker this keeps
    /// container names of different clusters apart.
    #[arg(long)]
    pub cluster_prefixed_hostnames: bool,
    /// Docker: pin the cluster's subnet (e.g. 10.33.7.0/28) and write each host's ip_address;
    /// default: provision picks a free /24 and the addresses. AWS: the VPC's CIDR.
    #[arg(long, value_name = "CIDR")]
    pub network: Option<Ipv4Net>,
    /// The person responsible for the cluster (cluster_tags.Owner).
    #[arg(long)]
    pub owner: Option<String>,
    /// Do not `git init` the cluster directory (default: a repository with a first commit).
    #[arg(long)]
    pub no_git: bool,
    /// Extra packages for every host (TPA's packages.common): refused, deploy does not install
    /// `packages` yet.
    #[arg(long, num_args = 1.., value_name = "PACKAGE")]
    pub extra_packages: Vec<String>,
    /// Install packages only from the cluster's local repository (`download-packages`).
    #[arg(long)]
    pub use_local_repo_only: bool,
    /// AWS region (default eu-west-1).
    #[arg(long, default_value = "eu-west-1")]
    pub region: String,
    /// AWS instance type (default t3.micro).
    #[arg(long, default_value = "t3.micro")]
    pub instance_type: String,
    /// AWS subnet of the first location (default: /28s of --network or 10.33.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<Ipv4Net>,
}

/// EDB flavours TPA offers, refused by name.
const EDB_FLAVOURS: &[&str] = &["epas", "edbpge", "pgextended", "edb-postgres-advanced"];

/// Checks the arguments and turns them into [`Options`].
pub fn options(a: &Args) -> anyhow::Result<Options> {
    let cluster_name = cluster_name(&a.cluster_dir)?;
    match a.architecture.as_str() {
        "M1" => {}
        other => bail!(
            "--architecture {other}: only M1 is supported (TPA's PGD and other architectures \
             are not)"
        ),
    }
    let (flavour, version) = match (&a.postgresql, &a.postgres_flavour, &a.postgres_version) {
        (Some(v), None, None) => ("postgresql".to_string(), v.clone()),
        (None, Some(f), Some(v)) => (f.to_ascii_lowercase(), v.clone()),
        (None, None, Some(v)) => ("postgresql".to_string(), v.clone()),
        _ => bail!("give the Postgres version: --postgresql N (or --postgres-version N)"),
    };
    if EDB_FLAVOURS.contains(&flavour.as_str()) {
        bail!(
            "--postgres-flavour {flavour}: EDB's proprietary flavours are not supported; use \
             --postgresql N (community PostgreSQL)"
        );
    }
    ensure!(
        flavour == "postgresql",
        "--postgres-flavour {flavour}: only `postgresql` is supported"
    );
    let major: u32 = version
        .parse()
        .ok()
        .filter(|v| (12..=18).contains(v))
        .with_context(|| format!("Postgres version `{version}`: give a major version, 12 to 18"))?;
    let manager = match a.failover_manager.as_str() {
        "repmgr" => Manager::Repmgr,
        "patroni" => Manager::Patroni,
        "efm" => bail!(
            "--failover-manager efm: EDB Failover Manager is proprietary and not supported; \
             use repmgr or patroni"
        ),
        other => bail!("--failover-manager {other}: use repmgr or patroni"),
    };
    let platform = Platform::parse(&a.platform)
        .with_context(|| format!("--platform {}: use docker, bare or aws", a.platform))?;
    ensure!(
        a.os.eq_ignore_ascii_case("debian"),
        "--os {}: only Debian hosts are supported (images, packages and the local repository \
         are Debian's)",
        a.os
    );
    let os_version = a
        .os_version
        .clone()
        .unwrap_or_else(|| if major == 17 { "13" } else { "12" }.to_string());
    ensure!(
        matches!(os_version.as_str(), "12" | "13"),
        "--os-version {os_version}: use 12 or 13"
    );
    if a.enable_pgbouncer {
        bail!("--enable-pgbouncer: the pgbouncer role is not deployable yet");
    }
    if a.enable_haproxy {
        bail!("--enable-haproxy: the haproxy role is not deployable yet");
    }
    if !a.extra_packages.is_empty() {
        bail!(
            "--extra-packages: deploy does not install TPA's `packages` yet, so the config \
             would be refused"
        );
    }
    let image = a.image.clone().unwrap_or_else(|| match platform {
        Platform::Aws => format!("debian-{os_version}-amd64-*"),
        _ => format!("tpa/debian:{os_version}"),
    });
    let locations = if a.location_names.is_empty() {
        vec!["main".to_string()]
    } else {
        a.location_names.clone()
    };
    Ok(Options {
        cluster_name,
        postgres_flavour: flavour,
        postgres_version: major.to_string(),
        manager,
        platform,
        image,
        layout: LayoutOptions {
            manager,
            locations,
            primary_location: a.primary_location.clone(),
            data_nodes_per_location: a.data_nodes_per_location,
            witness_only_location: a.witness_only_location.clone(),
            single_node_location: a.single_node_location.clone(),
        },
        network: a.network,
        owner: a.owner.clone(),
        use_local_repo_only: a.use_local_repo_only,
        region: a.region.clone(),
        instance_type: a.instance_type.clone(),
        subnet: a.subnet,
        ansible_user: None,
    })
}

/// The cluster name: the directory's last component, TPA's rule `^[_a-zA-Z0-9-]+$`.
fn cluster_name(dir: &Path) -> anyhow::Result<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: cannot take a cluster name from it", dir.display()))?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    ensure!(
        valid,
        "cluster directory {}: its name `{name}` is the cluster name; use letters, digits, `_` \
         and `-`",
        dir.display()
    );
    Ok(name.to_string())
}

/// Host names: from --hostnames-from, else the built-in list shuffled; filtered by the pattern.
fn hosts(a: &Args, o: &Options, count: usize) -> anyhow::Result<Vec<HostEntry>> {
    let pattern = a
        .hostnames_pattern
        .as_deref()
        .map(|p| regex::Regex::new(p).with_context(|| format!("--hostnames-pattern {p}")))
        .transpose()?;
    let (mut candidates, source) = match &a.hostnames_from {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--hostnames-from {}", file.display()))?;
            (
                configure::parse_hostnames(&text, &file.display().to_string())?,
                format!("--hostnames-from {}", file.display()),
            )
        }
        None => {
            let mut names: Vec<HostEntry> = configure::HOSTNAMES
                .iter()
                .map(|n| HostEntry {
                    name: n.to_string(),
                    ip: None,
                    private_ip: None,
                })
                .collect();
            names.shuffle(&mut rand::rng());
            (names, "the built-in host name list".to_string())
        }
    };
    if let Some(re) = &pattern {
        candidates.retain(|h| re.is_match(&h.name));
    }
    let source = match &a.hostnames_pattern {
        Some(p) => format!("{source} filtered by --hostnames-pattern {p}"),
        None => source,
    };
    let prefix = a
        .cluster_prefixed_hostnames
        .then_some(o.cluster_name.as_str());
    configure::pick_hosts(candidates, count, prefix, &source)
}

/// The command line as typed, quoted where a shell would need it.
fn command_line() -> String {
    let mut words = vec!["tpa-controller".to_string()];
    for a in std::env::args().skip(1) {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c));
        words.push(if plain {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        });
    }
    words.join(" ")
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let dir = &a.cluster_dir;
    if dir.symlink_metadata().is_ok() {
        bail!(
            "{} already exists: configure writes new cluster directories only (nothing was \
             changed); choose another directory or remove this one",
            dir.display()
        );
    }
    let o = options(a)?;
    let (layout, text) = configure::generate(&o, |n| hosts(a, &o, n), &command_line())?;
    // What we write must load: on docker a failure is a bug of ours. On bare and aws it is
    // TPA's format ahead of our provision: written anyway, with the reasons.
    if let Err(errors) = crate::config::Cluster::parse(&text, "config.yml") {
        if o.platform == Platform::Docker {
            bail!("the generated config.yml does not validate (a bug):\n{errors}");
        }
        eprintln!(
            "warning: config.yml is TPA's {} layout, which provision and deploy do not take \
             yet:\n{errors}",
            o.platform
        );
    }
    let git = (!a.no_git).then(find_git).transpose()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("config.yml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    if let Some(git) = git {
        git_commit(&git, dir, &o.cluster_name)?;
    }
    println!(
        "wrote {} ({} hosts in {} location(s); primary in {})",
        path.display(),
        layout.nodes.len(),
        o.layout.locations.len(),
        layout.primary_location
    );
    Ok(())
}

fn find_git() -> anyhow::Result<PathBuf> {
    let ok = crate::process::command("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        ok,
        "git is not installed (or not on PATH): install it, or pass --no-git to skip the \
         cluster directory's repository (nothing was written)"
    );
    Ok(PathBuf::from("git"))
}

fn git_commit(git: &Path, dir: &Path, cluster: &str) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = crate::process::command(git)
            .current_dir(dir)
            .args(args)
            .output()
            .with_context(|| format!("running git {}", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    run(&["init", "--quiet", &format!("--initial-branch={cluster}")])?;
    run(&["add", "config.yml"])?;
    // The user's identity when git has one; else a stand-in, for this commit only.
    let has_identity = crate::process::command(git)
        .current_dir(dir)
        .args(["config", "user.email"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut commit: Vec<&str> = Vec::new();
    if !has_identity {
        commit.extend([
            "-c",
            "user.name=tpa-controller",
            "-c",
            "user.email=tpa-controller@localhost",
        ]);
    }
    commit.extend([
        "commit",
        "--quiet",
        "-m",
        "Created by tpa-controller configure",
    ]);
    run(&commit)
}
