//! Timers: [`sleep`], one-shot [`Timer`]s and [`after`] that fire into a channel, [`Ticker`]s,
//! and (through them) timeouts in [`crate::Select`].
//!
//! ## Where timers live
//!
//! Each P has a heap of timer entries ordered by deadline (then by insertion), behind its own
//! [`RawLock`]; a timer goes on the heap of the P that armed it. An entry is either a sleeping
//! goroutine's wake-up token (a `sleep` cannot be cancelled) or a reference to a [`Timer`]'s
//! shared state together with the generation it was armed at: stopping or resetting a timer
//! bumps its generation, so its old entry becomes a *zombie* that is dropped when it reaches
//! the top (or when zombies make up a quarter of a heap, which is then compacted). Each heap
//! publishes its earliest deadline in an atomic, so looking for due timers costs one load per P.
//!
//! ## Who runs them
//!
//! * Every M, each time it schedules, runs its own P's due timers; a spinning M runs any P's.
//! * An M going idle while timers are pending becomes the *timed sleeper* if there is none: it
//!   sleeps on its note only until the earliest deadline, then takes an idle P and runs what is
//!   due. Arming a timer earlier than the timed sleeper's deadline wakes it to sleep less; arming
//!   one while there is no timed sleeper wakes an idle M (`wakep`) if there is one, which becomes
//!   it. So an otherwise idle runtime sleeps exactly until the next deadline and uses no CPU.
//! * sysmon, as a backstop, runs timers that are due on a P whose goroutine has kept it busy,
//!   and bounds its own sleep by the earliest deadline while any P runs. With every P idle it
//!   still wakes shortly after the earliest deadline, and if the timer is still pending 10 ms
//!   past it (no timed sleeper ran it) it wakes an M for it (`Stats::timer_backstops`), as
//!   Go's sysmon starts an M for timers that should have run: a timed sleeper lost to a bug
//!   costs a late timer, not a goroutine asleep for good.
//!
//! A timer fires at or after its deadline, never before (deadlines and the clock are both
//! `CLOCK_MONOTONIC`, the clock of [`Instant`]), and the timers of one heap fire in deadline
//! order.
//!
//! Timer-based calls ([`Timer`], [`Ticker`], [`after`], select timeouts) need a goroutine: the
//! timer belongs to its runtime. [`sleep`] outside a runtime sleeps the thread.

use core::cell::{Cell, UnsafeCell};
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use safepoint_arch::nanotime;

use crate::chan::Chan;
use crate::runtime::{M, P, PStatus, Sched, current_m};
use crate::shim::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::wait::{RawLock, Token};

/// What an entry does when it fires.
enum Kind {
    /// Wake a sleeping goroutine.
    Wake(Token),
    /// Fire a [`Timer`]/[`Ticker`] armed at this generation.
    Timer(Arc<Shared>, u64),
}

struct Entry {
    when: u64,
    seq: u64,
    kind: Kind,
}

impl Entry {
    fn live(&self) -> bool {
        match &self.kind {
            Kind::Wake(_) => true,
            // Acquire: pairs with the Release stores of `gen` (a racy read is fine: a stale
            // generation only ever grows).
            Kind::Timer(s, g) => s.generation.load(Ordering::Acquire) == *g,
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Entry) -> bool {
        (self.when, self.seq) == (o.when, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Entry) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first, and the
    /// earliest armed among equal deadlines.
    fn cmp(&self, o: &Entry) -> core::cmp::Ordering {
        (o.when, o.seq).cmp(&(self.when, self.seq))
    }
}

/// One P's timer heap.
pub(crate) struct PTimers {
    lock: RawLock,
    /// Guarded by `lock`.
    heap: UnsafeCell<BinaryHeap<Entry>>,
    /// Guarded by `lock`: insertion counter, for FIFO order among equal deadlines.
    seq: Cell<u64>,
    /// Earliest deadline on the heap (0: empty). Written under `lock`, read racily as a hint.
    next: AtomicU64,
    /// Entries known to be stale (stopped or reset timers), for compaction.
    zombies: AtomicUsize,
    /// Someone is firing this P's due timers. One runner at a time, so that a P's timers fire
    /// in deadline order: two runners popping in turn could each fire (and timestamp) out of
    /// order.
    firing: AtomicBool,
}

// SAFETY: `heap` and `seq` are only touched with `lock` held; the rest are atomics.
unsafe impl Sync for PTimers {}
// SAFETY: as above.
unsafe impl Send for PTimers {}

impl PTimers {
    pub(crate) fn new() -> PTimers {
        PTimers {
            lock: RawLock::new(),
            heap: UnsafeCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            next: AtomicU64::new(0),
            zombies: AtomicUsize::new(0),
            firing: AtomicBool::new(false),
        }
    }

    /// The earliest deadline here, 0 if none (a hint).
    pub(crate) fn next(&self) -> u64 {
        // SeqCst: the Dekker pair with the timed sleeper's announcement (see `idle_deadline`).
        self.next.load(Ordering::SeqCst)
    }

    fn with<R>(&self, f: impl FnOnce(&mut BinaryHeap<Entry>) -> R) -> R {
        self.lock.lock();
        // SAFETY: we hold the lock for the duration of `f`.
        let heap = unsafe { &mut *self.heap.get() };
        let r = f(heap);
        // SeqCst: see `next()`.
        self.next.store(heap.peek().map_or(0, |e| e.when), Ordering::SeqCst);
        self.lock.unlock();
        r
    }

    fn push(&self, when: u64, kind: Kind) {
        self.with(|heap| {
            let z = self.zombies.load(Ordering::Relaxed);
            if z > 64 && z * 4 > heap.len() {
                heap.retain(Entry::live);
                self.zombies.store(0, Ordering::Relaxed);
            }
            let seq = self.seq.get();
            self.seq.set(seq + 1);
            heap.push(Entry { when: when.max(1), seq, kind });
        });
    }

    /// Pops the first entry due at `now`, dropping zombies on the way.
    fn pop_due(&self, now: u64) -> Option<Entry> {
        self.with(|heap| {
            while let Some(e) = heap.peek() {
                if e.when > now {
                    return None;
                }
                let e = heap.pop().expect("peeked");
                if e.live() {
                    return Some(e);
                }
                let z = self.zombies.load(Ordering::Relaxed);
                self.zombies.store(z.saturating_sub(1), Ordering::Relaxed);
            }
            None
        })
    }
}

/// The runtime-wide timer state.
pub(crate) struct SchedTimers {
    /// The M sleeping until the earliest deadline (0: none).
    sleeper: AtomicUsize,
    /// Its deadline (u64::MAX: none).
    until: AtomicU64,
    /// Timer entries popped and not yet fired (deadlock detection must not miss them).
    pub(crate) running: AtomicUsize,
    /// How often sysmon found a timer overdue with every P idle (see [`sysmon_idle`]).
    pub(crate) backstops: AtomicU64,
    /// Tests: no M may become the timed sleeper (the role lost), so that only sysmon's
    /// backstop can run a timer of an idle runtime.
    #[cfg(test)]
    pub(crate) lose_sleeper: AtomicBool,
    /// Tests: how long a runner that is not an M (sysmon) waits between a ticker's fire and
    /// the push of its next tick (0: not at all), and whether one did.
    #[cfg(test)]
    pub(crate) repush_delay_ms: AtomicU64,
    #[cfg(test)]
    pub(crate) repush_delayed: AtomicBool,
}

impl SchedTimers {
    pub(crate) fn new() -> SchedTimers {
        SchedTimers {
            sleeper: AtomicUsize::new(0),
            until: AtomicU64::new(u64::MAX),
            running: AtomicUsize::new(0),
            backstops: AtomicU64::new(0),
            #[cfg(test)]
            lose_sleeper: AtomicBool::new(false),
            #[cfg(test)]
            repush_delay_ms: AtomicU64::new(0),
            #[cfg(test)]
            repush_delayed: AtomicBool::new(false),
        }
    }
}

/// The earliest deadline over every P (0: none).
pub(crate) fn earliest(sched: &Sched) -> u64 {
    sched.ps.iter().map(|p| p.timers.next()).filter(|&w| w != 0).min().unwrap_or(0)
}

/// Arms an entry on the current P's heap (P0's if the caller holds none), then makes sure
/// someone will be awake to run it.
fn arm(sched: &Sched, when: u64, kind: Kind) -> usize {
    let p = current_m().filter(|m| core::ptr::eq(m.sched, sched)).and_then(|m| m.p());
    let pi = p.map_or(0, |p| p.id);
    sched.ps[pi].timers.push(when, kind);
    wake_for(sched, when);
    pi
}

/// After an entry due at `when` was pushed on a heap: makes sure someone will be awake to run
/// it. Every push but the one `idle_deadline` itself makes must be followed by this: an M going
/// idle just before the push found no timer and sleeps with no deadline.
fn wake_for(sched: &Sched, when: u64) {
    // SeqCst: Dekker with `idle_deadline`: it announces `until` then reads the heaps; we wrote
    // the heap's `next` then read `until`. One of us sees the other.
    let until = sched.timers.until.load(Ordering::SeqCst);
    if when < until {
        let sleeper = sched.timers.sleeper.load(Ordering::SeqCst) as *const M;
        // SAFETY: Ms live until the runtime shuts down, and a runtime's timers are armed only
        // while it runs.
        match unsafe { sleeper.as_ref() } {
            Some(m) => m.park.wakeup(),
            None => sched.wakep(),
        }
    }
}

/// Fires one due entry. Runs on any thread (an M with or without a P, or sysmon).
fn fire(sched: &Sched, pi: usize, e: Entry, now: u64) {
    match e.kind {
        Kind::Wake(t) => t.wake(),
        Kind::Timer(s, generation) => {
            let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.generation.load(Ordering::Relaxed) != generation {
                return;
            }
            // Drop the tick if the last one was not received (Go's tickers do the same).
            let _ = st.chan.try_send(Instant::now());
            if st.period > 0 {
                // Next tick: the first multiple of the period after now.
                let mut next = e.when + st.period;
                if next <= now {
                    next += (now - next) / st.period * st.period + st.period;
                }
                st.when = next;
                st.p = pi;
                drop(st);
                #[cfg(test)]
                if current_m().is_none() {
                    test_hooks::off_m_repush(sched);
                }
                sched.ps[pi].timers.push(next, Kind::Timer(s.clone(), generation));
                // The runner may be sysmon, which never goes idle: without a wake-up, the Ms
                // that went idle while the tick was off the heap (each found no timer
                // pending) would all sleep past it.
                wake_for(sched, next);
            } else {
                st.when = 0;
            }
        }
    }
}

/// Runs the due timers of `p`; returns how many fired.
fn run_p(sched: &Sched, p: &P, now: u64, max: usize) -> usize {
    let next = p.timers.next();
    if next == 0 || next > now {
        return 0;
    }
    // One runner per P (see `firing`); a P whose timers are being fired is skipped: the runner
    // pops every due one it is allowed to. Acquire: pairs with the Release below.
    if p.timers.firing.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
    {
        return 0;
    }
    // SeqCst: deadlock detection reads `running` after the heaps; an entry popped before it
    // looked is counted here until it has fired.
    sched.timers.running.fetch_add(1, Ordering::SeqCst);
    let mut n = 0;
    while n < max
        && let Some(e) = p.timers.pop_due(now)
    {
        fire(sched, p.id, e, now);
        n += 1;
    }
    sched.timers.running.fetch_sub(1, Ordering::SeqCst);
    // Release: the next runner sees this one's pops and re-pushes.
    p.timers.firing.store(false, Ordering::Release);
    n
}

/// Scheduler hook: runs the due timers of `p` (the caller's own P). Cheap when none is due.
///
/// Runs on: g0 of an M holding `p`.
#[inline]
pub(crate) fn check(sched: &Sched, p: &P) {
    let next = p.timers.next();
    if next != 0 {
        check_slow(sched, p, next);
    }
}

#[cold]
fn check_slow(sched: &Sched, p: &P, next: u64) {
    let now = nanotime();
    if next <= now {
        // One at a time: a woken goroutine goes to `runnext`, and readying a second would push
        // the first to the back of a queue that may be long; the next due timer fires at the
        // next schedule, a goroutine later (in deadline order), or on another P that steals.
        run_p(sched, p, now, 1);
    }
}

/// Scheduler hook for spinning Ms (and the timed sleeper): runs the due timers of every P.
pub(crate) fn check_all(sched: &Sched) -> usize {
    let e = earliest(sched);
    if e == 0 {
        return 0;
    }
    let now = nanotime();
    if e > now {
        return 0;
    }
    sched.ps.iter().map(|p| run_p(sched, p, now, usize::MAX)).sum()
}

/// Whether a timer is due now (on any P).
pub(crate) fn due(sched: &Sched) -> bool {
    let e = earliest(sched);
    e != 0 && e <= nanotime()
}

/// Scheduler hook, on an M that has given up its P and is about to sleep: if timers are
/// pending and nobody is the timed sleeper, becomes it and returns the deadline to sleep until.
pub(crate) fn idle_deadline(sched: &Sched, m: &M) -> Option<u64> {
    let first = earliest(sched);
    if first == 0 {
        return None;
    }
    #[cfg(test)]
    if sched.timers.lose_sleeper.load(Ordering::Relaxed) {
        return None;
    }
    precise_timeouts();
    let me = m as *const M as usize;
    // SeqCst: see `arm`.
    if sched.timers.sleeper.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        return None;
    }
    let mut until = first;
    loop {
        sched.timers.until.store(until, Ordering::SeqCst);
        // Re-read after announcing: a timer armed meanwhile either saw our deadline (and will
        // wake us if it is earlier) or is seen here.
        let e = earliest(sched);
        if e == 0 || e >= until {
            return Some(until);
        }
        until = e;
    }
}

std::thread_local! {
    static PRECISE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Asks the kernel to end this thread's timed sleeps on time: by default Linux lets a timeout
/// of a normal thread run up to 50 us late (timer slack) to batch wake-ups; the timed sleeper's
/// timeout is the timer deadline itself. Once per thread.
///
/// Runs on: g0 of an M (the thread-local is read and written with no switch in between).
#[inline(never)]
fn precise_timeouts() {
    PRECISE.with(|p| {
        if !p.replace(true) {
            // SAFETY: PR_SET_TIMERSLACK takes one integer argument (nanoseconds) and only
            // changes this thread's timer slack; failure leaves the default, which is harmless.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        }
    });
}

/// Scheduler hook, after the timed sleeper wakes: gives up the role.
pub(crate) fn idle_done(sched: &Sched, m: &M) {
    let me = m as *const M as usize;
    if sched.timers.sleeper.load(Ordering::SeqCst) == me {
        sched.timers.until.store(u64::MAX, Ordering::SeqCst);
        sched.timers.sleeper.store(0, Ordering::SeqCst);
    }
}

/// sysmon hook: runs due timers of Ps kept busy (their own M would run them at its next
/// schedule, which a long-running goroutine delays), and returns the earliest deadline (0:
/// none) to bound sysmon's sleep.
pub(crate) fn sysmon(sched: &Sched) -> u64 {
    let now = nanotime();
    for p in sched.ps.iter() {
        let next = p.timers.next();
        // Only for a P stuck in one goroutine (no schedule since sysmon's last look, see
        // `retake`), after a grace period: a P that schedules runs its own timers, and what
        // sysmon readies goes to the global queue, which a busy P serves less often. (A P in a
        // blocking call is retaken and handed off, and its new M runs them.)
        if next != 0
            && next + SYSMON_GRACE_NS <= now
            && matches!(p.status(), PStatus::Running | PStatus::Held)
            && p.sysmon_schedtick.load(Ordering::Relaxed) == p.schedtick.load(Ordering::Relaxed)
        {
            run_p(sched, p, now, usize::MAX);
        }
    }
    earliest(sched)
}

/// sysmon hook, when every P is idle: a timer overdue by [`IDLE_BACKSTOP_NS`] means no M is
/// on its way to run it (the timed sleeper runs a timer at its deadline, and an M woken for it
/// takes microseconds): wake one (`wakep`), which, spinning, runs every P's due timers. The
/// backstop of the timed sleeper, as Go's sysmon starts an M for timers that should have run:
/// a lost timed sleeper costs a late timer, never a goroutine asleep for good. Counted in
/// `Stats::timer_backstops`.
pub(crate) fn sysmon_idle(sched: &Sched) {
    let next = earliest(sched);
    if next != 0 && next + IDLE_BACKSTOP_NS <= nanotime() {
        // Relaxed: a counter.
        sched.timers.backstops.fetch_add(1, Ordering::Relaxed);
        sched.wakep();
    }
}

/// How late a timer may be, with every P idle, before sysmon wakes an M for it.
pub(crate) const IDLE_BACKSTOP_NS: u64 = 10_000_000;

/// How long a due timer is left to its own P before sysmon runs it.
const SYSMON_GRACE_NS: u64 = 100_000;

/// Whether any timer is armed or being fired (deadlock detection). A heap holding only zombies
/// counts as pending until they reach their deadlines and are dropped (the M that drops them
/// then goes idle and checks again): cheap, and never a false deadlock.
pub(crate) fn pending(sched: &Sched) -> bool {
    sched.ps.iter().any(|p| p.timers.next() != 0)
        || sched.timers.running.load(Ordering::SeqCst) != 0
}

/// The calling goroutine's runtime.
fn running_sched() -> Weak<Sched> {
    current_m()
        .and_then(|m| m.curg())
        .and_then(|g| {
            // A runtime critical section: see `Sched::all_gs`.
            crate::preempt::rt_section(|| {
                g.owner.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Arc::downgrade)
            })
        })
        .unwrap_or_else(|| panic!("timers must be armed on a goroutine of a safepoint runtime"))
}

fn deadline_of(at: Instant) -> u64 {
    let (ni, nn) = (Instant::now(), nanotime());
    nn + at.saturating_duration_since(ni).as_nanos().min(u64::MAX as u128 / 2) as u64
}

/// Sleeps for at least `d`: the goroutine parks until its timer fires. Outside a runtime, the
/// thread sleeps.
///
/// ```
/// use std::time::{Duration, Instant};
/// use safepoint_sched::{Runtime, sleep};
///
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// let waited = rt.block_on(|| {
///     let t0 = Instant::now();
///     sleep(Duration::from_millis(2)); // parks the goroutine, not the thread
///     t0.elapsed()
/// });
/// assert!(waited >= Duration::from_millis(2));
/// ```
pub fn sleep(d: Duration) {
    let when = nanotime().saturating_add(d.as_nanos().min(u64::MAX as u128 / 2) as u64);
    sleep_until_nanos(when, d);
}

/// Sleeps until `at` (returns at once if it has passed).
///
/// ```
/// use std::time::{Duration, Instant};
/// use safepoint_sched::{Runtime, sleep_until};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// let at = Instant::now() + Duration::from_millis(5);
/// rt.block_on(move || sleep_until(at));
/// assert!(Instant::now() >= at);
/// ```
pub fn sleep_until(at: Instant) {
    let d = at.saturating_duration_since(Instant::now());
    sleep_until_nanos(deadline_of(at), d);
}

fn sleep_until_nanos(when: u64, d: Duration) {
    if d.is_zero() {
        return;
    }
    if !crate::wait::on_goroutine() {
        std::thread::sleep(d);
        return;
    }
    crate::park(crate::WaitReason::Sleep, |r| {
        let m = current_m().expect("park callback runs on an M");
        arm(m.sched(), when, Kind::Wake(Token::G(r)));
        true
    });
}

/// A timer's state, shared by its handle and its heap entry.
struct Shared {
    /// Bumped (under `state`) by every stop and reset: older heap entries are zombies.
    generation: AtomicU64,
    state: Mutex<TState>,
    /// The runtime whose heaps the timer is armed on (weak: a heap entry holds the timer).
    sched: Weak<Sched>,
}

struct TState {
    /// Deadline of the armed entry (0: not armed).
    when: u64,
    /// Ticker period (0: one-shot).
    period: u64,
    /// Heap the armed entry is on.
    p: usize,
    chan: Chan<Instant>,
}

impl Shared {
    fn new(period: u64) -> (Arc<Shared>, Chan<Instant>) {
        let chan = Chan::new(1);
        let s = Arc::new(Shared {
            generation: AtomicU64::new(0),
            state: Mutex::new(TState { when: 0, period, p: 0, chan: chan.clone() }),
            sched: running_sched(),
        });
        (s, chan)
    }

    /// Disarms; returns whether the timer was pending (armed, or fired with the value not yet
    /// received — which is discarded, so that no stale value is received after a stop).
    fn stop_locked(&self, st: &mut TState) -> bool {
        let g = self.generation.load(Ordering::Relaxed);
        // Release: pairs with the Acquire in `Entry::live`.
        self.generation.store(g + 1, Ordering::Release);
        let armed = st.when != 0;
        if armed && let Some(s) = self.sched.upgrade() {
            s.ps[st.p].timers.zombies.fetch_add(1, Ordering::Relaxed);
        }
        st.when = 0;
        let unreceived = st.chan.try_recv().is_ok();
        armed || unreceived
    }

    fn arm_locked(self: &Arc<Shared>, st: &mut TState, when: u64) {
        st.when = when.max(1);
        let g = self.generation.load(Ordering::Relaxed);
        // A runtime that has shut down runs no timers: the timer just never fires.
        if let Some(s) = self.sched.upgrade() {
            st.p = arm(&s, st.when, Kind::Timer(self.clone(), g));
        }
    }

    fn stop(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.stop_locked(&mut st)
    }

    fn reset(self: &Arc<Shared>, when: u64, period: Option<u64>) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was = self.stop_locked(&mut st);
        if let Some(p) = period {
            st.period = p;
        }
        self.arm_locked(&mut st, when);
        was
    }
}

/// A one-shot timer: at its deadline the current time is sent on its channel (one slot).
/// Dropping it stops it.
///
/// Stop and reset follow Go 1.23: once they return, no value from before is received.
pub struct Timer {
    shared: Arc<Shared>,
    chan: Chan<Instant>,
    stop_on_drop: bool,
}

impl core::fmt::Debug for Timer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Timer({:?})", self.chan)
    }
}

impl Timer {
    /// A timer firing after `d`. Runs on: a goroutine (a described panic otherwise).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use safepoint_sched::{Runtime, Timer};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let t0 = Instant::now();
    /// let fired = rt.block_on(|| Timer::new(Duration::from_millis(2)).chan().recv().unwrap());
    /// assert!(fired >= t0 + Duration::from_millis(2));
    /// ```
    pub fn new(d: Duration) -> Timer {
        Timer::at(Instant::now() + d)
    }

    /// A timer firing at `at`. Runs on: a goroutine.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use safepoint_sched::{Runtime, Timer};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let at = Instant::now() + Duration::from_millis(2);
    /// let fired = rt.block_on(move || Timer::at(at).chan().recv().unwrap());
    /// assert!(fired >= at);
    /// ```
    pub fn at(at: Instant) -> Timer {
        let (shared, chan) = Shared::new(0);
        {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            shared.arm_locked(&mut st, deadline_of(at));
        }
        Timer { shared, chan, stop_on_drop: true }
    }

    /// The channel the timer fires into.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Timer};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Timer::new(Duration::from_millis(1));
    ///     assert!(t.chan().recv().is_ok());
    ///     assert!(t.chan().try_recv().is_err()); // it fires once
    /// });
    /// ```
    pub fn chan(&self) -> &Chan<Instant> {
        &self.chan
    }

    /// Stops the timer; returns whether it was still pending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Timer};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Timer::new(Duration::from_secs(3600));
    ///     assert!(t.stop()); // stopped before it fired
    ///     assert!(!t.stop());
    ///     assert!(t.chan().try_recv().is_err());
    /// });
    /// ```
    pub fn stop(&self) -> bool {
        self.shared.stop()
    }

    /// Re-arms the timer to fire after `d`; returns whether it was still pending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Timer};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Timer::new(Duration::from_secs(3600));
    ///     assert!(t.reset(Duration::from_millis(1))); // it was pending
    ///     assert!(t.chan().recv().is_ok());
    /// });
    /// ```
    pub fn reset(&self, d: Duration) -> bool {
        self.shared.reset(deadline_of(Instant::now() + d), None)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if self.stop_on_drop {
            self.shared.stop();
        }
    }
}

/// A channel that receives the time once, after `d` (Go's `time.After`). The timer cannot be
/// stopped; use [`Timer`] for that. Runs on: a goroutine.
///
/// ```
/// use std::time::{Duration, Instant};
/// use safepoint_sched::{Runtime, after};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// let t0 = Instant::now();
/// let fired = rt.block_on(|| after(Duration::from_millis(2)).recv().unwrap());
/// assert!(fired >= t0 + Duration::from_millis(2));
/// ```
pub fn after(d: Duration) -> Chan<Instant> {
    let mut t = Timer::new(d);
    t.stop_on_drop = false;
    t.chan.clone()
}

/// A ticker: the current time is sent on its channel every `period` (a tick is dropped if the
/// previous one was not received yet). Dropping it stops it.
pub struct Ticker {
    shared: Arc<Shared>,
    chan: Chan<Instant>,
}

impl core::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ticker({:?})", self.chan)
    }
}

impl Ticker {
    /// A ticker with `period` (non-zero). Runs on: a goroutine.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Ticker};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ticks = rt.block_on(|| {
    ///     let t = Ticker::new(Duration::from_millis(1));
    ///     (0..3).map(|_| t.chan().recv().unwrap()).collect::<Vec<_>>()
    /// });
    /// assert!(ticks[0] < ticks[1] && ticks[1] < ticks[2]);
    /// ```
    pub fn new(period: Duration) -> Ticker {
        let p = period.as_nanos().min(u64::MAX as u128 / 4) as u64;
        assert!(p > 0, "Ticker::new: non-positive period");
        let (shared, chan) = Shared::new(p);
        {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            shared.arm_locked(&mut st, nanotime() + p);
        }
        Ticker { shared, chan }
    }

    /// The channel the ticks arrive on.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Ticker};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Ticker::new(Duration::from_millis(1));
    ///     assert!(t.chan().recv().is_ok());
    ///     assert!(t.chan().recv().is_ok());
    /// });
    /// ```
    pub fn chan(&self) -> &Chan<Instant> {
        &self.chan
    }

    /// Stops the ticker.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Ticker, sleep};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Ticker::new(Duration::from_millis(1));
    ///     t.chan().recv().unwrap();
    ///     t.stop();
    ///     let _ = t.chan().try_recv(); // at most one tick was left waiting
    ///     sleep(Duration::from_millis(5));
    ///     assert!(t.chan().try_recv().is_err());
    /// });
    /// ```
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Restarts the ticker with a new period, the next tick `period` from now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safepoint_sched::{Runtime, Ticker};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let t = Ticker::new(Duration::from_secs(3600));
    ///     t.reset(Duration::from_millis(1));
    ///     assert!(t.chan().recv().is_ok());
    /// });
    /// ```
    pub fn reset(&self, period: Duration) {
        let p = period.as_nanos().min(u64::MAX as u128 / 4) as u64;
        assert!(p > 0, "Ticker::reset: non-positive period");
        self.shared.reset(nanotime() + p, Some(p));
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

#[cfg(test)]
mod test_hooks {
    use super::*;

    /// A ticker's next tick about to be pushed by a runner that is not an M: waits as long
    /// as the test asked, widening the window in which every M goes idle finding no timer.
    pub(super) fn off_m_repush(sched: &Sched) {
        let ms = sched.timers.repush_delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            sched.timers.repush_delayed.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod backstop_tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use crate::Runtime;

    /// With the timed sleeper's role lost, every M of an idle runtime sleeps with no deadline:
    /// a goroutine's `sleep` would never end but for sysmon's backstop, which wakes an M for
    /// the overdue timer.
    #[test]
    #[cfg_attr(miri, ignore = "runs a runtime (context switches in assembly)")]
    fn a_timer_of_an_idle_runtime_fires_even_with_no_timed_sleeper() {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.sched.timers.lose_sleeper.store(true, crate::shim::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let h = rt
            .spawn(move || {
                let t0 = Instant::now();
                crate::sleep(Duration::from_millis(5));
                tx.send(t0.elapsed()).unwrap();
            })
            .unwrap();
        // A deadline, so that a lost timer fails the test instead of hanging it.
        let slept = rx.recv_timeout(Duration::from_secs(30)).expect("the sleep never ended");
        h.join().unwrap();
        assert!(slept >= Duration::from_millis(5));
        assert!(rt.stats().timer_backstops > 0, "woken without the backstop?");
    }

    /// sysmon fires the tick of a ticker whose P is kept busy, and pushes its next tick; the
    /// P's goroutine then parks, and its M goes idle before that push, finding no timer, so
    /// it sleeps with no deadline. The push must wake someone: the next tick is received with
    /// no help from the backstop. (Without the wake-up, as a sched test hung under qemu.)
    #[test]
    #[cfg_attr(miri, ignore = "runs a runtime (context switches in assembly)")]
    fn a_tick_pushed_by_sysmon_wakes_an_idle_runtime() {
        // sysmon must catch the busy P with its tick due; on a loaded machine it may not get
        // a core in time, so an attempt in which it did not counts for nothing.
        for _attempt in 0..20 {
            let rt = Runtime::builder().procs(1).build().unwrap();
            rt.sched.timers.repush_delay_ms.store(30, crate::shim::Ordering::Relaxed);
            let (tx, rx) = mpsc::channel();
            let h = rt
                .spawn(move || {
                    let tk = crate::Ticker::new(Duration::from_millis(2));
                    // Busy, never scheduling, past the first tick: sysmon fires it.
                    let t0 = Instant::now();
                    while t0.elapsed() < Duration::from_millis(6) {
                        core::hint::spin_loop();
                    }
                    tk.chan().recv().unwrap();
                    tk.chan().recv().unwrap();
                    tx.send(()).unwrap();
                    tk.stop();
                })
                .unwrap();
            rx.recv_timeout(Duration::from_secs(30)).expect("the second tick never came");
            h.join().unwrap();
            if !rt.sched.timers.repush_delayed.load(crate::shim::Ordering::Relaxed) {
                continue;
            }
            assert_eq!(rt.stats().timer_backstops, 0, "the tick came only through the backstop");
            return;
        }
        panic!("sysmon never fired a busy P's tick in 20 attempts");
    }
}
