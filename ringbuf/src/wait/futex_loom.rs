//! loom model of a futex: the value check and the sleep are atomic with
//! respect to `wake`, as the kernel makes them. Timeouts are ignored so a
//! lost wake-up shows up as a deadlock.

use std::time::Duration;

use loom::sync::{Condvar, Mutex};

use super::notifier::{Notifier, NotifierCell};
use crate::sync::{AtomicU32, Ordering};

loom::lazy_static! {
    static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
}

pub(super) struct Futex;

impl Notifier for Futex {
    fn name(&self) -> &'static str {
        "futex"
    }

    fn init(&self, _cell: &NotifierCell) {}

    fn sleep(&self, epoch: &AtomicU32, _cell: &NotifierCell, key: u32, _timeout: Option<Duration>) {
        let guard = PARKING.0.lock().unwrap();
        if epoch.load(Ordering::Relaxed) != key {
            return;
        }
        drop(PARKING.1.wait(guard).unwrap());
    }

    fn wake(&self, _epoch: &AtomicU32, _cell: &NotifierCell, _waiters: u32) {
        let _guard = PARKING.0.lock().unwrap();
        PARKING.1.notify_all();
    }
}
