//! Reading a dpkg status file: which packages a host image already has installed.

use std::collections::BTreeSet;

/// Names of the packages that `status` (the text of a `/var/lib/dpkg/status` file) records as
/// installed. Half-installed or removed-but-configured packages do not count: the host would
/// need them again.
pub fn installed_packages(status: &str) -> BTreeSet<String> {
    let mut installed = BTreeSet::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut is_installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status:") {
                // "<want> <flag> <state>", e.g. "install ok installed" or "hold ok installed".
                is_installed = v.split_whitespace().nth(2) == Some("installed");
            }
        }
        if let (Some(name), true) = (name, is_installed) {
            installed.insert(name.to_owned());
        }
    }
    installed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fully_installed_packages_count() {
        let status = "\
Package: sudo
Status: install ok installed
Version: 1.9.13p3-1+deb12u1

Package: vim
Status: deinstall ok config-files
Version: 2:9.0

Package: locales
Status: hold ok installed
Description: GNU C Library: National Language (locale) data
 continuation line with Status: install ok installed

Package: broken
Status: install reinstreq half-installed
";
        let got: Vec<String> = installed_packages(status).into_iter().collect();
        assert_eq!(got, ["locales", "sudo"]);
    }
}
