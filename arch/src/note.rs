//! One-shot notes: the futex events on which idle Ms park.
//!
//! A [`Note`] is either clear or woken. [`Note::sleep`] waits until it is woken;
//! [`Note::wakeup`] wakes it (waking a woken note does nothing); [`Note::clear`] re-arms it and
//! must only be called when nobody is sleeping on it. The sleeper marks the word before it enters the kernel, so a wake-up that
//! finds no sleeper makes no system call: on these machines a futex wake costs tens of
//! microseconds when the other side is idle, and the fast paths must not pay it.

use core::sync::atomic::{AtomicU32, Ordering};

const CLEAR: u32 = 0;
const WOKEN: u32 = 1;
/// Clear, and a sleeper is (about to be) inside `futex_wait`.
const SLEEPING: u32 = 2;

/// A one-shot event for one sleeper and one waker.
#[derive(Debug, Default)]
pub struct Note {
    key: AtomicU32,
}

impl Note {
    /// A clear note.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_arch::Note;
    ///
    /// let note = Arc::new(Note::new());
    /// let n = note.clone();
    /// let t = std::thread::spawn(move || n.wakeup());
    /// note.sleep(); // returns once woken (at once if the wake-up came first)
    /// assert!(note.is_woken());
    /// t.join().unwrap();
    /// note.clear();
    /// assert!(!note.sleep_timeout(1_000)); // nobody wakes it: times out
    /// ```
    pub const fn new() -> Note {
        Note { key: AtomicU32::new(CLEAR) }
    }

    /// Re-arms a woken note. Nobody may be sleeping on it.
    ///
    /// ```
    /// use safepoint_arch::Note;
    /// let n = Note::new();
    /// n.wakeup();
    /// assert!(n.is_woken());
    /// n.clear(); // ready for the next sleep
    /// assert!(!n.is_woken());
    /// ```
    pub fn clear(&self) {
        debug_assert_ne!(self.key.load(Ordering::Relaxed), SLEEPING, "Note::clear with a sleeper");
        self.key.store(CLEAR, Ordering::Relaxed);
    }

    /// Whether the note has been woken.
    ///
    /// ```
    /// use safepoint_arch::Note;
    /// let n = Note::new();
    /// assert!(!n.is_woken());
    /// n.wakeup();
    /// assert!(n.is_woken());
    /// ```
    pub fn is_woken(&self) -> bool {
        // Acquire: pairs with the Release swap in `wakeup`, so what the waker wrote before is
        // visible once this returns true.
        self.key.load(Ordering::Acquire) == WOKEN
    }

    /// Wakes the note, and its sleeper if one is parked in the kernel.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_arch::Note;
    /// let n = Arc::new(Note::new());
    /// let waker = {
    ///     let n = n.clone();
    ///     std::thread::spawn(move || n.wakeup())
    /// };
    /// n.sleep(); // returns once woken (at once if the wake-up came first)
    /// waker.join().unwrap();
    /// ```
    pub fn wakeup(&self) {
        // Release: pairs with the Acquire loads in `sleep`/`is_woken`.
        let old = self.key.swap(WOKEN, Ordering::Release);
        if old == SLEEPING {
            futex_wake(&self.key);
        }
    }

    /// Sleeps until the note is woken.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_arch::Note;
    /// let n = Arc::new(Note::new());
    /// let m = n.clone();
    /// let t = std::thread::spawn(move || {
    ///     m.sleep();
    ///     "woken"
    /// });
    /// n.wakeup();
    /// assert_eq!(t.join().unwrap(), "woken");
    /// ```
    pub fn sleep(&self) {
        while !self.sleep_until(None) {}
    }

    /// Sleeps until the note is woken or `ns` nanoseconds have passed; returns whether it was
    /// woken.
    ///
    /// ```
    /// use safepoint_arch::Note;
    /// let n = Note::new();
    /// assert!(!n.sleep_timeout(100_000)); // 0.1 ms, nobody wakes it
    /// n.wakeup();
    /// assert!(n.sleep_timeout(100_000)); // already woken: at once
    /// ```
    pub fn sleep_timeout(&self, ns: u64) -> bool {
        let deadline = crate::nanotime().saturating_add(ns);
        self.sleep_until(Some(deadline))
    }

    /// Spins for about `spins` iterations waiting for a wake-up before sleeping in the kernel
    /// (up to `ns` nanoseconds if given). Used where the waker is likely running on the other
    /// CPU and a kernel round trip would cost more than the wait.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_arch::Note;
    /// let n = Arc::new(Note::new());
    /// let m = n.clone();
    /// let t = std::thread::spawn(move || m.wakeup());
    /// assert!(n.spin_then_sleep(1000, None));
    /// t.join().unwrap();
    /// ```
    pub fn spin_then_sleep(&self, spins: u32, ns: Option<u64>) -> bool {
        for _ in 0..spins {
            if self.is_woken() {
                return true;
            }
            crate::cpu_relax();
        }
        match ns {
            None => {
                self.sleep();
                true
            }
            Some(ns) => self.sleep_timeout(ns),
        }
    }

    fn sleep_until(&self, deadline: Option<u64>) -> bool {
        loop {
            match self.key.compare_exchange(CLEAR, SLEEPING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) | Err(SLEEPING) => {}
                Err(_) => return true, // WOKEN
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = crate::nanotime();
                    if now >= d {
                        // Undo our mark unless a waker got in first.
                        return self
                            .key
                            .compare_exchange(SLEEPING, CLEAR, Ordering::Acquire, Ordering::Acquire)
                            .is_err();
                    }
                    Some(d - now)
                }
            };
            futex_wait(&self.key, SLEEPING, timeout);
            if self.is_woken() {
                return true;
            }
        }
    }
}

/// Sleeps in the kernel while `*key == expect`, for at most `timeout_ns` if given. Returns on a
/// wake-up, a timeout, a signal (`EINTR`: the preemption signal interrupts a waiting M now and
/// then; a futex wait is not restarted by `SA_RESTART`) or a changed word: the caller re-checks
/// its condition and waits again, with what is left of its timeout.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use safepoint_arch::{futex_wait, futex_wake};
/// let word = Arc::new(AtomicU32::new(0));
/// let w = word.clone();
/// let t = std::thread::spawn(move || {
///     w.store(1, Ordering::Release);
///     futex_wake(&w);
/// });
/// // Wait while the word is 0, re-checking after every return (wake-ups may be spurious).
/// while word.load(Ordering::Acquire) == 0 {
///     futex_wait(&word, 0, Some(1_000_000));
/// }
/// t.join().unwrap();
/// ```
pub fn futex_wait(key: &AtomicU32, expect: u32, timeout_ns: Option<u64>) {
    let ts;
    let tsp = match timeout_ns {
        None => core::ptr::null(),
        Some(ns) => {
            ts = libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            };
            &ts as *const libc::timespec
        }
    };
    // SAFETY: `key` is a live, aligned u32 for the duration of the call; `tsp` is null or points
    // at `ts`, which outlives the call. EINTR, EAGAIN and ETIMEDOUT are all handled by the
    // caller's re-check of the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            key.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expect,
            tsp,
        );
    }
}

/// Wakes one thread sleeping in [`futex_wait`] on `key` (no system call is saved here: callers
/// track whether anyone may be sleeping).
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// // Nobody sleeping: a wake-up is harmless.
/// safepoint_arch::futex_wake(&AtomicU32::new(0));
/// ```
pub fn futex_wake(key: &AtomicU32) {
    // SAFETY: `key` is a live, aligned u32; FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            key.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wakeup_before_sleep_returns_at_once() {
        let n = Note::new();
        n.wakeup();
        n.sleep();
        assert!(n.is_woken());
        n.clear();
        assert!(!n.is_woken());
    }

    #[test]
    fn timeout_expires_without_wakeup() {
        let n = Note::new();
        assert!(!n.sleep_timeout(1_000_000));
        // The note is still usable after a timeout.
        n.wakeup();
        assert!(n.sleep_timeout(1_000_000));
    }

    #[test]
    fn wakeup_from_another_thread() {
        for _ in 0..200 {
            let n = Arc::new(Note::new());
            let n2 = n.clone();
            let t = std::thread::spawn(move || n2.wakeup());
            n.sleep();
            t.join().unwrap();
            assert!(n.is_woken());
        }
    }
}
