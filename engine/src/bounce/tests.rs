//! Tests for the notices: see the module doc of `bounce`.
