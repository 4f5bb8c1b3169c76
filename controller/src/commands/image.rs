//! `tpa-controller image build`: builds a host image without any registry.

use std::time::Instant;

use anyhow::bail;

use crate::image;
use crate::platform::docker;

pub async fn build(os: &str, os_version: u32, mirror: &str) -> anyhow::Result<()> {
    if !os.eq_ignore_ascii_case("debian") {
        bail!(
            "--os {os} is not supported: tpa builds Debian images (--os Debian --os-version 12|13)"
        );
    }
    let docker = docker::connect().await?;
    let started = Instant::now();
    println!("building tpa/debian:{os_version} from {mirror} (debootstrap, no registry)");
    let built = image::build(&docker, os_version, mirror).await?;
    println!(
        "built {} in {:.1}s",
        built.full(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
