//! Registry parameters that no code reads by name today, each with the
//! reason. Keep it short: a name leaves this list when code starts reading
//! it (the test fails until it does), and a new unread parameter is not
//! added here without a reason a reviewer accepts.

/// The generic form of a per-transport parameter.
const PER_TRANSPORT_DEFAULT: &str =
    "read through <transport>_destination_concurrency_*_feedback, whose default it is";
/// (name, why no code reads it).
pub const UNREAD: &[(&str, &str)] = &[
    (
        "data_directory",
        "Postfix keeps its tlsmgr, verify and postscreen caches there; corepost has no such cache yet, so nothing writes there",
    ),
    (
        "default_destination_concurrency_negative_feedback",
        PER_TRANSPORT_DEFAULT,
    ),
    (
        "default_destination_concurrency_positive_feedback",
        PER_TRANSPORT_DEFAULT,
    ),
    (
        "local_destination_concurrency_limit",
        "read as <transport>_destination_concurrency_limit for the local transport (a static entry overrides the derived one); corepost's local destination is the host, not each recipient",
    ),
    (
        "multi_instance_name",
        "read through the default of syslog_name (${multi_instance_name?...})",
    ),
    (
        "virtual_maps",
        "read through the default of virtual_alias_maps ($virtual_maps)",
    ),
];
