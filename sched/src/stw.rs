//! Stopping: the whole world (`stop_the_world`), every P at its own next safepoint
//! (`for_each_p`, the ragged barrier), and one goroutine at a time (`suspend_g`).

use crate::g::{G, GPtr, goid};
use crate::proc::{acquire_m, ready_owned, release_m};
use crate::runtime::{M, P, PStatus, Sched, current_m};
use crate::shim::{AtomicUsize, Ordering};
use crate::status::{SCAN, Status, SuspendStep, backoff, suspend_step};
use safepoint_stackmap::{Corruption, Registry, Traceback, Visitor};

/// How often a stopper re-sends its preemption requests: a request can race with a goroutine
/// switch and be lost, so it is repeated (the seeds' 100 µs).
const RETRY_NS: u64 = 100_000;
/// How long a request may go unanswered at synchronous safepoints before the requester follows
/// it with the preemption signal: a goroutine that polls answers within a microsecond or two,
/// and a signal costs the target a kernel round trip, so only goroutines that do not poll
/// should get one.
pub(crate) const ASYNC_GRACE_NS: u64 = 10_000;
/// How often the signal is repeated while a request stays unanswered (the handler may have
/// declined: the goroutine was in a runtime critical section or a `no_preempt` section).
const ASYNC_RETRY_NS: u64 = 50_000;
/// How long a waiter spins, looking, before it sleeps between looks: the other side is usually
/// running, and a futex wake-up costs tens of microseconds on these machines; 20 µs covers a
/// goroutine that polls and one signalled at once (10-15 µs). Not longer: on a loaded machine
/// the threads that must still stop need CPUs to handle their signals, and a sleeper woken by
/// a futex gets a CPU sooner than a spinner that has used up its share.
const WAIT_SPIN_NS: u64 = 20_000;
/// How long a stop waits before it first gives back the goroutines it holds in place (see
/// "A stop that cannot finish" at [`stop_the_world`]); the wait doubles after each give-back,
/// up to [`STUCK_MAX_NS`]. A stop takes microseconds when every goroutine answers, and
/// milliseconds on a loaded machine, where a give-back costs only its latency.
const STUCK_NS: u64 = 1_000_000;
/// The longest wait between two give-backs of one stop.
const STUCK_MAX_NS: u64 = 64_000_000;

fn running_m(what: &str) -> &'static M {
    let m = current_m().filter(|m| m.curg().is_some() && m.p().is_some());
    m.unwrap_or_else(|| panic!("{what} must be called from a goroutine of a safepoint runtime"))
}

/// Waits until `count` is zero. At every look it first calls `look` (act for Ps whose M holds
/// its goroutine in place); it re-sends the requests with `retry` every [`RETRY_NS`], and
/// follows them with the preemption signal to the Ms of running Ps (all but `mine`) once they
/// have gone unanswered for [`ASYNC_GRACE_NS`], then every [`ASYNC_RETRY_NS`]. It spins for
/// [`WAIT_SPIN_NS`], then sleeps on `note` between looks.
///
/// If the runtime starts shutting down meanwhile, the Ps that have not answered never will
/// (their Ms leave their loops): the caller's goroutine is abandoned where it waits (see
/// [`crate::runtime::abandon_for_shutdown`]) so that its M can exit too; this never returns.
///
/// If the count has not reached zero after [`STUCK_NS`], it calls `unstick(window)`, then
/// again after twice as long, and so on (up to [`STUCK_MAX_NS`] apart): a stop uses it to give
/// back the goroutines it holds in place, each exempt from being held again for `window`.
///
/// The count decides, the note is only a wake-up hint: whoever brings the count to zero wakes
/// the note, but may do so *after* the waiter has already seen zero and left (the decrement and
/// the wake-up are two steps, taken without the scheduler lock), so a note can arrive stale at
/// the next wait. A stale wake-up here costs one extra look at the count.
fn wait_for_zero(
    sched: &Sched,
    what: &str,
    mine: &P,
    (count, note): (&AtomicUsize, &safepoint_arch::Note),
    mut look: impl FnMut(),
    mut retry: impl FnMut(),
    mut unstick: impl FnMut(u64),
) {
    let start = safepoint_arch::nanotime();
    let mut next_signal = start + ASYNC_GRACE_NS;
    let mut next_retry = start + RETRY_NS;
    let mut stuck_ns = STUCK_NS;
    let mut next_unstick = start + stuck_ns;
    // Goroutines that needed the signal last time (they do not poll) get it at once.
    sched.preemptall_async(Some(mine), true);
    loop {
        look();
        if count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if sched.shutdown.load(Ordering::SeqCst) {
            crate::runtime::abandon_for_shutdown();
        }
        let now = safepoint_arch::nanotime();
        crate::watchdog::waited(sched, start, now, || what.to_string());
        if now >= next_retry {
            retry();
            next_retry = now + RETRY_NS;
        }
        if now >= next_unstick {
            unstick(stuck_ns / 2);
            stuck_ns = (stuck_ns * 2).min(STUCK_MAX_NS);
            next_unstick = now + stuck_ns;
        }
        if now >= next_signal {
            sched.preemptall_async(Some(mine), false);
            next_signal = now + ASYNC_RETRY_NS;
        }
        if now - start < WAIT_SPIN_NS {
            for _ in 0..64 {
                if note.is_woken() {
                    break;
                }
                safepoint_arch::cpu_relax();
            }
            if note.is_woken() {
                note.clear();
            }
        } else if note.sleep_timeout(next_retry.min(next_signal).saturating_sub(now).max(1_000)) {
            note.clear();
        }
    }
}

/// Stops every P whose M holds its goroutine in place (`Held -> GcStop`), counting each in
/// `stopwait`. Their Ms keep them (`p.m` stays set) and get them back in `start_the_world`.
/// Not a P whose M this stop gave back ([`give_back_held_ps`]) while its exemption lasts: its
/// goroutine is leaving the hold.
fn stop_held_ps(sched: &Sched) {
    for p in sched.ps.iter() {
        if p.status() == PStatus::Held
            && !m_of(p).is_some_and(|m| m.hold_exempt())
            && p.cas_status(PStatus::Held, PStatus::GcStop)
        {
            sched.stopwait_done();
        }
    }
}

/// A stop that cannot finish gives back every P it counted stopped because its M held its
/// goroutine in place (`GcStop -> Held`, uncounted, the M woken), and exempts those Ms from
/// being held again for `window_ns`: their goroutines run on to a synchronous safepoint,
/// where they stop for good, releasing on the way whatever OS lock they held. Returns how
/// many it gave back.
///
/// Runs on: the stopper, the only one who moves a P out of GcStop while the world is stopping.
fn give_back_held_ps(sched: &Sched, mine: &P, window_ns: u64) -> usize {
    let until = safepoint_arch::nanotime() + window_ns;
    let mut n = 0;
    for p in sched.ps.iter() {
        // A stopped P that keeps its M is one held in place (as in `start_the_world`), but the
        // stopper's own P.
        if core::ptr::eq(p, mine) || p.status() != PStatus::GcStop {
            continue;
        }
        let Some(m) = m_of(p) else { continue };
        m.hold_exempt_until.store(until, Ordering::Relaxed);
        // Uncounted before it can run: the stop must not complete while it does.
        sched.stopwait.fetch_add(1, Ordering::SeqCst);
        p.set_status(PStatus::Held);
        crate::preempt::wake_held(m);
        n += 1;
    }
    if n > 0 {
        sched.stuck_givebacks.fetch_add(n as u64, Ordering::Relaxed);
    }
    n
}

/// The M that owns `p`, if any.
fn m_of(p: &P) -> Option<&'static M> {
    let m = p.m.load(Ordering::Acquire) as *const M;
    // SAFETY: Ms live until the runtime shuts down.
    unsafe { m.as_ref() }
}

/// Runs the pending safe-point function for every P whose M holds its goroutine in place: the
/// P is borrowed (`Held -> GcStop`) while the function runs for it, then given back and its M
/// woken. The held goroutine was interrupted outside every runtime critical section and
/// `no_preempt` section, so the P's state is consistent.
fn run_for_held_ps(sched: &Sched) {
    for p in sched.ps.iter() {
        if p.run_safe_point_fn.load(Ordering::SeqCst)
            && p.status() == PStatus::Held
            && p.cas_status(PStatus::Held, PStatus::GcStop)
        {
            run_safe_point_fn(sched, p);
            p.set_status(PStatus::Held);
            wake_m_of(p);
        }
    }
}

/// Wakes the M that holds `p` (a P it holds while it holds its goroutine in place).
fn wake_m_of(p: &P) {
    let m = p.m.load(Ordering::Acquire) as *const M;
    // SAFETY: Ms live until the runtime shuts down.
    if let Some(m) = unsafe { m.as_ref() } {
        crate::preempt::wake_held(m);
    }
}

/// The world is stopped while this lives; dropping it (or [`WorldStop::start`]) starts it again.
#[must_use = "the world restarts when this is dropped"]
pub struct WorldStop {
    m: &'static M,
    reason: &'static str,
    /// When the stop was asked for (`nanotime`), for the execution trace.
    t0: u64,
    started: bool,
    /// It restarts the world with its goroutine's P: it must stay on that goroutine.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl core::fmt::Debug for WorldStop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "WorldStop({:?})", self.reason)
    }
}

impl WorldStop {
    /// Why the world was stopped.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, stop_the_world};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let w = stop_the_world("my reason");
    ///     assert_eq!(w.reason(), "my reason");
    ///     w.start();
    /// });
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The runtime that is stopped.
    pub(crate) fn sched(&self) -> &crate::runtime::Sched {
        self.m.sched()
    }

    /// Starts the world again.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, go, stop_the_world};
    /// # let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let w = stop_the_world("example");
    ///     // Every other goroutine is held at a safepoint here.
    ///     w.start(); // (dropping the stop starts the world too)
    ///     assert_eq!(go(|| 1).join().unwrap(), 1);
    /// });
    /// ```
    pub fn start(mut self) {
        self.restart();
    }

    fn restart(&mut self) {
        if !self.started {
            self.started = true;
            if let Some(t) = &self.m.sched().trace {
                let now = safepoint_arch::nanotime();
                t.shared(crate::trace::Track::Stops, self.reason, self.t0, now, 0);
            }
            start_the_world(self.m);
        }
    }
}

impl Drop for WorldStop {
    fn drop(&mut self) {
        self.restart();
    }
}

/// Stops every P: on return no other goroutine runs until the world is started again.
///
/// Runs on: a goroutine. Only one stop (or ragged barrier) at a time: concurrent callers park
/// and take turns. The caller's goroutine is not preemptible and must not park while the world
/// is stopped (a described panic if it tries).
///
/// # A stop that cannot finish
///
/// A goroutine that never polls is stopped by the preemption signal, which holds it in place
/// at whatever instruction it was: possibly inside a short critical section of an OS lock (a
/// `std::sync::Mutex`, standard error's lock behind `eprintln!`), which Rust code may take
/// between safepoints. Another goroutine waiting for that lock blocks its M in the kernel with
/// its P still Running: it never reaches a safepoint, and the signal is declined there (it is
/// inside the C library). The held goroutine waits for the stop, the stop for the blocked P,
/// the blocked P for the held goroutine. So a stop that has waited a millisecond gives back
/// every goroutine it holds in place and exempts their Ms from the signal for a while: they
/// run on to a synchronous safepoint (leaving their critical sections) and stop there, and the
/// waiters they held up follow. The wait before the next give-back doubles. A deadlock becomes
/// latency, bounded by the length of the critical sections ([`crate::Stats::stop_givebacks`]
/// counts the give-backs).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use safepoint_sched::{Runtime, go, poll, stop_the_world};
/// # let rt = Runtime::builder().procs(2).build().unwrap();
/// rt.block_on(|| {
///     let counter = Arc::new(AtomicU64::new(0));
///     let done = Arc::new(AtomicU64::new(0));
///     let (c, d) = (counter.clone(), done.clone());
///     let worker = go(move || {
///         while d.load(Ordering::Relaxed) == 0 {
///             c.fetch_add(1, Ordering::Relaxed);
///             poll();
///         }
///     });
///     while counter.load(Ordering::Relaxed) == 0 {
///         safepoint_sched::yield_now();
///     }
///     let w = stop_the_world("example");
///     let a = counter.load(Ordering::Relaxed);
///     std::thread::sleep(std::time::Duration::from_millis(2));
///     assert_eq!(counter.load(Ordering::Relaxed), a); // the worker is held
///     w.start();
///     done.store(1, Ordering::Relaxed);
///     worker.join().unwrap();
/// });
/// ```
pub fn stop_the_world(reason: &'static str) -> WorldStop {
    let t0 = safepoint_arch::nanotime();
    let m = running_m("stop_the_world");
    let sched = m.sched();
    sched.world_sema.acquire();
    let m = acquire_m().expect("checked above");
    let my_p = m.p().expect("checked above");
    {
        let mut l = sched.locked();
        sched.stopwait.store(sched.procs, Ordering::SeqCst);
        sched.gcwaiting.store(true, Ordering::SeqCst);
        sched.preemptall();
        my_p.set_status(PStatus::GcStop);
        sched.stopwait.fetch_sub(1, Ordering::SeqCst);
        for p in sched.ps.iter() {
            if p.status() == PStatus::Syscall && p.cas_status(PStatus::Syscall, PStatus::GcStop) {
                sched.stopwait.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Ps whose M holds its goroutine in place (asynchronous preemption) count as stopped.
        stop_held_ps(sched);
        while let Some(p) = sched.pidleget(&mut l) {
            p.set_status(PStatus::GcStop);
            sched.stopwait.fetch_sub(1, Ordering::SeqCst);
        }
    }
    wait_for_zero(
        sched,
        "stop_the_world",
        my_p,
        (&sched.stopwait, &sched.stopnote),
        || stop_held_ps(sched),
        || {
            // An idle P the stop did not count (see `idle_ps_left_behind`): stop it now.
            let mut l = sched.locked();
            while let Some(p) = sched.pidleget(&mut l) {
                idle_ps_left_behind(sched, p, "stop_the_world");
                p.set_status(PStatus::GcStop);
                sched.stopwait.fetch_sub(1, Ordering::SeqCst);
            }
            drop(l);
            sched.preemptall();
        },
        |window| {
            give_back_held_ps(sched, my_p, window);
        },
    );
    for p in sched.ps.iter() {
        if p.status() != PStatus::GcStop {
            crate::throw!("stop_the_world: P{} is {:?}, not stopped", p.id, p.status());
        }
    }
    WorldStop { m, reason, t0, started: false, _not_send: core::marker::PhantomData }
}

fn start_the_world(m: &'static M) {
    let sched = m.sched();
    let my_p = m.p().expect("stopper lost its P");
    let mut with_work = Vec::new();
    {
        let mut l = sched.locked();
        sched.gcwaiting.store(false, Ordering::SeqCst);
        for p in sched.ps.iter() {
            if core::ptr::eq(p, my_p) {
                continue;
            }
            // A P stopped while its M held its goroutine in place: the M still owns it (only
            // such a P keeps `m` set when stopped). Give it back and wake the M.
            if p.m.load(Ordering::Acquire) != 0 {
                p.set_status(PStatus::Held);
                wake_m_of(p);
                continue;
            }
            if p.runq_empty() {
                sched.pidleput(&mut l, p);
            } else {
                // Out of GcStop now, under the lock, not when its new M takes it: until then
                // the next stop (which may begin as soon as we return) must not find it
                // stopped. `acquirep` sets the P's `m` before its status, so a P still in
                // GcStop would show a stopped P with an M for a moment, which is what a P
                // held in place looks like: that stop's give-back (`give_back_held_ps`) took
                // it for one, counted it unstopped again and marked it Held, and the M then
                // stopped it once, for one count of two: the stop waited for ever with every
                // P stopped (the OS-lock stop tests' rare "stop_the_world has waited 1000
                // ms"). Idle and off the idle list, as a P that `handoffp` hands on is.
                p.set_status(PStatus::Idle);
                with_work.push(p as *const P);
            }
        }
        my_p.set_status(PStatus::Running);
    }
    for p in with_work {
        // SAFETY: Ps live as long as the Sched.
        sched.startm(Some(unsafe { &*p }), false);
    }
    // Work on the global queue: make sure someone looks.
    sched.wakep();
    release_m(m);
    sched.world_sema.release();
}

/// Runs `f(p)` for every P at that P's next safepoint, without stopping the world: the ragged
/// barrier. Returns when all have run.
///
/// Idle Ps and Ps in blocking calls are handled by the caller (the latter are retaken and
/// handed off, and the hand-off runs `f`); running Ps run `f` themselves before they next
/// schedule, go idle or enter a blocking call; the caller's own P runs `f` on the caller.
///
/// Runs on: a goroutine. `f` runs on many threads, possibly under the scheduler lock: it must be
/// short, must not park, yield, spawn or stop the world.
///
/// # Panics
/// If `f` panics for any P, the barrier still completes (the other Ps run `f`; the panicking
/// P counts as done), and then the first panic resumes on the caller. A panic never unwinds
/// through an M's scheduling loop or another goroutine.
///
/// ```
/// use std::sync::Mutex;
/// use safepoint_sched::{Runtime, for_each_p};
/// # let rt = Runtime::builder().procs(3).build().unwrap();
/// let seen = rt.block_on(|| {
///     let seen = Mutex::new(Vec::new());
///     for_each_p(&|p| seen.lock().unwrap().push(p)); // once on each P
///     let mut v = seen.into_inner().unwrap();
///     v.sort();
///     v
/// });
/// assert_eq!(seen, [0, 1, 2]);
/// ```
pub fn for_each_p(f: &(dyn Fn(usize) + Sync)) {
    let caught: std::sync::Mutex<Option<Box<dyn core::any::Any + Send>>> =
        std::sync::Mutex::new(None);
    let guarded = |id: usize| {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(id))) {
            caught.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
    };
    for_each_p_caught(&guarded);
    if let Some(e) = caught.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(e);
    }
}

/// [`for_each_p`] with an `f` that does not unwind.
fn for_each_p_caught(f: &(dyn Fn(usize) + Sync)) {
    let m = running_m("for_each_p");
    let sched = m.sched();
    sched.world_sema.acquire();
    let m = acquire_m().expect("checked above");
    let my_p = m.p().expect("checked above");
    // SAFETY: only the lifetime is erased: we wait below until every P has run `f` and clear the
    // pointer before returning, so it never outlives the borrow.
    let fptr: *const (dyn Fn(usize) + Sync + 'static) =
        unsafe { core::mem::transmute(f as *const (dyn Fn(usize) + Sync + '_)) };
    let boxed = Box::new(fptr);
    {
        let l = sched.locked();
        sched.safe_point_wait.store(sched.procs - 1, Ordering::SeqCst);
        // Release: pairs with the Acquire load in run_safe_point_fn, after its flag CAS.
        sched.safe_point_fn.store(&*boxed as *const _ as usize, Ordering::Release);
        for p in sched.ps.iter() {
            if !core::ptr::eq(p, my_p) {
                p.run_safe_point_fn.store(true, Ordering::SeqCst);
            }
        }
        sched.preemptall();
        // Idle Ps cannot run anything: run f for them, under the lock that keeps them idle.
        let idle: Vec<usize> = l.pidle.clone();
        for id in idle {
            let p = &sched.ps[id];
            if p.claim_safe_point() {
                f(p.id);
                sched.safe_point_wait.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    // Ps in blocking calls: retake them; the hand-off runs f.
    for p in sched.ps.iter() {
        if p.status() == PStatus::Syscall && p.cas_status(PStatus::Syscall, PStatus::Idle) {
            sched.handoffp(p);
        }
    }
    f(my_p.id);
    wait_for_zero(
        sched,
        "for_each_p",
        my_p,
        (&sched.safe_point_wait, &sched.safe_point_note),
        || run_for_held_ps(sched),
        || {
            {
                // An idle P still owing the function (see `idle_ps_left_behind`): nobody else
                // will run it for it. Under the lock that keeps it idle, as at the start.
                let l = sched.locked();
                for &id in l.pidle.iter() {
                    let p = &sched.ps[id];
                    if p.claim_safe_point() {
                        idle_ps_left_behind(sched, p, "for_each_p");
                        f(p.id);
                        sched.safe_point_wait.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            for p in sched.ps.iter() {
                if p.run_safe_point_fn.load(Ordering::Relaxed)
                    && p.status() == PStatus::Syscall
                    && p.cas_status(PStatus::Syscall, PStatus::Idle)
                {
                    sched.handoffp(p);
                }
            }
            sched.preemptall();
        },
        // The barrier keeps no goroutine held: it gives each borrowed P back at once.
        |_| {},
    );
    for p in sched.ps.iter() {
        if p.run_safe_point_fn.load(Ordering::SeqCst) {
            crate::throw!("for_each_p: P{} did not run the safe-point function", p.id);
        }
    }
    sched.safe_point_fn.store(0, Ordering::Release);
    drop(boxed);
    release_m(m);
    sched.world_sema.release();
}

/// Called by a stop or a barrier whose retry found `p` on the idle list although it took the
/// idle Ps when it began: whoever put the P idle since did not look at the stop's or the
/// barrier's flag under the scheduler lock first (as every path that idles a P must). The
/// retry answers for the P, so this costs latency, not a hang; a debug build says so, since
/// it is a bug of the path that idled it.
fn idle_ps_left_behind(sched: &Sched, p: &P, what: &str) {
    if cfg!(debug_assertions) && !sched.shutdown.load(Ordering::Relaxed) {
        crate::message(format_args!(
            "safepoint: {what}: P{} was put idle after the {what} began, without answering it",
            p.id
        ));
    }
}

/// Runs the pending safe-point function for `p` if it has not run yet. Called by the M owning
/// `p` at every safepoint, or by whoever takes an idle or blocked P.
pub(crate) fn run_safe_point_fn(sched: &Sched, p: &P) {
    if !p.claim_safe_point() {
        return;
    }
    let f = sched.safe_point_fn.load(Ordering::Acquire) as *const *const (dyn Fn(usize) + Sync);
    // SAFETY: the flag was set after the function pointer was published, and for_each_p keeps
    // both alive until every flag is cleared, which we have not yet reported.
    unsafe { (**f)(p.id) };
    if sched.safe_point_wait.fetch_sub(1, Ordering::AcqRel) == 1 {
        sched.safe_point_note.wakeup();
    }
}

/// A goroutine, named for [`suspend_g`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Goroutine {
    pub(crate) g: GPtr,
}

impl Goroutine {
    /// The running goroutine, if the caller is one.
    ///
    /// ```
    /// use safepoint_sched::{Goroutine, Runtime, goroutine_id};
    /// assert!(Goroutine::current().is_none());
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| assert_eq!(Goroutine::current().unwrap().id(), goroutine_id().unwrap()));
    /// ```
    pub fn current() -> Option<Goroutine> {
        crate::runtime::current_g().map(|g| Goroutine { g: GPtr::from(g) })
    }

    /// Its current goroutine id (changes if the G is reused by a later goroutine).
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.spawn(|| ()).unwrap();
    /// assert_eq!(h.goroutine().id(), h.id());
    /// h.join().unwrap();
    /// ```
    pub fn id(&self) -> u64 {
        goid(self.g.get())
    }

    /// A snapshot of its status, for diagnostics.
    ///
    /// ```
    /// use safepoint_sched::{Goroutine, Runtime};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let s = rt.block_on(|| Goroutine::current().unwrap().status());
    /// assert!(s.contains("Running"), "{s}");
    /// ```
    pub fn status(&self) -> String {
        self.g.get().status.load().to_string()
    }
}

/// A goroutine held stopped by [`suspend_g`]; release it with [`resume_g`].
#[derive(Debug)]
#[must_use = "a suspended goroutine stays stopped until resume_g"]
pub struct Suspended {
    g: Option<GPtr>,
    id: u64,
    dead: bool,
    stopped: bool,
    base: Status,
}

impl Suspended {
    /// The goroutine had exited: nothing was suspended (its G may already run someone else).
    ///
    /// ```
    /// use safepoint_sched::{Runtime, resume_g, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.spawn(|| ()).unwrap();
    /// let g = h.goroutine();
    /// h.join().unwrap();
    /// // Its result is delivered before it has quite exited: a suspension may still catch it
    /// // on its way out (and hold it at that safepoint), so ask until it is gone.
    /// let s = loop {
    ///     let s = suspend_g(g);
    ///     if s.dead() {
    ///         break s; // it has exited: nothing is held
    ///     }
    ///     resume_g(s);
    ///     std::thread::yield_now();
    /// };
    /// assert!(s.dead());
    /// resume_g(s);
    /// ```
    pub fn dead(&self) -> bool {
        self.dead
    }
    /// This suspension stopped a running goroutine at a synchronous safepoint (and will ready it
    /// on resume). False for a goroutine held asynchronously ([`Suspended::async_stopped`]),
    /// which nobody readies: it resumes in place.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// assert!(!s.stopped()); // it was parked, not running: nothing to ready on resume
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn stopped(&self) -> bool {
        self.stopped
    }
    /// The id of the goroutine that is held.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// let s = suspend_g(h.goroutine());
    /// assert_eq!(s.id(), h.id());
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The state it is held in (Runnable, Syscall, Waiting, or AsyncPreempted: see
    /// [`Suspended::async_stopped`]).
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, resume_g, status::Status, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// assert_eq!(s.held_state(), Status::Waiting);
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn held_state(&self) -> Status {
        self.base
    }

    /// Whether the goroutine is held at an *asynchronous* point: it never reached a synchronous
    /// safepoint, and the preemption signal stopped it at an arbitrary instruction (its status
    /// is [`Status::AsyncPreempted`]; [`Suspended::stopped`] is false, as nobody readies it: it
    /// resumes in place when released).
    ///
    /// For a collector this changes one thing: the innermost frame of the managed stack may be
    /// at a stale safepoint index (the goroutine may have stored a reference into a slot that
    /// the frame's current bitmap calls dead, or be between a frame push and its first
    /// safepoint), so its slots must be scanned conservatively; every frame below it is at a
    /// call, and is scanned precisely. The managed stack's frames themselves are always
    /// consistent (a push writes the frame, then publishes the new top). Everything else the
    /// goroutine's M was doing is untouched: it was in no runtime critical section (`m.locks`,
    /// a runtime lock, a `no_preempt` section), so the collector's allocator and write barrier,
    /// which run under `no_preempt`, were not interrupted.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// assert!(!s.async_stopped()); // parked at a synchronous safepoint
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn async_stopped(&self) -> bool {
        self.base == Status::AsyncPreempted
    }

    /// Walks the held goroutine's managed stack: every live reference (and tagged) slot of every
    /// frame at its current safepoint, top frame first. Nothing for a dead goroutine. For a
    /// goroutine held asynchronously ([`Suspended::async_stopped`]) the top frame's bitmap may be
    /// stale: a collector scans that frame's slots conservatively instead.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::stackmap::{FuncDesc, Registry, SlotWord, Visitor};
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g, with_managed_stack};
    /// struct Count(usize);
    /// impl Visitor for Count {
    ///     fn reference(&mut self, _slot: usize, _word: &SlotWord) {
    ///         self.0 += 1;
    ///     }
    /// }
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).refs_at(0, &[0, 1])).unwrap();
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || {
    ///     with_managed_stack(|ms| ms.push(f));
    ///     rx.recv()
    /// }).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// let mut c = Count(0);
    /// s.walk_managed_stack(&reg, &mut c);
    /// resume_g(s);
    /// assert_eq!(c.0, 2);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn walk_managed_stack<V: Visitor>(&self, reg: &Registry, v: &mut V) {
        if let Some(g) = self.g {
            // SAFETY: we hold the goroutine's SCAN bit in a scannable state (Runnable, Waiting,
            // Syscall or AsyncPreempted): it cannot run, grow its stack or move out of that
            // state until we release it, and a goroutine in a blocking call may not touch its
            // managed stack (a push or poll there panics; the stack is frozen).
            unsafe { g.get().mstack().walk_stopped(reg, v) }
        }
    }

    /// The held goroutine's traceback from its managed stack.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::stackmap::{FuncDesc, Registry};
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g, with_managed_stack};
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("handler", 1, 0, 1).line(0, 12)).unwrap();
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || {
    ///     with_managed_stack(|ms| ms.push(f));
    ///     rx.recv()
    /// }).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// let tb = s.traceback(&reg).unwrap();
    /// resume_g(s);
    /// assert_eq!(tb.frames[0].name, "handler");
    /// assert_eq!(tb.frames[0].line, Some(12));
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn traceback(&self, reg: &Registry) -> Option<Traceback> {
        // SAFETY: as in `walk_managed_stack`.
        self.g.map(|g| unsafe { g.get().mstack().traceback_stopped(reg) })
    }

    /// Validates every frame of the held goroutine's managed stack; the number of frames.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::stackmap::{FuncDesc, Registry};
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g, with_managed_stack};
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || {
    ///     with_managed_stack(|ms| { ms.push(f); ms.push(f); });
    ///     rx.recv()
    /// }).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// assert_eq!(s.check_managed_stack(&reg), Ok(2)); // two valid frames
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn check_managed_stack(&self, reg: &Registry) -> Result<usize, Corruption> {
        match self.g {
            // SAFETY: as in `walk_managed_stack`.
            Some(g) => unsafe { g.get().mstack().check_stopped(reg) },
            None => Ok(0),
        }
    }

    /// Shrinks the held goroutine's managed-stack buffer to half if under a quarter is used
    /// (what a collector does during its scan). Whether it moved. Never for a goroutine held
    /// asynchronously ([`Suspended::async_stopped`]): it was interrupted at an arbitrary
    /// instruction, possibly between loading the buffer's address and storing through it, so
    /// the buffer must stay where it is.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g};
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// while ch.waiting() != (0, 1) {
    ///     std::thread::yield_now();
    /// }
    /// let s = suspend_g(h.goroutine());
    /// let _moved = s.shrink_managed_stack(); // true only if the buffer was under a quarter used
    /// resume_g(s);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn shrink_managed_stack(&self) -> bool {
        if self.async_stopped() {
            return false;
        }
        match self.g {
            // SAFETY: as in `walk_managed_stack`: nothing else touches the stack while held.
            Some(g) => unsafe { g.get().mstack().shrink_stopped() },
            None => false,
        }
    }
}

/// Drives `target` to a safepoint and holds it there with its SCAN bit set: while held, it
/// cannot run and nobody else can change its status, so its stacks can be read. Safe with
/// several concurrent suspenders (they take turns).
///
/// Runs on: a goroutine (it yields while waiting, so two goroutines suspending each other cannot
/// deadlock) or a thread outside the runtime (it spins). A goroutine must not suspend itself
/// (a described panic) and must not hold the world stopped.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
/// use safepoint_sched::{Runtime, poll, resume_g, suspend_g};
/// # let rt = Runtime::builder().procs(2).build().unwrap();
/// let count = Arc::new(AtomicU64::new(0));
/// let stop = Arc::new(AtomicBool::new(false));
/// let (c, s) = (count.clone(), stop.clone());
/// let h = rt.spawn(move || while !s.load(Ordering::Relaxed) {
///     c.fetch_add(1, Ordering::Relaxed);
///     poll();
/// }).unwrap();
/// let held = suspend_g(h.goroutine()); // from a thread outside the runtime: it spins
/// let a = count.load(Ordering::Relaxed);
/// std::thread::sleep(std::time::Duration::from_millis(2));
/// assert_eq!(count.load(Ordering::Relaxed), a); // it cannot run while held
/// resume_g(held);
/// stop.store(true, Ordering::Relaxed);
/// h.join().unwrap();
/// ```
pub fn suspend_g(target: Goroutine) -> Suspended {
    let g = target.g.get();
    let me = crate::runtime::current_g();
    if me.is_some_and(|me| core::ptr::eq(me, g)) {
        panic!("suspend_g: goroutine {} cannot suspend itself", goid(g));
    }
    let token = caller_token();
    // The watchdog of the caller's runtime, if the caller is a goroutine.
    let watcher = crate::runtime::current_m().map(|m| m.sched() as *const Sched);
    let start = safepoint_arch::nanotime();
    let mut stopped = false;
    let mut spins = 0u32;
    let mut next_request = 0u64;
    // When to follow the request with the preemption signal (0: not requested yet).
    let mut next_signal = 0u64;
    // For dumps: which goroutine we wait for, cleared however we leave (a panic included).
    struct Suspending(Option<&'static G>);
    impl Drop for Suspending {
        fn drop(&mut self) {
            if let Some(me) = self.0 {
                // Relaxed: informational (see `G::suspending`).
                me.suspending.store(0, Ordering::Relaxed);
            }
        }
    }
    if let Some(me) = me {
        // Relaxed: as above.
        me.suspending.store(goid(g), Ordering::Relaxed);
    }
    let _suspending = Suspending(me);
    loop {
        // Whether the target is held by another suspender at this look (see `wait_a_little`).
        let mut held_by_other = false;
        let now = safepoint_arch::nanotime();
        let step = suspend_step(&g.status, now >= next_request, || {
            g.preempt_stop.store(true, Ordering::SeqCst);
            g.request_preempt();
        });
        match step {
            SuspendStep::Dead => {
                return Suspended {
                    g: None,
                    id: goid(g),
                    dead: true,
                    stopped: false,
                    base: Status::Dead,
                };
            }
            SuspendStep::Held(s) => {
                g.suspender.store(token, Ordering::Relaxed);
                // Withdraw our request (it may not have been seen).
                g.preempt_stop.store(false, Ordering::SeqCst);
                g.preempt.store(false, Ordering::SeqCst);
                g.guard().unpoison();
                return Suspended { g: Some(target.g), id: goid(g), dead: false, stopped, base: s };
            }
            SuspendStep::Claimed => {
                stopped = true;
                continue;
            }
            SuspendStep::Requested => {
                next_request = now + RETRY_NS;
                if next_signal == 0 {
                    next_signal = now + ASYNC_GRACE_NS;
                    // It needed the signal last time (it does not poll): send it at once.
                    if g.async_prone.load(Ordering::Relaxed) {
                        signal_m_of(g);
                    }
                }
            }
            SuspendStep::Running => {
                // Unanswered past the grace period: it may never poll. Signal its M; the
                // handler holds it in place (AsyncPreempted) if it can, which we then take.
                if next_signal != 0 && now >= next_signal {
                    signal_m_of(g);
                    next_signal = now + ASYNC_RETRY_NS;
                }
            }
            SuspendStep::Wait => {
                // Held by someone: if by this very caller, waiting would never end.
                if g.suspender.load(Ordering::Relaxed) == token && g.status.load().scanning() {
                    panic!(
                        "suspend_g: goroutine {} is already suspended by this caller; resume \
                         it (resume_g, or drop its Suspended) before suspending it again",
                        goid(g)
                    );
                }
                held_by_other = true;
            }
        }
        if let Some(sched) = watcher {
            // SAFETY: the caller is a goroutine of this runtime, which outlives its goroutines.
            let sched = unsafe { &*sched };
            crate::watchdog::waited(sched, start, now, || {
                format!("suspend_g of goroutine {} ({})", goid(g), g.status.load())
            });
        }
        wait_a_little(me, &mut spins, held_by_other);
    }
}

/// Holds `g` if it can be had without stopping it (Runnable, Waiting, Syscall, or parked in
/// Preempted): a few attempts, no preemption request. For diagnostics of a live runtime.
pub(crate) fn try_hold(g: &'static G) -> Option<Suspended> {
    let mut stopped = false;
    let mut spins = 0u32;
    for _ in 0..64 {
        match suspend_step(&g.status, false, || {}) {
            SuspendStep::Held(s) => {
                g.suspender.store(caller_token(), Ordering::Relaxed);
                return Some(Suspended {
                    g: Some(GPtr::from(g)),
                    id: goid(g),
                    dead: false,
                    stopped,
                    base: s,
                });
            }
            SuspendStep::Claimed => stopped = true,
            SuspendStep::Dead | SuspendStep::Running | SuspendStep::Requested => {
                if stopped {
                    // Cannot happen: a claimed goroutine is Waiting until readied, and only we can.
                    crate::throw!("try_hold: goroutine {} left Waiting while claimed", goid(g));
                }
                return None;
            }
            SuspendStep::Wait => backoff(&mut spins),
        }
    }
    if stopped {
        // We claimed it (it had parked for a suspender) but could not hold it: give it back.
        ready_owned(g);
    }
    None
}

/// Who is calling, as [`G::suspender`] records it: the running goroutine's G (which stays its
/// own while it holds a suspension), or for a thread outside the runtime the address of a
/// thread-local (odd, so it never equals a G's address).
fn caller_token() -> usize {
    match crate::runtime::current_g() {
        Some(g) => g as *const G as usize,
        None => {
            thread_local!(static ME: u8 = const { 0 });
            ME.with(|b| b as *const u8 as usize) | 1
        }
    }
}

/// Between attempts: a goroutine yields (it may itself be the target of a suspension, and its
/// P may be needed by the goroutine it waits for); a foreign thread spins then yields the CPU.
///
/// `held_by_other`: the target is held by another suspender, which must run to let it go. An
/// urgent goroutine (a collector's mark worker) then yields to the goroutines queued on its
/// P, not to the urgent queue, which its P serves first: the holder, queued on that P behind
/// it, would never run again (with the target's own P in its asynchronous hold, nothing else
/// could). Only then: an urgent goroutine queued behind its P's goroutines waits for all of
/// them, each with its time slice, and while it waits for a target that is running (its
/// request is out) its place is the urgent queue, from which any P takes it first. Sent to
/// the back of a long queue at every yield, a mark worker took seconds a stack and a cycle's
/// marking stalled (and if its target then came to run on that same P and was held there
/// for it, the P's whole queue waited on the hold: see `sysmon::unstrand`).
///
/// After each goroutine yield the thread also yields its CPU to the OS. The target usually
/// runs on another M; on a machine with more runnable threads than cores, that M may be
/// waiting for a core, and a suspender that only spins (its P has nothing else to run) keeps
/// one from it: with the CPU given back, binary-trees-compiled 16 beside other busy processes
/// took 0.92x the CPU time and 0.89x the wall time (medians of 8 alternating runs each).
fn wait_a_little(me: Option<&'static G>, spins: &mut u32, held_by_other: bool) {
    if me.is_some() && current_m().is_some_and(|m| m.locks.load(Ordering::Relaxed) == 0) {
        *spins += 1;
        // Not unwound by shutdown here: the request out on the target (`preempt_stop`) would
        // be left set, and the target held or parked for a suspender that is gone.
        crate::proc::without_shutdown_unwind(|| {
            if (*spins).is_multiple_of(16) {
                if held_by_other {
                    crate::proc::yield_local();
                } else {
                    crate::proc::yield_now();
                }
                // See above: the target's M may be waiting for this core.
                safepoint_arch::os_yield();
            } else {
                crate::proc::poll();
                safepoint_arch::cpu_relax();
            }
        });
    } else {
        backoff(spins);
    }
}

/// Releases a goroutine held by [`suspend_g`], readying it if the suspension stopped it.
/// (Dropping the [`Suspended`] does the same.)
///
/// ```
/// use safepoint_sched::{Chan, Runtime, resume_g, suspend_g};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// let ch = Chan::new(1);
/// let rx = ch.clone();
/// let h = rt.spawn(move || rx.recv().unwrap() + 1).unwrap();
/// let held = suspend_g(h.goroutine());
/// resume_g(held); // it carries on as if nothing happened
/// ch.send(41);
/// assert_eq!(h.join().unwrap(), 42);
/// ```
pub fn resume_g(s: Suspended) {
    drop(s)
}

impl Drop for Suspended {
    fn drop(&mut self) {
        if let Some(g) = self.g.take() {
            release(g.get(), self.base, self.stopped);
        }
    }
}

fn release(g: &'static G, base: Status, stopped: bool) {
    let w = g.status.load();
    if w.state & SCAN == 0 {
        crate::throw!("resume_g: goroutine {} is not held ({})", goid(g), w);
    }
    g.suspender.store(0, Ordering::Relaxed);
    g.status.cas_from_scan(base, base);
    if base == Status::AsyncPreempted {
        // Its M waits in the hold for the SCAN bit to clear.
        let m = g.m.load(Ordering::Acquire) as *const M;
        // SAFETY: Ms live until the runtime shuts down; a held goroutine keeps its M.
        if let Some(m) = unsafe { m.as_ref() } {
            crate::preempt::wake_held(m);
        }
    }
    if stopped {
        ready_owned(g);
    }
}

/// Sends the preemption signal to the M running `g`, if any (a racy hint: a signal reaching an
/// M that moved on to another goroutine is declined by the handler).
fn signal_m_of(g: &G) {
    let m = g.m.load(Ordering::Acquire) as *const M;
    // SAFETY: Ms live until the runtime shuts down.
    if let Some(m) = unsafe { m.as_ref() } {
        m.sched().signal_m(m);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::runtime::{PStatus, current_m};

    /// After a restart no P is left in GcStop: a stopped P that keeps an M is what a P held
    /// in place looks like to the next stop's give-back. A P with queued goroutines stayed in
    /// GcStop until the M it was handed to took it, and `acquirep` sets the P's M before its
    /// status: a stop that began meanwhile and had to give back its held goroutines took the
    /// P for a held one and was left waiting for ever with every P stopped. (The OS-lock stop
    /// tests' rare "stop_the_world has waited 1000 ms"; here the P is looked at right after
    /// the restart, before its new M can have taken it.)
    #[test]
    #[cfg_attr(miri, ignore = "makes a scheduler: signal handlers and mapped stacks")]
    fn a_restart_leaves_no_p_stopped() {
        let rt = crate::Runtime::builder().procs(3).build().unwrap();
        rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            // Goroutines that poll and yield: every P has some queued.
            let busy: Vec<_> = (0..8)
                .map(|_| {
                    let stop = stop.clone();
                    crate::go(move || {
                        while !stop.load(Ordering::Relaxed) {
                            crate::yield_now();
                        }
                    })
                })
                .collect();
            let sched = current_m().expect("on a goroutine").sched();
            let mut seen = None;
            for _ in 0..500 {
                drop(super::stop_the_world("test"));
                if let Some(p) = sched.ps.iter().find(|p| p.status() == PStatus::GcStop) {
                    seen = Some(p.id);
                    break;
                }
                crate::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
            for b in busy {
                b.join().unwrap();
            }
            assert_eq!(seen, None, "a P was still stopped after a restart");
        });
    }
}
