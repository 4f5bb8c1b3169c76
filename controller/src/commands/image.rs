//! `tpa-controller image build`: builds a host image without any registry.

use std::time::Instant;

use anyhow::bail;

use crate::platform::docker::{self, image};

pub async fn build(os: &str, os_version: u32, mirror: &str) -> anyhow::Result<()> {
    if !os.eq_ignore_ascii_case("debian") {
        bail!(
            "--os {os} is not supported: tpa builds Debian images (--os Debian --os-version 12|13)"
        );
    }
    let docker = docker::connect().await?;
    let started = Instant::now();
    let wanted = image::ImageRef::debian(os_version);
    println!("{}", image::building_notice(&wanted, mirror));
    let built = image::build(&docker, os_version, mirror).await?;
    println!("{}", image::built_notice(&built, started.elapsed()));
    Ok(())
}
