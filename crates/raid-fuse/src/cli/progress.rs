//! The progress bar of long admin work (scrub, rebuild): a spinner until
//! the work has been measured, then a bar with percent, rate and time left.
//! A bar of length 0 would read "100%" before anything was done.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `label` work whose total arrives with the first
/// report that measured it.
pub struct WorkBar {
    bar: ProgressBar,
    label: &'static str,
}

impl WorkBar {
    pub fn new(label: &'static str) -> Self {
        let bar = ProgressBar::no_length();
        bar.set_style(
            ProgressStyle::with_template(&format!("{label} {{spinner}} {{msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message("starting");
        bar.enable_steady_tick(Duration::from_millis(200));
        WorkBar { bar, label }
    }

    /// Show `done` of `total` bytes; a total of 0 means not measured yet.
    pub fn update(&self, done: u64, total: u64) {
        if total > 0 && self.bar.length() != Some(total) {
            if self.bar.length().is_none() {
                self.bar.disable_steady_tick();
                self.bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{} {{bar:40}} {{percent:>3}}% {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}",
                        self.label
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            self.bar.set_length(total);
        }
        self.bar.set_position(done);
    }

    /// Whether the total is known (the bar shows a percentage).
    pub fn measured(&self) -> bool {
        self.bar.length().is_some()
    }

    /// Print a line to stderr, above the bar. Not `ProgressBar::println`,
    /// which drops the line when the bar is hidden (stderr not a terminal:
    /// a pipe, a log, a systemd unit), where it matters most.
    pub fn println(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| eprintln!("{}", line.as_ref()));
    }

    /// The work ended: remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// The work failed: leave the bar as it stands.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::WorkBar;

    #[test]
    fn no_percentage_before_the_total_is_known() {
        let b = WorkBar::new("scrub");
        assert!(!b.measured());
        b.update(0, 0);
        assert!(!b.measured(), "an unmeasured total shows no 100%");
        b.update(5, 100);
        assert!(b.measured());
        b.update(100, 100);
        b.finish();
    }
}
