//! Channels of Rust values between goroutines (Go's `chan T`).
//!
//! A [`Chan`] is a cloneable handle to one channel: a ring buffer of `cap` slots (none for an
//! unbuffered, rendezvous channel), a `closed` flag and two queues of parked waiters (senders
//! and receivers), all behind one [`RawLock`] — the layout of Go's `hchan`.
//!
//! ## Protocol
//!
//! Every operation takes the lock and looks, in this order:
//!
//! * **send**: closed → a described panic (`send on closed channel`). A parked receiver → the
//!   value goes straight into the receiver's slot (*direct hand-off*: the buffer is skipped),
//!   the receiver is marked successful and woken. Room in the buffer → push. Otherwise park
//!   on `sendq` with the value in a node on the sender's stack.
//! * **receive**: closed and empty → `Err(RecvError)`. A parked sender → for an unbuffered
//!   channel take its value; for a full buffered one take the head of the buffer and put the
//!   sender's value at the tail (FIFO order is kept); wake the sender. A buffered value → take
//!   it. Otherwise park on `recvq` with an empty slot.
//! * **close**: closed → a described panic (`close of closed channel`). Set `closed`, take every
//!   parked waiter off both queues marked unsuccessful and wake them: receivers return
//!   `Err(RecvError)`, senders panic with `send on closed channel`.
//!
//! A waiter's node (a *sudog*) lives on the waiter's own stack and is linked into the queue
//! while the lock is held; the waiter parks through [`park_current_cancellable`], whose callback stores the
//! wake-up token in the node's [`Waiter`] and only then releases the lock. A waker holding the
//! lock therefore always finds the token; it unlinks the node, writes the outcome into it,
//! releases the lock and wakes the waiter, and never touches the node again.
//!
//! A node of a `select` shares its [`Waiter`] with the select's other nodes, on other channels:
//! a waker must first win the waiter's `done` flag (a compare-and-swap) before it may complete
//! that case; a loser just drops the node from its queue and looks at the next one. The select
//! unlinks its remaining nodes itself after it wakes (see [`crate::select`]).

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::WaitReason;
use crate::shim::{AtomicBool, AtomicUsize, Ordering};
use crate::wait::{RawLock, Token, check_can_park, park_current_cancellable};

/// What a parked goroutine (or thread) shares among its queue nodes: its wake-up token and, for
/// a select, who won it.
pub(crate) struct Waiter {
    /// Stored by the park callback while the parker holds the lock of every channel it is
    /// queued on; taken by the one waker that completes the operation, under one of those locks.
    token: Cell<Option<Token>>,
    /// Part of a select: a waker must win `done` first.
    select: bool,
    /// Select: set (false -> true) by the first waker; the others skip this waiter.
    done: AtomicBool,
    /// Select: the case index of the node that completed; read by the selecting goroutine
    /// after it wakes.
    fired: AtomicUsize,
}

impl Waiter {
    pub(crate) fn new(select: bool) -> Waiter {
        Waiter {
            token: Cell::new(None),
            select,
            done: AtomicBool::new(false),
            fired: AtomicUsize::new(usize::MAX),
        }
    }

    /// Stores the token. The caller holds the lock of every channel a node of this waiter is
    /// queued on.
    pub(crate) fn set_token(&self, t: Token) {
        self.token.set(Some(t));
    }

    /// After shutdown ended the park of this select's goroutine, with the lock of every
    /// channel it is queued on held: wins `done` as a waker would, so that no waker completes a
    /// case from now on, and drops the (stale) token. False if a waker won first: it completed
    /// its case under the lock of its channel (which the caller now holds), as if the park had
    /// ended normally.
    pub(crate) fn cancel_select(&self) -> bool {
        // AcqRel: as the wakers' CAS in `WaitQ::dequeue` (one side wins).
        let won =
            self.done.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if won {
            drop(self.token.take());
        }
        won
    }

    /// The case that completed this select (after it woke).
    pub(crate) fn fired(&self) -> usize {
        // Acquire: pairs with the Release store in `WaitQ::dequeue` (the wake-up also orders
        // it; this keeps the read self-evidently synchronised).
        self.fired.load(Ordering::Acquire)
    }
}

/// A waiter's node in one channel's queue (Go's `sudog`). Lives on the waiter's stack (or in its
/// select's case); every field but `waiter` and `case` is touched only under the channel lock.
pub(crate) struct Sudog<T> {
    pub(crate) waiter: *const Waiter,
    pub(crate) case: usize,
    /// Sender: the value to take (`Some`). Receiver: the slot to fill.
    pub(crate) elem: *mut Option<T>,
    /// Whether the operation completed (false: woken by close).
    pub(crate) success: Cell<bool>,
    /// Still linked in its queue.
    pub(crate) linked: Cell<bool>,
    prev: Cell<*const Sudog<T>>,
    next: Cell<*const Sudog<T>>,
}

impl<T> Sudog<T> {
    pub(crate) fn new(waiter: *const Waiter, case: usize, elem: *mut Option<T>) -> Sudog<T> {
        Sudog {
            waiter,
            case,
            elem,
            success: Cell::new(false),
            linked: Cell::new(false),
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
        }
    }
}

/// An intrusive FIFO of sudogs. Only touched under its channel's lock.
pub(crate) struct WaitQ<T> {
    head: *const Sudog<T>,
    tail: *const Sudog<T>,
}

impl<T> WaitQ<T> {
    const fn new() -> WaitQ<T> {
        WaitQ { head: ptr::null(), tail: ptr::null() }
    }

    fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Links `sg` at the tail.
    ///
    /// # Safety
    /// `sg` is valid and unlinked, and stays valid until it is unlinked again (by `dequeue` or
    /// `remove`); the caller holds the channel lock.
    pub(crate) unsafe fn enqueue(&mut self, sg: *const Sudog<T>) {
        // SAFETY: per the contract, sg and every linked node are valid while we hold the lock.
        unsafe {
            let s = &*sg;
            s.prev.set(self.tail);
            s.next.set(ptr::null());
            s.linked.set(true);
            if self.tail.is_null() {
                self.head = sg;
            } else {
                (*self.tail).next.set(sg);
            }
        }
        self.tail = sg;
    }

    /// Unlinks `sg` if it is still linked.
    ///
    /// # Safety
    /// `sg` is valid; the caller holds the channel lock.
    pub(crate) unsafe fn remove(&mut self, sg: *const Sudog<T>) {
        // SAFETY: per the contract; linked neighbours are valid while we hold the lock.
        unsafe {
            let s = &*sg;
            if !s.linked.get() {
                return;
            }
            let (p, n) = (s.prev.get(), s.next.get());
            if p.is_null() {
                self.head = n;
            } else {
                (*p).next.set(n);
            }
            if n.is_null() {
                self.tail = p;
            } else {
                (*n).prev.set(p);
            }
            s.linked.set(false);
            s.prev.set(ptr::null());
            s.next.set(ptr::null());
        }
    }

    /// Takes the first node whose operation we may complete, with its waiter's token: a select
    /// node whose waiter another channel already won is dropped from the queue and skipped.
    ///
    /// # Safety
    /// The caller holds the channel lock.
    pub(crate) unsafe fn dequeue(&mut self) -> Option<(*const Sudog<T>, Token)> {
        loop {
            let sg = self.head;
            if sg.is_null() {
                return None;
            }
            // SAFETY: linked nodes are valid while we hold the lock (their owners cannot leave
            // before they unlink them under this lock, or before we wake them).
            unsafe {
                self.remove(sg);
                let w = &*(*sg).waiter;
                if w.select {
                    // AcqRel: one waker wins the select; the winner's writes (fired, elem,
                    // success) are ordered before the wake-up that publishes them.
                    if w.done
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        continue;
                    }
                    // Release: pairs with the Acquire in `Waiter::fired`.
                    w.fired.store((*sg).case, Ordering::Release);
                }
                let t = w.token.take().unwrap_or_else(|| {
                    crate::throw!("channel waiter queued without a wake-up token")
                });
                return Some((sg, t));
            }
        }
    }
}

/// Channel state, guarded by `Inner::lock`.
pub(crate) struct State<T> {
    pub(crate) buf: VecDeque<T>,
    pub(crate) closed: bool,
    pub(crate) recvq: WaitQ<T>,
    pub(crate) sendq: WaitQ<T>,
}

pub(crate) struct Inner<T> {
    pub(crate) lock: RawLock,
    state: UnsafeCell<State<T>>,
    pub(crate) cap: usize,
}

// SAFETY: `state` is only touched with `lock` held (which orders the accesses: Acquire on lock,
// Release on unlock), and the values it holds are `T: Send`; the raw sudog pointers in the
// queues point at nodes whose owners are parked and wait for this lock.
unsafe impl<T: Send> Sync for Inner<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Inner<T> {}

impl<T> Inner<T> {
    /// The state.
    ///
    /// # Safety
    /// The caller holds `lock`, and drops the reference before releasing it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn state(&self) -> &mut State<T> {
        // SAFETY: per the contract, the lock gives exclusive access.
        unsafe { &mut *self.state.get() }
    }

    /// Address, for lock ordering in select.
    /// After shutdown ended the park of `sg`'s waiter (`w`, not a select's): unlinks `sg` from
    /// its queue if a waker has not taken it. True if it was still linked (the operation did
    /// not happen: the caller unwinds); false if a waker completed it (or a close failed it)
    /// first, as if the park had ended normally (the waker's wake-up is then ignored).
    pub(crate) fn cancel(
        &self,
        sg: &Sudog<T>,
        w: &Waiter,
        queue: impl FnOnce(&mut State<T>) -> &mut WaitQ<T>,
    ) -> bool {
        self.lock.lock();
        let linked = sg.linked.get();
        if linked {
            // SAFETY: we hold the lock, and `sg` is valid (our caller's frame).
            unsafe { queue(self.state()).remove(sg) };
        }
        // Our token, if no waker took it: stale now (the goroutine is running).
        let t = w.token.take();
        self.lock.unlock();
        drop(t);
        linked
    }

    pub(crate) fn addr(&self) -> usize {
        self as *const Inner<T> as usize
    }
}

/// A channel of `T` values between goroutines (and threads outside the runtime), buffered or
/// not; cloning the handle shares the channel. The protocol is described in `chan.rs`.
///
/// Blocking operations park a goroutine (or, called outside the runtime, sleep the thread).
pub struct Chan<T> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T> Clone for Chan<T> {
    fn clone(&self) -> Chan<T> {
        Chan { inner: self.inner.clone() }
    }
}

impl<T> PartialEq for Chan<T> {
    fn eq(&self, other: &Chan<T>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
impl<T> Eq for Chan<T> {}

impl<T> core::fmt::Debug for Chan<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Chan({:#x}, cap {})", self.inner.addr(), self.inner.cap)
    }
}

/// A receive found the channel closed and empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "receive from a closed, empty channel")
    }
}
impl std::error::Error for RecvError {}

/// Why [`Chan::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing to receive now.
    Empty,
    /// Closed and empty.
    Closed,
}

impl core::fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TryRecvError::Empty => write!(f, "channel empty"),
            TryRecvError::Closed => write!(f, "channel closed"),
        }
    }
}
impl std::error::Error for TryRecvError {}

/// Why [`Chan::try_send`] did not send; the value comes back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<T> {
    /// No receiver waiting and the buffer is full.
    Full(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// ```
    /// use safepoint_sched::{Chan, TrySendError};
    /// let ch = Chan::new(1);
    /// ch.try_send(1).unwrap();
    /// let e = ch.try_send(2).unwrap_err();
    /// assert!(matches!(e, TrySendError::Full(2)));
    /// assert_eq!(e.into_inner(), 2);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        }
    }
}

impl<T> core::fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TrySendError::Full(_) => write!(f, "Full(..)"),
            TrySendError::Closed(_) => write!(f, "Closed(..)"),
        }
    }
}

impl<T> core::fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TrySendError::Full(_) => write!(f, "channel full"),
            TrySendError::Closed(_) => write!(f, "send on closed channel"),
        }
    }
}
impl<T> std::error::Error for TrySendError<T> {}

/// The panic message of a send on a closed channel (Go's).
pub(crate) const SEND_CLOSED: &str = "send on closed channel";

/// Outcome of one attempt at a send, with the lock held.
pub(crate) enum SendTry<T> {
    /// Done; wake this receiver (after unlocking) if any.
    Done(Option<Token>),
    /// Would block; the value comes back.
    Block(T),
    /// Closed; the value comes back.
    Closed(T),
}

/// Outcome of one attempt at a receive, with the lock held.
pub(crate) enum RecvTry<T> {
    /// A value; wake this sender (after unlocking) if any.
    Value(T, Option<Token>),
    /// Would block.
    Block,
    /// Closed and empty.
    Closed,
}

impl<T> Inner<T> {
    /// One attempt at sending `v`.
    ///
    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn try_send_locked(&self, v: T) -> SendTry<T> {
        // SAFETY: per the contract.
        let st = unsafe { self.state() };
        if st.closed {
            return SendTry::Closed(v);
        }
        // SAFETY: we hold the lock; a dequeued node stays valid until we wake its owner.
        if let Some((sg, t)) = unsafe { st.recvq.dequeue() } {
            // SAFETY: as above: the receiver's slot is ours to fill until it is woken.
            unsafe {
                *(*sg).elem = Some(v);
                (*sg).success.set(true);
            }
            return SendTry::Done(Some(t));
        }
        if st.buf.len() < self.cap {
            st.buf.push_back(v);
            return SendTry::Done(None);
        }
        SendTry::Block(v)
    }

    /// One attempt at receiving.
    ///
    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn try_recv_locked(&self) -> RecvTry<T> {
        // SAFETY: per the contract.
        let st = unsafe { self.state() };
        // SAFETY: we hold the lock; a dequeued node stays valid until we wake its owner.
        if let Some((sg, t)) = unsafe { st.sendq.dequeue() } {
            // SAFETY: as above: the sender's value is ours to take until it is woken.
            let sent = unsafe {
                (*sg).success.set(true);
                (*(*sg).elem).take()
            };
            let sent =
                sent.unwrap_or_else(|| crate::throw!("parked channel sender without a value"));
            let v = if self.cap == 0 {
                sent
            } else {
                // Full buffer: take its head, append the sender's value.
                let head = st.buf.pop_front();
                st.buf.push_back(sent);
                head.unwrap_or_else(|| crate::throw!("sender parked on a non-full channel"))
            };
            return RecvTry::Value(v, Some(t));
        }
        if let Some(v) = st.buf.pop_front() {
            return RecvTry::Value(v, None);
        }
        if st.closed {
            return RecvTry::Closed;
        }
        RecvTry::Block
    }
}

impl<T: Send> Chan<T> {
    /// A channel with `cap` buffer slots (0: unbuffered — every send waits for a receiver).
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, go};
    ///
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::new(2); // two slots: two sends need no receiver
    ///     ch.send(1);
    ///     ch.send(2);
    ///     assert_eq!((ch.recv(), ch.recv()), (Ok(1), Ok(2)));
    ///     let unbuffered = Chan::new(0); // a send waits for its receiver
    ///     let tx = unbuffered.clone();
    ///     go(move || tx.send("hello"));
    ///     assert_eq!(unbuffered.recv(), Ok("hello"));
    /// });
    /// ```
    pub fn new(cap: usize) -> Chan<T> {
        Chan {
            inner: Arc::new(Inner {
                lock: RawLock::new(),
                state: UnsafeCell::new(State {
                    buf: VecDeque::with_capacity(cap.min(1 << 16)),
                    closed: false,
                    recvq: WaitQ::new(),
                    sendq: WaitQ::new(),
                }),
                cap,
            }),
        }
    }

    /// An unbuffered channel.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, go};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let got = rt.block_on(|| {
    ///     let ch = Chan::unbuffered();
    ///     assert_eq!(ch.cap(), 0);
    ///     let tx = ch.clone();
    ///     go(move || tx.send("hi"));
    ///     ch.recv().unwrap()
    /// });
    /// assert_eq!(got, "hi");
    /// ```
    pub fn unbuffered() -> Chan<T> {
        Chan::new(0)
    }

    /// Sends `v`, parking until a receiver takes it or a buffer slot is free.
    ///
    /// Panics (a described panic of the calling goroutine) if the channel is closed, or is
    /// closed while the send waits — as Go's `ch <- v`.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, go};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// let sum = rt.block_on(|| {
    ///     let ch = Chan::new(2);
    ///     let tx = ch.clone();
    ///     go(move || (1..=4).for_each(|i| tx.send(i))); // parks while the buffer is full
    ///     (0..4).map(|_| ch.recv().unwrap()).sum::<i32>()
    /// });
    /// assert_eq!(sum, 10);
    /// ```
    pub fn send(&self, v: T) {
        let inner = &*self.inner;
        inner.lock.lock();
        // SAFETY: we hold the lock.
        let v = match unsafe { inner.try_send_locked(v) } {
            SendTry::Done(t) => {
                inner.lock.unlock();
                if let Some(t) = t {
                    t.wake();
                }
                return;
            }
            SendTry::Closed(v) => {
                inner.lock.unlock();
                drop(v);
                panic!("{SEND_CLOSED}");
            }
            SendTry::Block(v) => v,
        };
        check_can_park(|| inner.lock.unlock());
        let mut slot = Some(v);
        let w = Waiter::new(false);
        let sg = Sudog::new(&w, 0, &mut slot);
        // SAFETY: we hold the lock; `sg` stays on this frame until a waker has unlinked it and
        // woken us (we cannot return before that).
        unsafe { inner.state().sendq.enqueue(&sg) };
        let cancelled = park_current_cancellable(WaitReason::ChanSend, |t| {
            w.set_token(t);
            inner.lock.unlock();
            true
        });
        if cancelled && inner.cancel(&sg, &w, |st| &mut st.sendq) {
            drop(slot);
            crate::proc::shutdown_unwind_current();
        }
        // Woken: the waker unlinked `sg` and set its outcome before waking us.
        if !sg.success.get() {
            drop(slot);
            panic!("{SEND_CLOSED}");
        }
    }

    /// Sends `v` if that needs no wait: a receiver is parked or a buffer slot is free.
    ///
    /// ```
    /// use safepoint_sched::{Chan, TrySendError};
    /// let ch = Chan::new(1);
    /// assert!(ch.try_send('a').is_ok());
    /// assert!(matches!(ch.try_send('b'), Err(TrySendError::Full('b'))));
    /// ch.close();
    /// assert!(matches!(ch.try_send('c'), Err(TrySendError::Closed('c'))));
    /// ```
    pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
        let inner = &*self.inner;
        inner.lock.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { inner.try_send_locked(v) };
        inner.lock.unlock();
        match r {
            SendTry::Done(t) => {
                if let Some(t) = t {
                    t.wake();
                }
                Ok(())
            }
            SendTry::Closed(v) => Err(TrySendError::Closed(v)),
            SendTry::Block(v) => Err(TrySendError::Full(v)),
        }
    }

    /// Receives a value, parking until one comes; `Err(RecvError)` once the channel is closed
    /// and empty (Go's `v, ok := <-ch` with `ok == false`).
    ///
    /// ```
    /// use safepoint_sched::{Chan, RecvError};
    /// let ch = Chan::new(4);
    /// ch.send(7);
    /// ch.close();
    /// assert_eq!(ch.recv(), Ok(7)); // what was buffered comes out first
    /// assert_eq!(ch.recv(), Err(RecvError));
    /// ```
    pub fn recv(&self) -> Result<T, RecvError> {
        let inner = &*self.inner;
        inner.lock.lock();
        // SAFETY: we hold the lock.
        match unsafe { inner.try_recv_locked() } {
            RecvTry::Value(v, t) => {
                inner.lock.unlock();
                if let Some(t) = t {
                    t.wake();
                }
                return Ok(v);
            }
            RecvTry::Closed => {
                inner.lock.unlock();
                return Err(RecvError);
            }
            RecvTry::Block => {}
        }
        check_can_park(|| inner.lock.unlock());
        let mut slot: Option<T> = None;
        let w = Waiter::new(false);
        let sg = Sudog::new(&w, 0, &mut slot);
        // SAFETY: as in `send`.
        unsafe { inner.state().recvq.enqueue(&sg) };
        let cancelled = park_current_cancellable(WaitReason::ChanRecv, |t| {
            w.set_token(t);
            inner.lock.unlock();
            true
        });
        if cancelled && inner.cancel(&sg, &w, |st| &mut st.recvq) {
            crate::proc::shutdown_unwind_current();
        }
        if sg.success.get() {
            Ok(slot.unwrap_or_else(|| crate::throw!("channel receive woken without a value")))
        } else {
            Err(RecvError)
        }
    }

    /// Receives a value if one is there now (buffered, or from a parked sender).
    ///
    /// ```
    /// use safepoint_sched::{Chan, TryRecvError};
    /// let ch = Chan::new(1);
    /// assert_eq!(ch.try_recv(), Err(TryRecvError::Empty));
    /// ch.send(3);
    /// assert_eq!(ch.try_recv(), Ok(3));
    /// ch.close();
    /// assert_eq!(ch.try_recv(), Err(TryRecvError::Closed));
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let inner = &*self.inner;
        inner.lock.lock();
        // SAFETY: we hold the lock.
        let r = unsafe { inner.try_recv_locked() };
        inner.lock.unlock();
        match r {
            RecvTry::Value(v, t) => {
                if let Some(t) = t {
                    t.wake();
                }
                Ok(v)
            }
            RecvTry::Closed => Err(TryRecvError::Closed),
            RecvTry::Block => Err(TryRecvError::Empty),
        }
    }

    /// Closes the channel: parked receivers get `Err(RecvError)` (after the buffered values
    /// are drained, later receivers too), parked senders panic with `send on closed channel`.
    ///
    /// Panics if it is already closed (`close of closed channel`).
    ///
    /// ```
    /// use safepoint_sched::{Chan, RecvError, Runtime};
    ///
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::new(4);
    ///     ch.send(7);
    ///     ch.close();
    ///     assert_eq!(ch.recv(), Ok(7)); // buffered values are still delivered
    ///     assert_eq!(ch.recv(), Err(RecvError)); // then: closed
    ///     assert_eq!(ch.iter().count(), 0);
    /// });
    /// ```
    pub fn close(&self) {
        let inner = &*self.inner;
        inner.lock.lock();
        // SAFETY: we hold the lock until the unlock below, and drop `st` before it.
        let st = unsafe { inner.state() };
        if st.closed {
            inner.lock.unlock();
            panic!("close of closed channel");
        }
        st.closed = true;
        let mut wake = Vec::new();
        // SAFETY: we hold the lock; dequeued nodes stay valid until we wake their owners.
        unsafe {
            while let Some((sg, t)) = st.recvq.dequeue() {
                (*sg).success.set(false);
                wake.push(t);
            }
            while let Some((sg, t)) = st.sendq.dequeue() {
                (*sg).success.set(false);
                wake.push(t);
            }
        }
        inner.lock.unlock();
        for t in wake {
            t.wake();
        }
    }

    /// Whether the channel has been closed.
    ///
    /// ```
    /// let ch = safepoint_sched::Chan::<u8>::new(0);
    /// assert!(!ch.is_closed());
    /// ch.close();
    /// assert!(ch.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.with_state(|st| st.closed)
    }

    /// Values buffered now.
    ///
    /// ```
    /// let ch = safepoint_sched::Chan::new(3);
    /// ch.send(1);
    /// ch.send(2);
    /// assert_eq!(ch.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.with_state(|st| st.buf.len())
    }

    /// Whether no value is buffered now.
    ///
    /// ```
    /// let ch = safepoint_sched::Chan::new(1);
    /// assert!(ch.is_empty());
    /// ch.send(());
    /// assert!(!ch.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of memory a channel of `cap` slots takes when made: its shared state and its
    /// buffer (made with room for at most 65,536 messages; a larger one grows as it fills),
    /// without the allocator's own overhead. For an embedder that reports the memory its
    /// managed objects own outside a collector's heap (as Pebble does for its channels).
    ///
    /// ```
    /// use safepoint_sched::Chan;
    /// let small = Chan::<u64>::footprint(0);
    /// assert_eq!(Chan::<u64>::footprint(100), small + 100 * 8);
    /// assert_eq!(Chan::<u64>::footprint(1 << 20), small + (1 << 16) * 8);
    /// ```
    pub fn footprint(cap: usize) -> usize {
        // The `Arc`'s two counts, the shared state, and the buffer `new` makes.
        2 * core::mem::size_of::<usize>()
            + core::mem::size_of::<Inner<T>>()
            + cap.min(1 << 16) * core::mem::size_of::<T>()
    }

    /// Buffer slots (0 for an unbuffered channel).
    ///
    /// ```
    /// assert_eq!(safepoint_sched::Chan::<u8>::new(8).cap(), 8);
    /// ```
    pub fn cap(&self) -> usize {
        self.inner.cap
    }

    /// Goroutines (or threads) parked sending and receiving now, for tests and dumps.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, go, yield_now};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let ch = Chan::<u8>::new(0);
    ///     let rx = ch.clone();
    ///     let h = go(move || rx.recv().unwrap());
    ///     while ch.waiting() != (0, 1) {
    ///         yield_now(); // until the receiver has parked
    ///     }
    ///     ch.send(5);
    ///     assert_eq!(h.join().unwrap(), 5);
    ///     assert_eq!(ch.waiting(), (0, 0));
    /// });
    /// ```
    pub fn waiting(&self) -> (usize, usize) {
        fn count<T>(q: &WaitQ<T>) -> usize {
            let mut n = 0;
            let mut p = q.head;
            while !p.is_null() {
                n += 1;
                // SAFETY: called with the lock held: linked nodes are valid.
                p = unsafe { (*p).next.get() };
            }
            n
        }
        self.with_state(|st| (count(&st.sendq), count(&st.recvq)))
    }

    fn with_state<R>(&self, f: impl FnOnce(&State<T>) -> R) -> R {
        self.inner.lock.lock();
        // SAFETY: we hold the lock for the duration of `f`.
        let r = f(unsafe { self.inner.state() });
        self.inner.lock.unlock();
        r
    }

    /// An iterator receiving until the channel is closed and empty (Go's `for v := range ch`).
    ///
    /// ```
    /// let ch = safepoint_sched::Chan::new(3);
    /// (1..=3).for_each(|i| ch.send(i));
    /// ch.close();
    /// assert_eq!(ch.iter().collect::<Vec<_>>(), [1, 2, 3]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { chan: self }
    }
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        // Nobody can be parked on a channel nobody holds: a parked waiter holds a handle.
        debug_assert!(st.recvq.is_empty() && st.sendq.is_empty());
    }
}

/// Receives until the channel is closed and empty; see [`Chan::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    chan: &'a Chan<T>,
}

impl<T: Send> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.chan.recv().ok()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Unbuffered hand-off: a sender and a receiver meet whichever parks first; the value
    /// arrives exactly once and neither is left parked.
    #[test]
    fn loom_unbuffered_handoff() {
        crate::wait::loom_model(|| {
            let c = Chan::<u32>::new(0);
            let c2 = c.clone();
            let t = thread::spawn(move || c2.send(7));
            assert_eq!(c.recv(), Ok(7));
            t.join().unwrap();
            assert_eq!(c.waiting(), (0, 0));
        });
    }

    /// Close races with a parked (or about to park) receiver: the receiver sees either the
    /// value or "closed", never hangs.
    #[test]
    fn loom_close_wakes_receiver() {
        crate::wait::loom_model(|| {
            let c = Chan::<u32>::new(1);
            let c2 = c.clone();
            let t = thread::spawn(move || {
                let _ = c2.try_send(1);
                c2.close();
            });
            let mut got = Vec::new();
            while let Ok(v) = c.recv() {
                got.push(v);
            }
            t.join().unwrap();
            assert_eq!(got, vec![1]);
        });
    }
}
