//! Host selectors, one syntax for `cmd` and for the `# tpa-hosts:` line of hooks: `all`, a host
//! name, `role:<role>` or `location:<location>`, several separated by commas (a host matches
//! when any of them does). Roles are config.yml's (with the implicit `postgres`), not the live
//! ones: a host that config.yml calls `replica` but that was promoted is still `role:replica`.
//!
//! Pure: parsed and resolved against the typed config only.

use std::fmt;

use crate::config::{Cluster, Instance, Role};

/// One selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Host(String),
    Role(Role),
    Location(String),
}

/// A union of terms, checked against config.yml when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Target>);

impl Selector {
    /// Parses `text` (e.g. `role:replica,ulb`), naming what config.yml does not have.
    pub fn parse(text: &str, cluster: &Cluster) -> Result<Selector, String> {
        let mut targets = Vec::new();
        for term in text.split(',').map(str::trim) {
            if term.is_empty() {
                return Err(format!(
                    "`{text}`: empty selector; write all, a host name, role:<role> or \
                     location:<location>, several separated by commas"
                ));
            }
            targets.push(target(term, cluster)?);
        }
        Ok(Selector(targets))
    }

    /// Whether `instance` is selected.
    pub fn matches(&self, instance: &Instance) -> bool {
        self.0.iter().any(|t| match t {
            Target::All => true,
            Target::Host(name) => instance.name == *name,
            Target::Role(role) => instance.has_role(*role),
            Target::Location(l) => instance.location.as_deref() == Some(l.as_str()),
        })
    }

    /// The selected hosts, in config.yml's order.
    pub fn select<'a>(&self, cluster: &'a Cluster) -> Vec<&'a Instance> {
        cluster
            .instances
            .iter()
            .filter(|i| self.matches(i))
            .collect()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|t| match t {
                Target::All => "all".to_string(),
                Target::Host(h) => h.clone(),
                Target::Role(r) => format!("role:{r}"),
                Target::Location(l) => format!("location:{l}"),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

fn target(term: &str, cluster: &Cluster) -> Result<Target, String> {
    if term == "all" {
        return Ok(Target::All);
    }
    if let Some(role) = term.strip_prefix("role:") {
        return Role::parse(role).map(Target::Role).ok_or_else(|| {
            format!(
                "`{term}`: no role `{role}`; roles are {}",
                Role::ALL.map(|(_, n)| n).join(", ")
            )
        });
    }
    if let Some(location) = term.strip_prefix("location:") {
        if cluster.locations.iter().any(|l| l.name == location) {
            return Ok(Target::Location(location.to_string()));
        }
        let known: Vec<&str> = cluster.locations.iter().map(|l| l.name.as_str()).collect();
        return Err(format!(
            "`{term}`: config.yml has no location `{location}`; locations are {}",
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    if term.contains(':') {
        return Err(format!(
            "`{term}`: unknown selector; write all, a host name, role:<role> or location:<location>"
        ));
    }
    if cluster.instance(term).is_some() {
        return Ok(Target::Host(term.to_string()));
    }
    Err(format!(
        "`{term}`: config.yml has no host `{term}`; hosts are {}",
        cluster.instance_names()
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Location;

    pub(crate) fn cluster() -> Cluster {
        let yaml = "\
architecture: M1
cluster_name: hkc
cluster_vars:
  postgres_version: '16'
locations:
  - Name: brussels
  - Name: ghent
instances:
  - Name: ulb
    node: 1
    location: brussels
    role: [primary]
  - Name: vub
    node: 2
    location: ghent
    role: [replica]
    upstream: ulb
  - Name: kul
    node: 3
    location: ghent
    role: [barman]
";
        let cluster = Cluster::parse(yaml, "config.yml").expect("valid config");
        assert_eq!(
            cluster.locations[0],
            Location {
                name: "brussels".into()
            }
        );
        cluster
    }

    fn names(selector: &str) -> Result<Vec<String>, String> {
        let c = cluster();
        let s = Selector::parse(selector, &c)?;
        Ok(s.select(&c).iter().map(|i| i.name.clone()).collect())
    }

    #[test]
    fn selects_by_host_role_location_and_union() {
        assert_eq!(names("all").unwrap(), ["ulb", "vub", "kul"]);
        assert_eq!(names("vub").unwrap(), ["vub"]);
        assert_eq!(names("role:replica").unwrap(), ["vub"]);
        assert_eq!(names("role:postgres").unwrap(), ["ulb", "vub"]);
        assert_eq!(names("location:ghent").unwrap(), ["vub", "kul"]);
        assert_eq!(names("ulb, role:barman").unwrap(), ["ulb", "kul"]);
    }

    #[test]
    fn bad_selectors_say_what_exists() {
        assert_eq!(
            names("nope").unwrap_err(),
            "`nope`: config.yml has no host `nope`; hosts are ulb, vub, kul"
        );
        assert!(
            names("role:replicas")
                .unwrap_err()
                .starts_with("`role:replicas`: no role `replicas`; roles are primary, replica")
        );
        assert_eq!(
            names("location:paris").unwrap_err(),
            "`location:paris`: config.yml has no location `paris`; locations are brussels, ghent"
        );
        assert!(names("group:x").unwrap_err().contains("unknown selector"));
        assert!(names("ulb,").unwrap_err().contains("empty selector"));
    }

    #[test]
    fn displays_as_written() {
        let c = cluster();
        let s = Selector::parse("all,role:replica,location:ghent,ulb", &c).unwrap();
        assert_eq!(s.to_string(), "all,role:replica,location:ghent,ulb");
    }
}
