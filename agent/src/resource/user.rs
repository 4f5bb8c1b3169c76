//! `User` resource: a local account, checked through the passwd database and created or
//! corrected with the standard `useradd`/`usermod` tools.
//!
//! Example spec: `User { name: "postgres", group: "postgres", home: "/var/lib/postgresql", shell: "/bin/bash", system: true }`.
//! `system` only matters at creation; an existing account is never deleted or renumbered.

use nix::unistd::{Gid, Group, User};

use super::{Apply, Ctx, ResourceError, State, run};

/// The parts of an existing account that a `User` resource manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub group: String,
    pub home: String,
    pub shell: String,
}

impl Apply for tpa_common::resource::User {
    /// Compares the account with the desired group, home and shell; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        let desired = self.account();
        let name = &self.name;
        match current_account(name)? {
            None => Ok(State::differs(
                Some(format!(
                    "+user {name} (group {}, home {}, shell {})\n",
                    desired.group, desired.home, desired.shell
                )),
                "user absent",
            )),
            Some(current) => {
                let changes = account_changes(&current, &desired);
                if changes.is_empty() {
                    Ok(State::in_state("user exists as desired"))
                } else {
                    Ok(State::differs(
                        Some(changes.join("\n") + "\n"),
                        "user differs",
                    ))
                }
            }
        }
    }

    /// Creates the user, or corrects its primary group, home and shell; idempotent.
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        let desired = self.account();
        let (argv, message) = match current_account(&self.name)? {
            None => (
                useradd_argv(&self.name, &desired, self.system),
                "user created",
            ),
            Some(current) => match usermod_argv(&self.name, &current, &desired) {
                Some(argv) => (argv, "user updated"),
                None => return Ok("user exists as desired".to_owned()),
            },
        };
        run::run_checked(
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            ctx.timeouts.probe,
        )?;
        Ok(message.to_owned())
    }
}

trait Desired {
    fn account(&self) -> Account;
}

impl Desired for tpa_common::resource::User {
    fn account(&self) -> Account {
        Account {
            group: self.group.clone(),
            home: self.home.clone(),
            shell: self.shell.clone(),
        }
    }
}

/// `useradd [--system] --gid G --home-dir H --shell S [--create-home] NAME`. The home is created
/// unless it is the conventional "no home" path.
pub fn useradd_argv(name: &str, desired: &Account, system: bool) -> Vec<String> {
    let mut argv = vec!["useradd".to_owned()];
    if system {
        argv.push("--system".to_owned());
    }
    for (flag, value) in [
        ("--gid", &desired.group),
        ("--home-dir", &desired.home),
        ("--shell", &desired.shell),
    ] {
        argv.push(flag.to_owned());
        argv.push(value.clone());
    }
    argv.push(
        if desired.home == "/nonexistent" {
            "--no-create-home"
        } else {
            "--create-home"
        }
        .to_owned(),
    );
    argv.push(name.to_owned());
    argv
}

/// `usermod` with only the flags that differ, or None when the account is as desired. The home
/// directory is re-pointed, never moved: data under the old home belongs to the operator.
pub fn usermod_argv(name: &str, current: &Account, desired: &Account) -> Option<Vec<String>> {
    let mut argv = vec!["usermod".to_owned()];
    let fields = [
        ("--gid", &current.group, &desired.group),
        ("--home", &current.home, &desired.home),
        ("--shell", &current.shell, &desired.shell),
    ];
    for (flag, have, want) in fields {
        if have != want {
            argv.push(flag.to_owned());
            argv.push(want.clone());
        }
    }
    if argv.len() == 1 {
        return None;
    }
    argv.push(name.to_owned());
    Some(argv)
}

/// "# shell /bin/sh -> /bin/bash" lines for each differing field.
pub fn account_changes(current: &Account, desired: &Account) -> Vec<String> {
    [
        ("group", &current.group, &desired.group),
        ("home", &current.home, &desired.home),
        ("shell", &current.shell, &desired.shell),
    ]
    .into_iter()
    .filter(|(_, have, want)| have != want)
    .map(|(field, have, want)| format!("# {field} {have} -> {want}"))
    .collect()
}

fn current_account(name: &str) -> Result<Option<Account>, ResourceError> {
    let Some(user) = User::from_name(name).map_err(|source| ResourceError::Lookup {
        name: name.to_owned(),
        source,
    })?
    else {
        return Ok(None);
    };
    let group = match Group::from_gid(Gid::from_raw(user.gid.as_raw())) {
        Ok(Some(group)) => group.name,
        _ => user.gid.to_string(),
    };
    Ok(Some(Account {
        group,
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(group: &str, home: &str, shell: &str) -> Account {
        Account {
            group: group.into(),
            home: home.into(),
            shell: shell.into(),
        }
    }

    #[test]
    fn useradd_creates_home_unless_nonexistent() {
        let argv = useradd_argv(
            "postgres",
            &account("postgres", "/var/lib/postgresql", "/bin/bash"),
            true,
        );
        assert_eq!(
            argv.join(" "),
            "useradd --system --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash --create-home postgres"
        );
        let argv = useradd_argv(
            "barman",
            &account("barman", "/nonexistent", "/usr/sbin/nologin"),
            false,
        );
        assert!(argv.contains(&"--no-create-home".to_owned()));
        assert!(!argv.contains(&"--system".to_owned()));
    }

    #[test]
    fn usermod_only_changes_what_differs() {
        let current = account("postgres", "/var/lib/postgresql", "/bin/sh");
        assert_eq!(usermod_argv("postgres", &current, &current), None);
        let desired = account("postgres", "/var/lib/postgresql", "/bin/bash");
        assert_eq!(
            usermod_argv("postgres", &current, &desired)
                .expect("differs")
                .join(" "),
            "usermod --shell /bin/bash postgres"
        );
        assert_eq!(
            account_changes(&current, &desired),
            ["# shell /bin/sh -> /bin/bash"]
        );
    }

    #[test]
    fn checks_read_the_real_databases() {
        let ctx = Ctx::default();
        let user = |name: &str, group: &str, home: &str, shell: &str| tpa_common::resource::User {
            name: name.into(),
            group: group.into(),
            home: home.into(),
            shell: shell.into(),
            system: true,
        };
        let root = current_account("root")
            .expect("lookup")
            .expect("root exists");
        assert_eq!(root.group, "root");
        assert!(
            user("root", &root.group, &root.home, &root.shell)
                .check(&ctx)
                .expect("check")
                .in_state
        );
        let state = user("root", "root", &root.home, "/bin/tpa-shell")
            .check(&ctx)
            .expect("check");
        assert!(!state.in_state);
        assert!(state.diff.unwrap_or_default().contains("-> /bin/tpa-shell"));
        assert!(
            !user("tpa-no-such-user", "x", "/", "/bin/sh")
                .check(&ctx)
                .expect("check")
                .in_state
        );
    }
}
