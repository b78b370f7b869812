//! What the benches share: W1's events.

use std::time::{Duration, SystemTime};

use at_forwarder::demo::generate::wide_event;
use at_forwarder::event::time::Timestamp;

/// `n` events as W1 has them (`at-forwarder generate --wide`: 750–900 bytes, 4 services).
pub(crate) fn w1_events(n: usize) -> Vec<Vec<u8>> {
    let now = Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000));
    (0..n)
        .map(|i| wide_event(i % 4, i as u64, now).into_bytes())
        .collect()
}
