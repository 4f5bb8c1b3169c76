//! A signed apt repository served over HTTP on the cluster network: it stands in for the
//! internet (PGDG, a vendor's archive) for hosts that have none here. The repository is the
//! directory `download-packages` filled, signed with an OpenPGP key made for the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ed25519 signing key in a private GnuPG home.
pub struct SigningKey {
    home: tempfile::TempDir,
    pub fingerprint: String,
}

impl SigningKey {
    pub fn new(name: &str) -> SigningKey {
        let home = tempfile::Builder::new()
            .prefix("tpa-e2e-gpg-")
            .tempdir()
            .expect("gpg home");
        let key = SigningKey {
            home,
            fingerprint: String::new(),
        };
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <e2e@example.org>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = key.gpg(&["--with-colons", "--list-keys"]);
        let fingerprint = String::from_utf8_lossy(&listing)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("a fingerprint");
        SigningKey { fingerprint, ..key }
    }

    fn gpg(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--quiet"])
            .args(args)
            .output()
            .expect("gpg (scripts/install-deps --tests installs gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The public key, ASCII-armoured.
    pub fn public(&self) -> Vec<u8> {
        self.gpg(&["--armor", "--export"])
    }

    /// Signs `<repo>/Release` into `<repo>/InRelease`.
    pub fn sign_release(&self, repo: &Path) {
        let inrelease = repo.join("InRelease");
        let _ = std::fs::remove_file(&inrelease);
        self.gpg(&[
            "--clearsign",
            "--output",
            inrelease.to_str().expect("UTF-8 path"),
            repo.join("Release").to_str().expect("UTF-8 path"),
        ]);
    }
}

/// Serves the files under `root` (GET only, keep-alive) on `ip`, on a free port, until the
/// test process ends.
pub fn serve(ip: &str, root: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind the mirror's port");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = connection(stream, &root);
            });
        }
    });
    addr
}

fn connection(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(
            &mut (&mut reader).take(content_length),
            &mut std::io::sink(),
        )?;
        let mut words = request.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let file = path
            .strip_prefix('/')
            .filter(|p| !p.split('/').any(|c| c == ".."))
            .map(|p| root.join(p.split('?').next().unwrap_or_default()));
        let body = match (method, file) {
            ("GET", Some(file)) if file.is_file() => std::fs::read(file).ok(),
            _ => None,
        };
        match body {
            Some(body) => {
                write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                )?;
                writer.write_all(&body)?;
            }
            None => write!(
                writer,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            )?,
        }
        writer.flush()?;
    }
}

/// The gateway of `container`'s network: the address of this machine that it reaches.
pub fn gateway(container: &str) -> String {
    let (ok, out) = crate::run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}",
            container,
        ],
    );
    assert!(ok, "docker inspect {container}: {out}");
    out.split_whitespace()
        .next()
        .expect("a network gateway")
        .to_string()
}
