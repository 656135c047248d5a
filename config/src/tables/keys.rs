//! The order in which keys are tried against a table (filled in below).
