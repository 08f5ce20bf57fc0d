//! Times for people.

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch.
pub use idb_harness::utc_minute;
