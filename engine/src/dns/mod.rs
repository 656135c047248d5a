//! DNS stub resolver for the per-core engine (in progress).
