//! loom model of the process-shared semaphore: the count and condition
//! variable of [`NotifierCell`] under loom. Timeouts are ignored so a lost
//! wake-up shows up as a deadlock.

use std::time::Duration;

use super::notifier::{MAX_WAITERS, Notifier, NotifierCell};
use crate::sync::{AtomicU32, Ordering};

pub(super) struct Semaphore;

impl Notifier for Semaphore {
    fn name(&self) -> &'static str {
        "semaphore"
    }

    fn init(&self, _cell: &NotifierCell) {}

    fn sleep(&self, epoch: &AtomicU32, cell: &NotifierCell, key: u32, _timeout: Option<Duration>) {
        // Relaxed: as in the real backend, only saves a sleep.
        if epoch.load(Ordering::Relaxed) != key {
            return;
        }
        let mut count = cell.count.lock().unwrap();
        while *count == 0 {
            count = cell.posted.wait(count).unwrap();
        }
        *count -= 1;
    }

    fn wake(&self, _epoch: &AtomicU32, cell: &NotifierCell, waiters: u32) {
        for _ in 0..waiters.min(MAX_WAITERS) {
            *cell.count.lock().unwrap() += 1;
            cell.posted.notify_one();
        }
    }
}
