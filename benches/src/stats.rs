//! Measurement: HDR latency histograms (microseconds), per-code reply counters, and their JSON
//! shapes, shared by both tools' reports.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of microseconds from 1 µs to one hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Records a duration in microseconds (clamped into the histogram's range).
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latency {
    /// Summarises `h`; an empty histogram gives all zeros.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// One line for the human report, in milliseconds.
    pub fn line(&self, name: &str) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "{name:<12} n={:<8} p50={:.3}ms p90={:.3}ms p99={:.3}ms p999={:.3}ms max={:.3}ms",
            self.count,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// Counts of replies by code (200..=599).
#[derive(Debug, Clone)]
pub struct ReplyCounts(Box<[u64; 600]>);

impl Default for ReplyCounts {
    fn default() -> Self {
        Self(Box::new([0; 600]))
    }
}

impl ReplyCounts {
    /// Counts one reply; codes outside 0..600 are ignored (the parsers never produce them).
    pub fn add(&mut self, code: u16) {
        if let Some(c) = self.0.get_mut(usize::from(code)) {
            *c += 1;
        }
    }

    /// Counts `n` replies with one code.
    pub fn add_n(&mut self, code: u16, n: u64) {
        if let Some(c) = self.0.get_mut(usize::from(code)) {
            *c += n;
        }
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &ReplyCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Count for one code.
    pub fn get(&self, code: u16) -> u64 {
        self.0.get(usize::from(code)).copied().unwrap_or(0)
    }

    /// Non-zero counts keyed by the code as a string (the JSON shape).
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c.to_string(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert_eq!(l.min, 1);
        assert!((499..=501).contains(&l.p50), "{l:?}");
        assert!((989..=991).contains(&l.p99), "{l:?}");
        assert_eq!(Latency::of(&histogram()).count, 0);
    }

    #[test]
    fn reply_counts() {
        let mut a = ReplyCounts::default();
        a.add(250);
        a.add(250);
        a.add(999);
        let mut b = ReplyCounts::default();
        b.add(451);
        b.merge(&a);
        assert_eq!(b.get(250), 2);
        assert_eq!(
            b.to_map().into_iter().collect::<Vec<_>>(),
            vec![("250".into(), 2), ("451".into(), 1)]
        );
    }
}
