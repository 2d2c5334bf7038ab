//! The controllers' wall clock. Release builds read the system clock. In debug builds,
//! `OPSY_TEST_CLOCK_START=<RFC 3339 instant>` starts the clock at that instant on first use, after which it runs at
//! real speed: an end-to-end test can put the process seconds before a maintenance window opens and watch the
//! controller wake up for it. The decisions themselves take the time as an argument; only the reconcile entry
//! points call [`now`].

use jiff::Timestamp;

/// The current time (see the module docs for the debug-build override).
pub fn now() -> Timestamp {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static OFFSET: OnceLock<jiff::SignedDuration> = OnceLock::new();
        let offset = OFFSET.get_or_init(|| {
            std::env::var("OPSY_TEST_CLOCK_START")
                .ok()
                .and_then(|start| match start.parse::<Timestamp>() {
                    Ok(start) => Some(start.duration_since(Timestamp::now())),
                    Err(e) => {
                        eprintln!("OPSY_TEST_CLOCK_START={start:?} ignored: {e}");
                        None
                    }
                })
                .unwrap_or(jiff::SignedDuration::ZERO)
        });
        Timestamp::now()
            .checked_add(*offset)
            .unwrap_or_else(|_| Timestamp::now())
    }
    #[cfg(not(debug_assertions))]
    Timestamp::now()
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_an_override_the_clock_is_the_system_clock() {
        // The test process does not set OPSY_TEST_CLOCK_START.
        let before = jiff::Timestamp::now();
        let now = super::now();
        let after = jiff::Timestamp::now();
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }
}
