//! Support code shared by corepost benchmarks.
