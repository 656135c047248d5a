//! Queue administration end to end (placeholder replaced below).

mod support;
