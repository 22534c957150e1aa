//! [`NotifierKind`]: which backend an eventcount sleeps with, as recorded in
//! the segment header, and the one place that maps a kind to its backend.

use super::futex::Futex;
use super::notifier::Notifier;
use super::sem::Semaphore;

/// How a waiting side sleeps: the notifier of every eventcount in a segment,
/// chosen at creation and recorded in the header's `notifier` word (see
/// [`crate::wait`] for both protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum NotifierKind {
    /// A shared futex on the eventcount's epoch word (the default).
    #[default]
    Futex = 1,
    /// A process-shared POSIX semaphore (`sem_init` with pshared = 1) stored
    /// in the eventcount, next to its epoch word.
    Semaphore = 2,
}

impl NotifierKind {
    /// Every notifier, in the order of their header values.
    pub const ALL: [NotifierKind; 2] = [NotifierKind::Futex, NotifierKind::Semaphore];

    /// The backend that sleeps and wakes for this kind.
    #[inline]
    pub(super) fn backend(self) -> &'static dyn Notifier {
        match self {
            NotifierKind::Futex => &Futex,
            NotifierKind::Semaphore => &Semaphore,
        }
    }

    /// Decode the header's `notifier` word.
    pub fn from_u32(v: u32) -> Option<NotifierKind> {
        NotifierKind::ALL.into_iter().find(|&k| k as u32 == v)
    }

    /// What an eventcount's own notifier word means: anything but
    /// "semaphore" sleeps on the futex (a zeroed eventcount is a futex one).
    pub fn of_eventcount_word(word: u32) -> NotifierKind {
        if word == NotifierKind::Semaphore as u32 { NotifierKind::Semaphore } else { NotifierKind::Futex }
    }

    /// Lower-case name: `futex` or `semaphore`.
    pub fn name(self) -> &'static str {
        self.backend().name()
    }

    /// Whether an eventcount's own notifier word agrees with this notifier
    /// (the header's): the same value, or 0 (a zeroed eventcount) for the
    /// futex. Any other value is corruption.
    pub fn eventcount_word_matches(self, word: u32) -> bool {
        word == self as u32 || (word == 0 && self == NotifierKind::Futex)
    }
}
