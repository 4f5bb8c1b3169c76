//! Progress of a long operation: on a terminal, one spinner per host showing its current
//! stage, with finished lines printed above them; otherwise plain lines, one per event.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
    bars: BTreeMap<String, ProgressBar>,
}

impl Progress {
    /// Spinners for `hosts` when stdout is a terminal, plain lines otherwise.
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress {
                multi: None,
                bars: BTreeMap::new(),
            };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{spinner} {prefix:<12} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = hosts
            .into_iter()
            .map(|host| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(host.to_string());
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(120));
                (host.to_string(), bar)
            })
            .collect();
        Progress {
            multi: Some(multi),
            bars,
        }
    }

    /// `host` started `stage`.
    pub fn stage(&self, host: &str, stage: &str) {
        if let Some(bar) = self.bars.get(host) {
            bar.set_message(stage.to_string());
        }
    }

    /// A finished line, printed above the spinners (or plainly).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => println!("{line}"),
        }
    }

    /// Removes every spinner; later output is plain.
    pub fn finish(&self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
    }
}
