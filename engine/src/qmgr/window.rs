//! Per-destination concurrency feedback, as Postfix's queue manager does it
//! (`qmgr_queue_unthrottle` / `qmgr_queue_throttle`).
//!
//! A destination starts with `initial_destination_concurrency` connections.
//! Every delivery that completes without a connection or handshake failure
//! adds the positive feedback to a success counter, every failed connection
//! subtracts the negative feedback from a failure counter; each whole unit
//! moves the window by one, within 1 and the transport's concurrency limit.
//! The window only grows while it is in use (fewer than `busy + initial`),
//! so an idle destination does not accumulate credit. Failures also count
//! *pseudo-cohorts* (1/window each): after
//! `<transport>_destination_concurrency_failed_cohort_limit` of them in a
//! row the destination is declared dead and its mail deferred without
//! connecting for a while; a success resets the count.
//!
//! Feedback amounts are a number or `1/concurrency` (the amount shrinks as
//! the window grows: one more connection per window's worth of successes).

/// How much one event moves the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    Fixed(f64),
    /// `1/concurrency`: the inverse of the current window.
    PerConcurrency,
}

impl Feedback {
    /// Postfix's syntax: a non-negative number, `1/N`, or `1/concurrency`.
    pub fn parse(value: &str) -> Result<Feedback, String> {
        let v = value.trim();
        let bad = || format!("bad feedback value \"{v}\" (expected a number or 1/concurrency)");
        if let Some(den) = v.strip_prefix("1/") {
            let den = den.trim();
            if den == "concurrency" {
                return Ok(Feedback::PerConcurrency);
            }
            let n: f64 = den.parse().map_err(|_| bad())?;
            return (n > 0.0 && n.is_finite())
                .then(|| Feedback::Fixed(1.0 / n))
                .ok_or_else(bad);
        }
        let n: f64 = v.parse().map_err(|_| bad())?;
        (n >= 0.0 && n.is_finite())
            .then_some(Feedback::Fixed(n))
            .ok_or_else(bad)
    }

    fn amount(self, window: usize) -> f64 {
        match self {
            Feedback::Fixed(n) => n,
            Feedback::PerConcurrency => 1.0 / window.max(1) as f64,
        }
    }
}

/// A transport's feedback parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackSettings {
    pub positive: Feedback,
    pub negative: Feedback,
    /// Pseudo-cohorts of failures before a destination is dead (0: never).
    pub failed_cohort_limit: u32,
}

impl Default for FeedbackSettings {
    /// Postfix's defaults.
    fn default() -> FeedbackSettings {
        FeedbackSettings {
            positive: Feedback::Fixed(1.0),
            negative: Feedback::Fixed(1.0),
            failed_cohort_limit: 1,
        }
    }
}

/// One destination's window and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyWindow {
    window: usize,
    success: f64,
    failure: f64,
    failed_cohorts: f64,
}

/// What a failure did to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    Alive,
    /// Enough failed cohorts: stop connecting for a while.
    Dead,
}

impl ConcurrencyWindow {
    pub fn new(initial: usize, limit: usize) -> ConcurrencyWindow {
        ConcurrencyWindow {
            window: initial.clamp(1, limit.max(1)),
            success: 0.0,
            failure: 0.0,
            failed_cohorts: 0.0,
        }
    }

    /// Connections currently allowed.
    pub fn get(&self) -> usize {
        self.window
    }

    /// Postfix's `destination_concurrency_feedback_debug` line (without
    /// the function name), e.g. `queue smtp:example.com: limit 20 window 3
    /// success 0.5 failure 0 fail_cohorts 0`.
    pub fn debug_line(&self, queue: &str, limit: usize) -> String {
        format!(
            "queue {queue}: limit {limit} window {} success {} failure {} fail_cohorts {}",
            self.window, self.success, self.failure, self.failed_cohorts
        )
    }

    /// Failures since the last success: the destination's feedback state
    /// is worth keeping while its mail is retried.
    pub fn has_failures(&self) -> bool {
        self.failed_cohorts > 0.0
    }

    /// A delivery completed without connection or handshake failure;
    /// `busy` connections are open, `initial` and `limit` are the
    /// transport's.
    pub fn success(&mut self, fb: &FeedbackSettings, busy: usize, initial: usize, limit: usize) {
        self.failed_cohorts = 0.0;
        if self.window >= limit || self.window >= busy + initial {
            return;
        }
        self.success += fb.positive.amount(self.window);
        while self.success >= 1.0 && self.window < limit {
            self.window += 1;
            self.success -= 1.0;
            self.failure = 0.0;
        }
    }

    /// A connection or handshake failed.
    pub fn failure(&mut self, fb: &FeedbackSettings) -> AfterFailure {
        self.failure -= fb.negative.amount(self.window);
        while self.failure < 0.0 {
            self.failure += 1.0;
            self.success = 0.0;
            if self.window > 1 {
                self.window -= 1;
            }
        }
        self.failed_cohorts += 1.0 / self.window as f64;
        if fb.failed_cohort_limit > 0 && self.failed_cohorts >= f64::from(fb.failed_cohort_limit) {
            // Dead for a while; start over afterwards.
            self.failed_cohorts = 0.0;
            AfterFailure::Dead
        } else {
            AfterFailure::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_values_parse_as_postfix_writes_them() {
        assert_eq!(Feedback::parse("1"), Ok(Feedback::Fixed(1.0)));
        assert_eq!(Feedback::parse("0.5"), Ok(Feedback::Fixed(0.5)));
        assert_eq!(Feedback::parse("1/4"), Ok(Feedback::Fixed(0.25)));
        assert_eq!(
            Feedback::parse(" 1/concurrency "),
            Ok(Feedback::PerConcurrency)
        );
        for bad in ["", "-1", "1/0", "x", "1/x", "inf"] {
            assert!(Feedback::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_feedback_grows_by_one_per_success_while_in_use() {
        let fb = FeedbackSettings::default();
        let mut w = ConcurrencyWindow::new(5, 20);
        w.success(&fb, 5, 5, 20);
        w.success(&fb, 6, 5, 20);
        assert_eq!(w.get(), 7);
        // Only one connection busy: 7 >= 1 + 5, no more growth.
        w.success(&fb, 1, 5, 20);
        assert_eq!(w.get(), 7);
        // Never above the limit.
        for _ in 0..50 {
            w.success(&fb, 100, 5, 20);
        }
        assert_eq!(w.get(), 20);
    }

    #[test]
    fn per_concurrency_feedback_needs_a_window_of_successes() {
        let fb = FeedbackSettings {
            positive: Feedback::PerConcurrency,
            ..FeedbackSettings::default()
        };
        let mut w = ConcurrencyWindow::new(4, 20);
        for _ in 0..3 {
            w.success(&fb, 4, 4, 20);
        }
        assert_eq!(w.get(), 4);
        w.success(&fb, 4, 4, 20);
        assert_eq!(w.get(), 5);
    }

    #[test]
    fn failures_shrink_the_window_and_a_failed_cohort_kills() {
        let fb = FeedbackSettings::default();
        let mut w = ConcurrencyWindow::new(5, 20);
        // 5 -> 4 (1/4 cohort), 4 -> 3 (+1/3), 3 -> 2 (+1/2): dead.
        assert_eq!(w.failure(&fb), AfterFailure::Alive);
        assert_eq!(w.failure(&fb), AfterFailure::Alive);
        assert_eq!(w.get(), 3);
        assert_eq!(w.failure(&fb), AfterFailure::Dead);
        assert_eq!(w.get(), 2);
        // Never below one.
        for _ in 0..10 {
            w.failure(&fb);
        }
        assert_eq!(w.get(), 1);
    }

    #[test]
    fn a_success_resets_the_cohort_count() {
        let fb = FeedbackSettings::default();
        let mut w = ConcurrencyWindow::new(2, 20);
        assert_eq!(w.failure(&fb), AfterFailure::Dead); // 2 -> 1, 1/1
        let mut w = ConcurrencyWindow::new(3, 20);
        assert_eq!(w.failure(&fb), AfterFailure::Alive); // 1/2
        w.success(&fb, 1, 3, 20);
        assert_eq!(w.failure(&fb), AfterFailure::Alive);
        let never = FeedbackSettings {
            failed_cohort_limit: 0,
            ..fb
        };
        for _ in 0..10 {
            assert_eq!(w.failure(&never), AfterFailure::Alive);
        }
    }
}
