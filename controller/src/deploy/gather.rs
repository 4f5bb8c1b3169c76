//! Gather: everything the planner reads, as one owned [`ClusterState`]. Bootstraps the agents,
//! asks every host for its facts, resolves each host's settings and the live topology, gets
//! every Postgres host's server certificate, the `replication` role's password, computes the SCRAM verifiers and reads drift. All of a
//! deploy's IO before the apply happens here (or in the agents it calls).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tpa_common::facts::Facts;
use tpa_common::query::SqlQuery;
use tpa_common::resource::Secret;

use super::passwords;
use super::report::DeployLog;
use super::ship;
use crate::agent_client::AgentClient;
use crate::agent_client::renew::{self, Renewal, TrustSync};
use crate::bootstrap::{AgentChange, Bootstrap};
use crate::cluster_dir::{ClusterDir, write_if_changed};
use crate::config::{Cluster, Instance, PostgresUser};
use crate::inventory::Inventory;
use crate::local_repo;
use crate::pki::Pki;
use crate::planner::inspect::{self, Drift, Row};
use crate::planner::{
    self, ClusterState, HostState, Verifiers, barman, replica, repmgr, ssh_trust, topology,
};
use crate::platform::{self, AnyPlatform, Platform};
use crate::secrets::{Secrets, password_key};
use crate::server_tls::{self, ServerCert};
use crate::settings::{HostSettings, PostgresSettings};

/// What gather hands on: the planner's input, and the agents that will apply the plan.
pub struct Gathered {
    pub agents: BTreeMap<String, AgentClient>,
    pub state: ClusterState,
}

/// Gathers the live state of every deployed host (`check`: install, enrol and generate
/// nothing; at most `forks` bootstraps at once), printing what it does to `log`. `apt_keys`:
/// the repositories' keys, loaded by the caller before it provisioned anything
/// ([`crate::apt_keys::load`]).
pub async fn gather(
    dir: &ClusterDir,
    cluster: &Cluster,
    inventory: &Inventory,
    apt_keys: BTreeMap<String, crate::apt_keys::AptKey>,
    check: bool,
    forks: usize,
    log: &mut DeployLog,
) -> anyhow::Result<Gathered> {
    let root = dir.root();
    let mut secrets = Secrets::open(root, cluster.vault_name.as_deref())?;
    let pki = Pki::load_or_create(root, &secrets)?.with_policy(cluster.cert_policy());
    let identity = pki.controller_identity(root, &secrets)?;
    // Clients verify Postgres with this file: sslrootcert=<dir>/ca.crt.
    write_if_changed(&root.join("ca.crt"), pki.ca_cert_pem())?;

    let mut bootstrap = Bootstrap::new(&pki, &identity, &dir.ssh_config())?;
    bootstrap.replace_ca = crate::pki::rotation::reenrol_pending(root);
    let platform = platform::for_inventory(inventory)?;
    let agents =
        bootstrap_agents(&bootstrap, &platform, cluster, inventory, check, forks, log).await?;
    let agents =
        renew_certificates(agents, &platform, inventory, &pki, &identity, check, log).await?;

    let phase = Instant::now();
    let repo_mount = platform.local_repo_on_host();
    let facts = all_facts(cluster, &agents).await?;
    let topology = topology::resolve(cluster, inventory, &facts)?;
    // Hosts that cannot see local-repo/ get it through their agent.
    let mut shipped = match repo_mount {
        Some(_) => BTreeMap::new(),
        None => ship_repos(dir, &agents, &facts, check, log).await?,
    };
    let mut hosts = BTreeMap::new();
    for (name, facts) in facts {
        let instance = deployed_instance(cluster, &name);
        let local_repo = match &repo_mount {
            Some(mount) => host_local_repo(dir, Some(mount), &facts),
            None => shipped.remove(&name),
        };
        hosts.insert(
            name,
            HostState {
                settings: HostSettings::resolve(cluster, instance, facts.os_major()),
                local_repo,
                facts,
                server_cert: None,
                ha_cert: None,
                log_cert: None,
            },
        );
    }
    let primary = topology
        .primary()
        .and_then(|name| Some((deployed_instance(cluster, name), agents.get(name)?.clone())));
    // Every Postgres host serves TLS: the primary to clients, each upstream to its replicas.
    // One round trip per host, all at once (this is on a no-op re-deploy's path too).
    let requests: Vec<_> = topology
        .members
        .keys()
        .filter_map(|name| {
            let pg = &hosts.get(name)?.settings.postgres;
            let address = inventory.host(name)?.address;
            let mut client = agents.get(name)?.clone();
            let pki = &pki;
            Some(async move {
                let cert = server_tls::ensure(
                    &mut client,
                    pki,
                    name,
                    address,
                    &pg.cert_file,
                    &pg.key_file,
                    check,
                )
                .await;
                (name.clone(), cert)
            })
        })
        .collect();
    for (name, cert) in futures_util::future::join_all(requests).await {
        let host = hosts.get_mut(&name).expect("requested for known hosts");
        match cert? {
            ServerCert::Issued(pem) => {
                log.line(format!("[{name}] tls: server certificate issued"));
                host.server_cert = Some(pem);
            }
            ServerCert::Current(pem) => host.server_cert = Some(pem),
            ServerCert::WouldIssue => log.line(format!(
                "[{name}] tls: a server certificate would be issued"
            )),
        }
    }
    for kind in [HostCert::Ha, HostCert::Log] {
        host_certs(
            kind, cluster, inventory, &agents, &pki, &mut hosts, check, log,
        )
        .await?;
    }
    log.line(format!(
        "facts: {} host(s) in {:.1}s",
        hosts.len(),
        phase.elapsed().as_secs_f64()
    ));
    for change in &topology.changes {
        log.line(format!("live state: {change}"));
    }

    let replicas = planner::has_replicas(&topology);
    // repmgr manages the cluster when it is the failover manager and some host streams.
    let repmgr = repmgr::manages(cluster, &topology);
    let backed_up = barman::wanted(cluster);
    let (verifiers, drift) = match primary {
        Some((instance, mut client)) => {
            let host = &hosts[&instance.name];
            let mut users = instance.vars.postgres_users.clone();
            if replicas {
                users.push(replica::user());
            }
            if repmgr {
                users.push(repmgr::user());
            }
            if backed_up {
                users.extend(barman::users());
            }
            if planner::patroni::configured(cluster) {
                users.push(planner::patroni::rewind_user());
            }
            primary_state(
                &mut client,
                &mut secrets,
                instance,
                &users,
                host,
                check,
                log,
            )
            .await?
        }
        None => (Verifiers::default(), Vec::new()),
    };
    let replication_password = replicas
        .then(|| secrets.get(&password_key(replica::REPLICATION_USER)))
        .flatten()
        .map(|p| Secret::new(p.to_string()));
    let repmgr_password = repmgr
        .then(|| secrets.get(&password_key(repmgr::USER)))
        .flatten()
        .map(|p| Secret::new(p.to_string()));
    let barman_passwords = barman::users()
        .into_iter()
        .filter(|_| backed_up)
        .filter_map(|u| {
            let p = secrets.get(&password_key(&u.username))?;
            Some((u.username, Secret::new(p.to_string())))
        })
        .collect();
    let rewind_password = planner::patroni::configured(cluster)
        .then(|| secrets.get(&password_key(planner::patroni::REWIND_USER)))
        .flatten()
        .map(|p| Secret::new(p.to_string()));
    let patroni_password = if planner::patroni::configured(cluster) {
        let (password, generated) = if check {
            match secrets.get(&password_key(planner::patroni::REST_USER)) {
                Some(p) => (Some(p.to_string()), false),
                None => (None, false),
            }
        } else {
            let (p, g) = secrets.password_or_generate(planner::patroni::REST_USER);
            (Some(p.as_str().to_string()), g)
        };
        if generated {
            secrets.save()?;
            log.line("patroni: REST API password generated into the secrets store");
        }
        password.map(Secret::new)
    } else {
        None
    };
    let ssh_keys = if backed_up {
        ssh_keys(&mut secrets, &cluster.name, check)?
    } else {
        None
    };
    Ok(Gathered {
        agents,
        state: ClusterState {
            hosts,
            topology,
            ca_pem: pki.ca_cert_pem().to_string(),
            apt_keys,
            verifiers,
            replication_password,
            repmgr_password,
            barman_passwords,
            drift,
            ssh_keys,
            hooks: Vec::new(),
            patroni_password,
            rewind_password,
        },
    })
}

/// A host certificate besides Postgres' (both for server and client use): etcd's and
/// Patroni's, or rsyslog's on a host of a cluster with a log server and no HA certificate.
#[derive(Debug, Clone, Copy)]
enum HostCert {
    Ha,
    Log,
}

impl HostCert {
    fn needed(self, cluster: &Cluster, instance: &Instance) -> bool {
        match self {
            HostCert::Ha => planner::patroni::needs_ha_cert(cluster, instance),
            HostCert::Log => planner::logserver::needs_log_cert(cluster, instance),
        }
    }

    fn paths(self, cluster: &str) -> (String, String) {
        match self {
            HostCert::Ha => planner::patroni::ha_cert_paths(cluster),
            HostCert::Log => planner::logserver::log_cert_paths(cluster),
        }
    }

    fn label(self) -> &'static str {
        match self {
            HostCert::Ha => "etcd/Patroni",
            HostCert::Log => "rsyslog",
        }
    }

    fn slot(self, host: &mut HostState) -> &mut Option<String> {
        match self {
            HostCert::Ha => &mut host.ha_cert,
            HostCert::Log => &mut host.log_cert,
        }
    }
}

/// The `kind` certificate on every host that needs it: the key made on the host, the CA
/// signing it for server and client use (`check`: nothing issued).
#[allow(clippy::too_many_arguments)]
async fn host_certs(
    kind: HostCert,
    cluster: &Cluster,
    inventory: &Inventory,
    agents: &BTreeMap<String, AgentClient>,
    pki: &Pki,
    hosts: &mut BTreeMap<String, HostState>,
    check: bool,
    log: &mut DeployLog,
) -> anyhow::Result<()> {
    let (cert_file, key_file) = kind.paths(&cluster.name);
    let requests: Vec<_> = cluster
        .instances
        .iter()
        .filter(|i| kind.needed(cluster, i) && hosts.contains_key(&i.name))
        .filter_map(|i| {
            let address = inventory.host(&i.name)?.address;
            let mut client = agents.get(&i.name)?.clone();
            let (cert_file, key_file) = (&cert_file, &key_file);
            Some(async move {
                let cert = server_tls::ensure_for(
                    &mut client,
                    pki,
                    (&i.name, address),
                    (cert_file, key_file),
                    crate::pki::CertUsage::ServerAndClient,
                    check,
                )
                .await;
                (i.name.clone(), cert)
            })
        })
        .collect();
    for (name, cert) in futures_util::future::join_all(requests).await {
        let host = hosts.get_mut(&name).expect("requested for known hosts");
        let label = kind.label();
        match cert? {
            ServerCert::Issued(pem) => {
                log.line(format!("[{name}] tls: {label} certificate issued"));
                *kind.slot(host) = Some(pem);
            }
            ServerCert::Current(pem) => *kind.slot(host) = Some(pem),
            ServerCert::WouldIssue => log.line(format!(
                "[{name}] tls: an {label} certificate would be issued"
            )),
        }
    }
    Ok(())
}

/// The barman and postgres users' SSH key pairs (planner/ssh_trust.rs), generated on first
/// use and saved in the secrets store before any host gets them (`check`: never generated).
fn ssh_keys(
    secrets: &mut Secrets,
    cluster: &str,
    check: bool,
) -> anyhow::Result<Option<ssh_trust::SshKeys>> {
    let mut pair = |name: &str, user: &str| {
        let pair = secrets.ssh_key_or_generate(name, &format!("{user}@{cluster}"), check)?;
        anyhow::Ok(pair.map(|p| ssh_trust::KeyPair {
            private: Secret::new(p.private.to_string()),
            public: p.public,
        }))
    };
    let barman = pair(ssh_trust::BARMAN_KEY_SECRET, "barman")?;
    let postgres = pair(ssh_trust::POSTGRES_KEY_SECRET, "postgres")?;
    if !check {
        secrets.save()?;
    }
    Ok(barman
        .zip(postgres)
        .map(|(barman, postgres)| ssh_trust::SshKeys { barman, postgres }))
}

/// Bootstraps every deployed host's agent, in parallel, and returns a client per host.
async fn bootstrap_agents(
    bootstrap: &Bootstrap<'_>,
    platform: &AnyPlatform,
    cluster: &Cluster,
    inventory: &Inventory,
    check: bool,
    forks: usize,
    log: &mut DeployLog,
) -> anyhow::Result<BTreeMap<String, AgentClient>> {
    let phase = Instant::now();
    let hosts: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| cluster.instance(&h.name).is_some_and(|i| !i.provision_only))
        .collect();
    // Each bootstrap runs ssh (and may copy the agent binary): bounded by --forks.
    let results: Vec<_> = futures_util::stream::iter(
        hosts
            .iter()
            .map(|h| bootstrap.host(h, platform.agent_endpoint(h), check)),
    )
    .buffered(forks.max(1))
    .collect()
    .await;
    let mut agents = BTreeMap::new();
    let mut failures = Vec::new();
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok((client, change)) => {
                let word = match change {
                    AgentChange::Unchanged => "agent current",
                    AgentChange::Updated => "agent updated",
                    AgentChange::Enrolled => "agent installed and enrolled",
                };
                log.line(format!("[{}] bootstrap: {word}", host.name));
                agents.insert(host.name.clone(), client);
            }
            Err(e) => failures.push(format!("{}: {e:#}", host.name)),
        }
    }
    if !failures.is_empty() {
        bail!(
            "bootstrap failed:\n  {}\nfix the cause and deploy again",
            failures.join("\n  ")
        );
    }
    log.line(format!(
        "bootstrap: {} host(s) in {:.1}s",
        agents.len(),
        phase.elapsed().as_secs_f64()
    ));
    Ok(agents)
}

/// Renews the certificate of every agent that needs it ([`agent_client::renew`]), all at once, over the
/// channel bootstrap opened; returns the clients to use from then on.
async fn renew_certificates(
    agents: BTreeMap<String, AgentClient>,
    platform: &AnyPlatform,
    inventory: &Inventory,
    pki: &Pki,
    identity: &crate::pki::CertifiedKey,
    check: bool,
    log: &mut DeployLog,
) -> anyhow::Result<BTreeMap<String, AgentClient>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let results = futures_util::future::join_all(agents.into_iter().map(|(name, client)| {
        let host = inventory.host(&name);
        let addr = host.map(|h| platform.agent_endpoint(h));
        let ips: Vec<_> = host.map(|h| vec![h.address]).unwrap_or_default();
        async move {
            let Some(addr) = addr else {
                return (name, Ok((client, Renewal::Current, TrustSync::Current)));
            };
            let result = async {
                let (client, renewal) =
                    renew::renew_if_due(client, addr, pki, identity, &ips, now, check).await?;
                let (client, trust) =
                    renew::sync_trust(client, addr, pki.ca_cert_pem(), identity, check).await?;
                anyhow::Ok((client, renewal, trust))
            }
            .await;
            (name, result)
        }
    }))
    .await;
    let mut renewed = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok((client, outcome, trust)) => {
                match trust {
                    TrustSync::Current | TrustSync::Unknown => {}
                    TrustSync::Installed => log.line(format!(
                        "[{name}] agent trusts the cluster's CAs now ({})",
                        crate::pki::rotation::describe(pki.ca_cert_pem())
                    )),
                    TrustSync::WouldInstall => log.line(format!(
                        "[{name}] agent would trust the cluster's CAs ({})",
                        crate::pki::rotation::describe(pki.ca_cert_pem())
                    )),
                }
                match outcome {
                    Renewal::Current => {}
                    Renewal::Renewed { not_after } => log.line(format!(
                        "[{name}] agent certificate renewed (expires {})",
                        crate::pki::unix_text(not_after)
                    )),
                    Renewal::WouldRenew(reason) => log.line(format!(
                        "[{name}] agent certificate would be renewed ({reason})"
                    )),
                    Renewal::Unknown => log.line(format!(
                        "[{name}] agent certificate not checked: the agent does not report it"
                    )),
                }
                renewed.insert(name, client);
            }
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "renewing agent certificates failed:\n  {}\nfix the cause and deploy again",
            failures.join("\n  ")
        );
    }
    Ok(renewed)
}

/// Facts from every agent, in parallel, each with the state of the Postgres at the host's
/// data directory (every host is asked, so a Postgres where config.yml expects none is seen).
async fn all_facts(
    cluster: &Cluster,
    agents: &BTreeMap<String, AgentClient>,
) -> anyhow::Result<BTreeMap<String, Facts>> {
    let results = futures_util::future::join_all(agents.iter().map(|(name, client)| {
        let mut client = client.clone();
        let pg = PostgresSettings::resolve(&cluster.name, &deployed_instance(cluster, name).vars);
        async move {
            let facts = client.facts(Some(&pg.data_dir), pg.port).await?;
            Ok::<_, anyhow::Error>((name.clone(), facts))
        }
    }))
    .await;
    results.into_iter().collect()
}

/// The primary's verifiers (reusing the salts its roles have) and drift, printing generated
/// passwords and drift to `log`.
async fn primary_state(
    client: &mut AgentClient,
    secrets: &mut Secrets,
    instance: &Instance,
    users: &[PostgresUser],
    host: &HostState,
    check: bool,
    log: &mut DeployLog,
) -> anyhow::Result<(Verifiers, Vec<Drift>)> {
    let running = host.facts.postgres.as_ref().is_some_and(|p| p.running);
    let port = host.settings.postgres.port;
    // Both queries at once: each is a psql on the primary, and a no-op deploy waits for them.
    let mut second = client.clone();
    let (stored, objects) = tokio::try_join!(
        query_if(
            running && !users.is_empty(),
            client,
            port,
            inspect::STORED_VERIFIERS_SQL
        ),
        query_if(running, &mut second, port, inspect::OBJECTS_SQL),
    )?;
    let existing = stored.map(inspect::stored_verifiers).unwrap_or_default();
    let (verifiers, generated) = passwords::verifiers(secrets, users, &existing, check)?;
    for user in generated {
        log.line(format!(
            "[{}] password generated for {user} (see show-password)",
            instance.name
        ));
    }
    let drift = objects
        .map(|rows| inspect::drift(&rows, &instance.vars))
        .unwrap_or_default();
    for d in &drift {
        log.line(format!("[{}] drift: {d}", instance.name));
    }
    Ok((verifiers, drift))
}

/// Runs read-only `sql` as postgres on the host, through the agent's typed query call.
async fn query(client: &mut AgentClient, port: u16, sql: &str) -> anyhow::Result<Vec<Row>> {
    client.query(SqlQuery::postgres(port, sql)).await
}

/// [`query`] when `wanted`, else nothing.
async fn query_if(
    wanted: bool,
    client: &mut AgentClient,
    port: u16,
    sql: &str,
) -> anyhow::Result<Option<Vec<Row>>> {
    if wanted {
        query(client, port, sql).await.map(Some)
    } else {
        Ok(None)
    }
}

/// The cluster's local repository for the host's OS, as the host sees it, when the platform
/// puts `<dir>/local-repo` on the hosts at `mount` (docker bind-mounts it).
fn host_local_repo(dir: &ClusterDir, mount: Option<&Path>, facts: &Facts) -> Option<String> {
    let repo = local_repo::find_repo_for_host(
        dir.root(),
        facts.os_major()?,
        &facts.os_codename,
        &facts.os_version_id,
    )?;
    let on_host = local_repo::host_repo_dir(dir.root(), &repo, mount?)?;
    Some(on_host.display().to_string())
}

/// Ships each host's local repository (the directory TPA's lookup picks for its OS) through
/// its agent, all hosts at once; returns where each host holds it. Hosts with no repository
/// for their OS get none (they use the sources they already have).
async fn ship_repos(
    dir: &ClusterDir,
    agents: &BTreeMap<String, AgentClient>,
    facts: &BTreeMap<String, Facts>,
    check: bool,
    log: &mut DeployLog,
) -> anyhow::Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let mut listings: BTreeMap<std::path::PathBuf, ship::RepoListing> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, facts) in facts {
        let Some(repo) = facts.os_major().and_then(|major| {
            local_repo::find_repo_for_host(
                dir.root(),
                major,
                &facts.os_codename,
                &facts.os_version_id,
            )
        }) else {
            continue;
        };
        if !listings.contains_key(&repo) {
            let at = repo.clone();
            let listing = tokio::task::spawn_blocking(move || ship::list(&at)).await??;
            listings.insert(repo.clone(), listing);
        }
        let Some(client) = agents.get(name) else {
            continue;
        };
        jobs.push((name.clone(), client.clone(), repo));
    }
    let listings = &listings;
    let results = futures_util::future::join_all(jobs.into_iter().map(
        |(name, mut client, repo)| async move {
            let shipped = ship::ship(&mut client, &listings[&repo], check)
                .await
                .with_context(|| format!("shipping the local repository to {name}"));
            (name, shipped)
        },
    ))
    .await;
    let mut on_host = BTreeMap::new();
    for (name, shipped) in results {
        let shipped = shipped?;
        if shipped.sent > 0 || shipped.removed > 0 {
            log.line(format!(
                "[{name}] local-repo: {} file(s), {:.1} MB {}, {} removed ({:.1}s)",
                shipped.sent,
                shipped.bytes as f64 / 1e6,
                if check { "would be shipped" } else { "shipped" },
                shipped.removed,
                started.elapsed().as_secs_f64()
            ));
        }
        on_host.insert(name, shipped.host_dir);
    }
    Ok(on_host)
}

/// The config.yml instance of a host that bootstrap reached (every one is an instance).
fn deployed_instance<'a>(cluster: &'a Cluster, name: &str) -> &'a Instance {
    cluster
        .instance(name)
        .expect("bootstrapped hosts are instances of config.yml")
}
