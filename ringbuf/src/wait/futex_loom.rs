//! loom model of a futex: the value check and the sleep are atomic with
//! respect to `wake`, as the kernel makes them. Timeouts are ignored so a
//! lost wake-up shows up as a deadlock.
use super::*;
use loom::sync::{Condvar, Mutex};

loom::lazy_static! {
    static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
}

pub(super) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
    let guard = PARKING.0.lock().unwrap();
    if word.load(Ordering::Relaxed) != expected {
        return;
    }
    drop(PARKING.1.wait(guard).unwrap());
}

pub(super) fn wake(_word: &AtomicU32) {
    let _guard = PARKING.0.lock().unwrap();
    PARKING.1.notify_all();
}
