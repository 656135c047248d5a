//! DNS resolver benchmarks (filled in below as the resolver lands).
fn main() {}
