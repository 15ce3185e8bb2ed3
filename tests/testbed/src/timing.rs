//! Wall time of each end-to-end test, for the report `scripts/test.sh` prints at the end.
//!
//! The first time a test thread starts an EL, a lightcl process or a simulated history, a guard
//! is placed in that thread's local storage (unnamed threads a test spawns, and tokio's
//! workers, are not timed); when the thread ends (the test passed or panicked) the guard appends
//! `seconds<TAB>test name` to the file `TESTBED_TIMES_FILE` names. libtest names each test's
//! thread after the test, so no test has to do anything. Without the variable nothing is written.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Instant;

struct Clock {
    name: String,
    started: Instant,
}

impl Drop for Clock {
    fn drop(&mut self) {
        let Some(path) = std::env::var_os("TESTBED_TIMES_FILE") else { return };
        let line = format!("{:.1}\t{}\n", self.started.elapsed().as_secs_f64(), self.name);
        // One short write with O_APPEND: lines of tests ending together do not interleave.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

thread_local! {
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

/// Starts this test's clock if it has not started yet (called by every process spawn and every
/// simulated run).
pub fn test_started() {
    let Some(name) = std::thread::current().name().map(str::to_owned) else { return };
    // The harness's own thread, and runtime workers a test may start, are not tests.
    if name == "main" || name.starts_with("tokio-") {
        return;
    }
    let _ = CLOCK.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(Clock { name, started: Instant::now() });
        }
    });
}
