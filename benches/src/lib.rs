//! Support code for corepost's benchmarks and its two load tools, `corepost-source` (the load
//! generator) and `corepost-sink` (the receiving end).
//!
//! - [`smtp`]: reply and command parsing, dot-stuffing and the DATA terminator;
//! - [`conn`]: buffered, bounded SMTP streams over TCP or TLS;
//! - [`tls`]: STARTTLS configuration (rcgen self-signed certificate for the sink);
//! - [`message`]: real-looking messages and weighted size and domain mixes;
//! - [`stats`]: HDR histograms and reply counters;
//! - [`source`]: the load generator; [`sink`]: the sink.

pub mod conn;
pub mod message;
pub mod sink;
pub mod smtp;
pub mod source;
pub mod stats;
pub mod tls;
