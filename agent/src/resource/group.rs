//! `Group` resource: a local group, checked through the group database and created with
//! `groupadd`.
//!
//! Example spec: `Group { name: "postgres", system: true }`. `system` only matters at creation;
//! an existing group is never deleted or renumbered.

use tpa_common::resource::Group;

use super::{Apply, Ctx, ResourceError, State, run};

impl Apply for Group {
    /// In state when the group exists; never writes.
    fn check(&self, _ctx: &Ctx) -> Result<State, ResourceError> {
        if lookup_group(&self.name)?.is_some() {
            Ok(State::in_state("group exists"))
        } else {
            Ok(State::differs(
                Some(format!("+group {}\n", self.name)),
                "group absent",
            ))
        }
    }

    /// Creates the group if it does not exist.
    fn apply(&self, ctx: &mut Ctx) -> Result<String, ResourceError> {
        if lookup_group(&self.name)?.is_some() {
            return Ok("group exists".to_owned());
        }
        let argv = groupadd_argv(&self.name, self.system);
        run::run_checked(
            &argv.iter().map(String::as_str).collect::<Vec<_>>(),
            ctx.timeouts.probe,
        )?;
        Ok("group created".to_owned())
    }
}

/// `groupadd [--system] NAME`.
pub fn groupadd_argv(name: &str, system: bool) -> Vec<String> {
    let mut argv = vec!["groupadd".to_owned()];
    if system {
        argv.push("--system".to_owned());
    }
    argv.push(name.to_owned());
    argv
}

fn lookup_group(name: &str) -> Result<Option<nix::unistd::Group>, ResourceError> {
    nix::unistd::Group::from_name(name).map_err(|source| ResourceError::Lookup {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> Group {
        Group {
            name: name.into(),
            system: true,
        }
    }

    #[test]
    fn groupadd_system_flag() {
        assert_eq!(
            groupadd_argv("postgres", true).join(" "),
            "groupadd --system postgres"
        );
        assert_eq!(groupadd_argv("app", false).join(" "), "groupadd app");
    }

    #[test]
    fn checks_read_the_real_database() {
        let ctx = Ctx::default();
        assert!(group("root").check(&ctx).expect("check").in_state);
        assert!(
            !group("tpa-no-such-group")
                .check(&ctx)
                .expect("check")
                .in_state
        );
    }
}
