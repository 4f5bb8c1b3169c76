//! `tpa-controller show-password <dir> <user>` and `store-password <dir> <user> [--random]`:
//! TPA's commands to read and set a database user's password in the cluster's encrypted
//! secrets store. A stored password reaches the database on the next deploy. Passwords are
//! read from the terminal without echo or from one line of stdin, never from arguments.

use std::io::{BufRead, IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

use crate::commands::provision::load_cluster;
use crate::secrets::{Secrets, generate_password, password_key};

/// Prints the stored password of `user` and a newline on stdout, nothing else (for scripts).
pub fn show(cluster_dir: &Path, user: &str) -> anyhow::Result<()> {
    let secrets = open(cluster_dir)?;
    let Some(password) = secrets.get(&password_key(user)) else {
        bail!(
            "no password stored for {user}: deploy generates one for users with \
             generate_password, or use store-password"
        );
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{password}")
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// Stores a password for `user`: generated with `random`, else typed twice without echo on a
/// terminal, else one line read from stdin.
pub fn store(cluster_dir: &Path, user: &str, random: bool) -> anyhow::Result<()> {
    let mut secrets = open(cluster_dir)?;
    let password = if random {
        generate_password()
    } else if std::io::stdin().is_terminal() {
        prompt_twice(user)?
    } else {
        read_one_line(std::io::stdin().lock())?
    };
    secrets.set(&password_key(user), password.as_str().to_string());
    secrets.save()?;
    println!("stored password for {user}: applied on the next deploy");
    Ok(())
}

fn open(cluster_dir: &Path) -> anyhow::Result<Secrets> {
    let (dir, cluster) = load_cluster(cluster_dir)?;
    Secrets::open(dir.root(), cluster.vault_name.as_deref())
}

fn prompt_twice(user: &str) -> anyhow::Result<Zeroizing<String>> {
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("New password for {user}: "))
            .context("cannot read the password from the terminal")?,
    );
    if first.is_empty() {
        bail!("the password is empty: nothing stored");
    }
    let second = Zeroizing::new(
        rpassword::prompt_password("Again, to confirm: ")
            .context("cannot read the password from the terminal")?,
    );
    if first != second {
        bail!("the two passwords differ: nothing stored");
    }
    Ok(first)
}

/// The first line of `input` without its line ending: how scripts pipe a password in.
fn read_one_line(mut input: impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    input
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let len = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(len);
    if line.is_empty() {
        bail!(
            "no password on stdin: pipe one line to store-password, run it from a terminal to \
             be prompted, or use --random; nothing stored"
        );
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_read_without_its_line_ending() {
        let read = |s: &str| read_one_line(s.as_bytes()).map(|p| p.as_str().to_string());
        assert_eq!(read("s3cret\n").expect("line"), "s3cret");
        assert_eq!(read("s3cret\r\nsecond line\n").expect("crlf"), "s3cret");
        assert_eq!(read("no newline").expect("eof"), "no newline");
        assert_eq!(read(" spaces kept \n").expect("spaces"), " spaces kept ");
    }

    #[test]
    fn an_empty_line_or_empty_input_stores_nothing() {
        for input in ["", "\n", "\r\n"] {
            let err = read_one_line(input.as_bytes()).expect_err("empty");
            assert!(err.to_string().contains("nothing stored"), "{err}");
        }
    }
}
