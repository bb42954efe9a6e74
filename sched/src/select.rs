//! `select` over channel operations (Go's `select` statement).
//!
//! A [`Select`] collects send and receive cases (each with the code to run if it is the one
//! chosen), and optionally a `default` (do not wait) or a timeout; [`Select::wait`] runs exactly
//! one case.
//!
//! ## Protocol (Go's `selectgo`)
//!
//! 1. Shuffle the cases into a random *poll order* (uniform: every ready case is equally
//!    likely to be chosen), and sort the distinct channels by address into a *lock order*.
//! 2. Lock every channel, in lock order (a fixed global order: two selects cannot deadlock).
//! 3. Pass 1: in poll order, the first case that can proceed now does (a parked counterpart is
//!    unlinked and woken after the unlock, as in a plain channel operation); unlock all; run it.
//! 4. None can, and there is a default: unlock all; run the default.
//! 5. Pass 2: link a node into every case's queue, all sharing one [`Waiter`]; park. The park
//!    callback stores the token and only then unlocks every channel, so a waker on any of them
//!    finds the token. Wakers race for the waiter's `done` flag; the winner completes its case
//!    (writes the value, marks success or closed), records the case index and wakes us. Losers
//!    skip our nodes.
//! 6. Pass 3: woken, lock every channel again and unlink the nodes still linked (nobody else
//!    touches them once `done` is won); unlock; run the fired case.
//!
//! At shutdown the park of pass 2 may be ended (see the crate docs): the selecting goroutine
//! locks every channel and races the wakers for `done`. If it wins, no case fired: it unlinks
//! every node and unwinds. If a waker won, that waker completed its case under its channel's
//! lock, and the select goes on as if woken (its case runs, then the goroutine unwinds at its
//! next safepoint).
//!
//! A select with no cases and no default parks forever (Go's `select {}`); the deadlock
//! detector counts it as blocked on a runtime primitive.

use std::time::{Duration, Instant};

use crate::chan::{Chan, RecvError, RecvTry, SEND_CLOSED, SendTry, Sudog, Waiter};
use crate::wait::{Token, check_can_park, fastrandn, park_current_cancellable};

/// One case, type-erased over its channel's element type.
trait Case<R> {
    /// The channel's address (lock order, and duplicates share one lock).
    fn addr(&self) -> usize;
    fn lock(&self);
    fn unlock(&self);
    /// Pass 1, channel locked: complete now if possible.
    fn poll(&mut self) -> bool;
    /// Pass 2, channel locked: link a node for `w` as case `index`.
    fn enqueue(&mut self, w: *const Waiter, index: usize);
    /// Pass 3, channel locked: unlink the node if still linked; if `fired`, take the outcome.
    fn dequeue(&mut self, fired: bool);
    /// Unlocked: wake the counterpart (if any) and run the case's code.
    fn finish(self: Box<Self>) -> R;
}

enum Outcome<T> {
    Pending,
    Recv(Result<T, RecvError>),
    Sent,
    SendClosed,
}

struct RecvCase<C, T, F> {
    chan: C,
    f: F,
    slot: Option<T>,
    sg: Option<Sudog<T>>,
    outcome: Outcome<T>,
    wake: Option<Token>,
}

struct SendCase<C, T, F> {
    chan: C,
    f: F,
    value: Option<T>,
    sg: Option<Sudog<T>>,
    outcome: Outcome<T>,
    wake: Option<Token>,
}

impl<C, T, F, R> Case<R> for RecvCase<C, T, F>
where
    C: core::borrow::Borrow<Chan<T>>,
    T: Send,
    F: FnOnce(Result<T, RecvError>) -> R,
{
    fn addr(&self) -> usize {
        self.chan.borrow().inner.addr()
    }
    fn lock(&self) {
        self.chan.borrow().inner.lock.lock()
    }
    fn unlock(&self) {
        self.chan.borrow().inner.lock.unlock()
    }
    fn poll(&mut self) -> bool {
        // SAFETY: the select holds this channel's lock in pass 1.
        match unsafe { self.chan.borrow().inner.try_recv_locked() } {
            RecvTry::Value(v, t) => {
                self.outcome = Outcome::Recv(Ok(v));
                self.wake = t;
                true
            }
            RecvTry::Closed => {
                self.outcome = Outcome::Recv(Err(RecvError));
                true
            }
            RecvTry::Block => false,
        }
    }
    fn enqueue(&mut self, w: *const Waiter, index: usize) {
        let slot: *mut Option<T> = &mut self.slot;
        let sg = self.sg.insert(Sudog::new(w, index, slot));
        // SAFETY: the channel is locked; the node lives in this boxed case, which the select
        // keeps (unmoved) until pass 3 has unlinked it under this lock.
        unsafe { self.chan.borrow().inner.state().recvq.enqueue(sg) };
    }
    fn dequeue(&mut self, fired: bool) {
        let Some(sg) = self.sg.as_ref() else { return };
        // SAFETY: the channel is locked; the node is ours.
        unsafe { self.chan.borrow().inner.state().recvq.remove(sg) };
        if fired {
            self.outcome = Outcome::Recv(if sg.success.get() {
                Ok(self
                    .slot
                    .take()
                    .unwrap_or_else(|| crate::throw!("select: receive without a value")))
            } else {
                Err(RecvError)
            });
        }
    }
    fn finish(self: Box<Self>) -> R {
        let this = *self;
        if let Some(t) = this.wake {
            t.wake();
        }
        match this.outcome {
            Outcome::Recv(r) => (this.f)(r),
            _ => crate::throw!("select: receive case finished without an outcome"),
        }
    }
}

impl<C, T, F, R> Case<R> for SendCase<C, T, F>
where
    C: core::borrow::Borrow<Chan<T>>,
    T: Send,
    F: FnOnce() -> R,
{
    fn addr(&self) -> usize {
        self.chan.borrow().inner.addr()
    }
    fn lock(&self) {
        self.chan.borrow().inner.lock.lock()
    }
    fn unlock(&self) {
        self.chan.borrow().inner.lock.unlock()
    }
    fn poll(&mut self) -> bool {
        let v =
            self.value.take().unwrap_or_else(|| crate::throw!("select: send case polled twice"));
        // SAFETY: the select holds this channel's lock in pass 1.
        match unsafe { self.chan.borrow().inner.try_send_locked(v) } {
            SendTry::Done(t) => {
                self.outcome = Outcome::Sent;
                self.wake = t;
                true
            }
            SendTry::Closed(v) => {
                self.value = Some(v);
                self.outcome = Outcome::SendClosed;
                true
            }
            SendTry::Block(v) => {
                self.value = Some(v);
                false
            }
        }
    }
    fn enqueue(&mut self, w: *const Waiter, index: usize) {
        let slot: *mut Option<T> = &mut self.value;
        let sg = self.sg.insert(Sudog::new(w, index, slot));
        // SAFETY: as for the receive case.
        unsafe { self.chan.borrow().inner.state().sendq.enqueue(sg) };
    }
    fn dequeue(&mut self, fired: bool) {
        let Some(sg) = self.sg.as_ref() else { return };
        // SAFETY: the channel is locked; the node is ours.
        unsafe { self.chan.borrow().inner.state().sendq.remove(sg) };
        if fired {
            self.outcome = if sg.success.get() { Outcome::Sent } else { Outcome::SendClosed };
        }
    }
    fn finish(self: Box<Self>) -> R {
        let this = *self;
        if let Some(t) = this.wake {
            t.wake();
        }
        match this.outcome {
            Outcome::Sent => (this.f)(),
            Outcome::SendClosed => {
                drop(this.value);
                panic!("{SEND_CLOSED}")
            }
            _ => crate::throw!("select: send case finished without an outcome"),
        }
    }
}

/// A select statement under construction: add cases, then [`wait`](Select::wait) (or let the
/// default run). `R` is what every case's code returns.
///
/// ```
/// # use safepoint_sched::{Chan, Runtime, Select};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// # rt.block_on(|| {
/// let (a, b) = (Chan::<u32>::new(1), Chan::<&str>::new(1));
/// b.send("hi");
/// let got = Select::new()
///     .recv(&a, |v| format!("a: {v:?}"))
///     .recv(&b, |v| format!("b: {v:?}"))
///     .wait();
/// assert_eq!(got, "b: Ok(\"hi\")");
/// # });
/// ```
pub struct Select<'a, R> {
    cases: Vec<Box<dyn Case<R> + 'a>>,
    default: Option<Box<dyn FnOnce() -> R + 'a>>,
    /// The timeout case's timer, stopped when the select is done.
    timer: Option<crate::timer::Timer>,
}

impl<R> core::fmt::Debug for Select<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Select({} cases, default: {})", self.cases.len(), self.default.is_some())
    }
}

impl<'a, R> Default for Select<'a, R> {
    fn default() -> Self {
        Select::new()
    }
}

impl<'a, R> Select<'a, R> {
    /// A select with no cases.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let (a, b) = (Chan::new(1), Chan::<&str>::new(1));
    ///     b.send("b");
    ///     let got = Select::new()
    ///         .recv(&a, |v: Result<i32, _>| format!("a {v:?}"))
    ///         .recv(&b, |v| format!("b {}", v.unwrap()))
    ///         .wait();
    ///     assert_eq!(got, "b b");
    /// });
    /// ```
    pub fn new() -> Select<'a, R> {
        Select { cases: Vec::new(), default: None, timer: None }
    }

    /// A receive case: `f` gets the value, or `Err(RecvError)` if the channel is closed.
    ///
    /// ```
    /// use safepoint_sched::{Chan, RecvError, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::<u8>::new(0);
    ///     ch.close();
    ///     let r = Select::new().recv(&ch, |v| v).wait();
    ///     assert_eq!(r, Err(RecvError)); // closed: the case gets the error
    /// });
    /// ```
    pub fn recv<T: Send + 'a>(
        mut self,
        chan: &'a Chan<T>,
        f: impl FnOnce(Result<T, RecvError>) -> R + 'a,
    ) -> Select<'a, R> {
        self.cases.push(Box::new(RecvCase {
            chan,
            f,
            slot: None,
            sg: None,
            outcome: Outcome::Pending,
            wake: None,
        }));
        self
    }

    /// A send case: if chosen, `value` is sent and `f` runs. If the channel is (or gets) closed
    /// and this case is chosen, the select panics with `send on closed channel`, as Go's.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::new(1);
    ///     let sent = Select::new().send(&ch, 9, || true).default(|| false).wait();
    ///     assert!(sent);
    ///     assert_eq!(ch.recv(), Ok(9));
    /// });
    /// ```
    pub fn send<T: Send + 'a>(
        mut self,
        chan: &'a Chan<T>,
        value: T,
        f: impl FnOnce() -> R + 'a,
    ) -> Select<'a, R> {
        self.cases.push(Box::new(SendCase {
            chan,
            f,
            value: Some(value),
            sg: None,
            outcome: Outcome::Pending,
            wake: None,
        }));
        self
    }

    /// Runs `f` instead of waiting when no case is ready.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::<u8>::new(0);
    ///     let r = Select::new().recv(&ch, |_| "received").default(|| "nothing ready").wait();
    ///     assert_eq!(r, "nothing ready");
    /// });
    /// ```
    pub fn default(mut self, f: impl FnOnce() -> R + 'a) -> Select<'a, R> {
        self.default = Some(Box::new(f));
        self
    }

    /// A case that fires after `d` (Go's `case <-time.After(d)`); one per select.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Chan, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::<u8>::new(0);
    ///     let r = Select::new()
    ///         .recv(&ch, |_| "received")
    ///         .timeout(Duration::from_millis(2), || "timed out")
    ///         .wait();
    ///     assert_eq!(r, "timed out");
    /// });
    /// ```
    pub fn timeout(self, d: Duration, f: impl FnOnce() -> R + 'a) -> Select<'a, R> {
        self.deadline(Instant::now() + d, f)
    }

    /// A case that fires at `at`; one per select.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use safepoint_sched::{Chan, Runtime, Select};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::<u8>::new(0);
    ///     let at = Instant::now() + Duration::from_millis(2);
    ///     let r = Select::new().recv(&ch, |_| false).deadline(at, || true).wait();
    ///     assert!(r && Instant::now() >= at);
    /// });
    /// ```
    pub fn deadline(mut self, at: Instant, f: impl FnOnce() -> R + 'a) -> Select<'a, R> {
        assert!(self.timer.is_none(), "Select: only one timeout or deadline per select");
        let timer = crate::timer::Timer::at(at);
        let chan = timer.chan().clone();
        self.timer = Some(timer);
        self.cases.push(Box::new(RecvCase {
            chan,
            f: move |_| f(),
            slot: None,
            sg: None,
            outcome: Outcome::Pending,
            wake: None,
        }));
        self
    }

    /// Runs one case: a ready one chosen uniformly at random, else the default, else waits for
    /// the first to become ready.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Chan, Runtime, Select};
    ///
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let a: Chan<u32> = Chan::new(1);
    ///     let b: Chan<&str> = Chan::new(1);
    ///     b.send("b is ready");
    ///     let got = Select::new()
    ///         .recv(&a, |v| format!("a: {v:?}"))
    ///         .recv(&b, |v| format!("b: {v:?}"))
    ///         .timeout(Duration::from_secs(5), || "timeout".to_string())
    ///         .wait();
    ///     assert_eq!(got, "b: Ok(\"b is ready\")");
    ///     // Nothing ready: the default runs instead of waiting.
    ///     let got = Select::new().recv(&a, |_| 1).default(|| 0).wait();
    ///     assert_eq!(got, 0);
    /// });
    /// ```
    pub fn wait(mut self) -> R {
        let n = self.cases.len();
        if n == 0 {
            if let Some(d) = self.default.take() {
                return d();
            }
            // Go's `select {}`: block forever (the token is dropped: nobody can wake us), or
            // until shutdown ends the park (nothing is linked anywhere).
            check_can_park(|| ());
            if park_current_cancellable(crate::WaitReason::Select, |_t| true) {
                crate::proc::shutdown_unwind_current();
            }
            crate::throw!("select with no cases woke up");
        }
        // Poll order: a uniform shuffle (Fisher-Yates).
        let mut poll: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            poll.swap(i, fastrandn(i + 1));
        }
        // Lock order: by channel address, duplicates once.
        let mut order: Vec<(usize, usize)> =
            self.cases.iter().enumerate().map(|(i, c)| (c.addr(), i)).collect();
        order.sort_unstable();
        order.dedup_by_key(|(a, _)| *a);
        let cases = &mut self.cases;
        let lock_all = |cases: &[Box<dyn Case<R> + 'a>]| {
            for &(_, i) in order.iter() {
                cases[i].lock();
            }
        };
        let unlock_all = |cases: &[Box<dyn Case<R> + 'a>]| {
            for &(_, i) in order.iter().rev() {
                cases[i].unlock();
            }
        };
        lock_all(cases);
        // Pass 1.
        let mut chosen = None;
        for &i in poll.iter() {
            if cases[i].poll() {
                chosen = Some(i);
                break;
            }
        }
        if chosen.is_none()
            && let Some(d) = self.default.take()
        {
            unlock_all(cases);
            drop(self.timer.take());
            return d();
        }
        let chosen = match chosen {
            Some(i) => {
                unlock_all(cases);
                i
            }
            None => {
                check_can_park(|| unlock_all(cases));
                // Pass 2.
                let w = Waiter::new(true);
                for &i in poll.iter() {
                    cases[i].enqueue(&w, i);
                }
                let cancelled = park_current_cancellable(crate::WaitReason::Select, |t| {
                    w.set_token(t);
                    unlock_all(cases);
                    true
                });
                // Pass 3.
                lock_all(cases);
                if cancelled && w.cancel_select() {
                    // Shutdown ended the park and no waker completed a case: unlink every
                    // node (nobody else touches them now that `done` is ours) and unwind.
                    for c in cases.iter_mut() {
                        c.dequeue(false);
                    }
                    unlock_all(cases);
                    crate::proc::shutdown_unwind_current();
                }
                let fired = w.fired();
                if fired >= n {
                    crate::throw!("select woken without a fired case");
                }
                for (i, c) in cases.iter_mut().enumerate() {
                    c.dequeue(i == fired);
                }
                unlock_all(cases);
                fired
            }
        };
        drop(self.timer.take());
        let case = self.cases.swap_remove(chosen);
        case.finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Select registration: a select parks on two channels while two senders race to fill
    /// them. Exactly one case fires, the other value stays in its channel, and the selector is
    /// never left parked (no lost wake-up) nor fired twice.
    #[test]
    fn loom_select_two_senders() {
        crate::wait::loom_model(|| {
            let a = Chan::<u32>::new(1);
            let b = Chan::<u32>::new(1);
            let (a2, b2) = (a.clone(), b.clone());
            let ta = thread::spawn(move || a2.send(1));
            let tb = thread::spawn(move || b2.send(2));
            let got = Select::new().recv(&a, |v| v.unwrap()).recv(&b, |v| v.unwrap()).wait();
            ta.join().unwrap();
            tb.join().unwrap();
            let other = if got == 1 { b.try_recv() } else { a.try_recv() };
            assert_eq!(got + other.unwrap(), 3);
            assert_eq!((a.waiting(), b.waiting()), ((0, 0), (0, 0)));
        });
    }

    /// A select parked on two receives while one channel is closed: the close (or pass 1,
    /// if it came first) completes the select with "closed", and no node is left behind.
    #[test]
    fn loom_select_close_wakes() {
        crate::wait::loom_model(|| {
            let a = Chan::<u32>::new(0);
            let b = Chan::<u32>::new(0);
            let a2 = a.clone();
            let t = thread::spawn(move || a2.close());
            let got = Select::new().recv(&a, |v| v.is_err()).recv(&b, |_| false).wait();
            t.join().unwrap();
            assert!(got);
            assert_eq!(b.waiting(), (0, 0));
        });
    }
}
