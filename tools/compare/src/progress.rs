//! The progress bar on the terminal while a comparison runs (standard error; hidden when
//! that is not a terminal or with `--no-progress`).

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar of one run.
#[derive(Debug)]
pub struct RunProgress {
    bar: ProgressBar,
    /// Deliveries counted before the current phase (the bar shows this phase's).
    base: AtomicU64,
}

impl RunProgress {
    /// A bar labelled `label` (e.g. "ws 100 subs, run 1/3"), drawn only if `visible`.
    pub fn new(label: &str, visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{prefix:>32} {wide_bar} {pos:>8}/{len:<8} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label.to_owned());
        Self {
            bar,
            base: AtomicU64::new(0),
        }
    }

    /// A step without a count.
    pub fn stage(&self, message: &'static str) {
        self.bar.set_length(0);
        self.bar.set_position(0);
        self.bar.set_message(message);
    }

    /// Connecting `total` subscribers.
    pub fn connecting(&self, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
        self.bar.set_message("subscribers connected");
    }

    /// `count` subscribers connected.
    pub fn connected(&self, count: usize) {
        self.bar.set_position(count as u64);
    }

    /// A phase starts: `expected` deliveries, `so_far` counted before it.
    pub fn publishing(&self, phase: &'static str, expected: u64, so_far: u64) {
        self.base.store(so_far, Ordering::Relaxed);
        self.bar.set_length(expected);
        self.bar.set_position(0);
        self.bar.set_message(phase);
    }

    /// `total` deliveries so far (all phases).
    pub fn delivered(&self, total: u64) {
        self.bar
            .set_position(total.saturating_sub(self.base.load(Ordering::Relaxed)));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
