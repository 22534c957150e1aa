//! loom model of a counting semaphore: a count under a mutex and a
//! condition variable. Timeouts are ignored so a lost wake-up shows up as
//! a deadlock.
use loom::sync::{Condvar, Mutex};

pub(crate) struct Semaphore {
    count: Mutex<u32>,
    posted: Condvar,
}

impl Semaphore {
    pub(crate) fn new() -> Semaphore {
        Semaphore { count: Mutex::new(0), posted: Condvar::new() }
    }

    pub(crate) fn wait(&self) {
        let mut count = self.count.lock().unwrap();
        while *count == 0 {
            count = self.posted.wait(count).unwrap();
        }
        *count -= 1;
    }

    pub(crate) fn post(&self) {
        *self.count.lock().unwrap() += 1;
        self.posted.notify_one();
    }
}
