//! What a goroutine does to itself: start, exit, yield, park, poll, blocking calls.

use core::ptr;
use core::sync::atomic::compiler_fence;

use crate::g::{G, GPtr, goid};
use crate::runtime::{After, M, P, PStatus, acquirep, current_g, current_m, mcall};
use crate::shim::{Ordering, fence};
use crate::status::Status;

/// A dead goroutine keeps a managed-stack buffer up to this size for the next one.
const MSTACK_KEEP_WORDS: usize = 64 * 1024;

/// Drops the goroutine's locals, on the goroutine itself (their destructors may still use the
/// runtime). A destructor may create new locals; a few rounds settle it, and `prepare` clears
/// the rest. A panicking destructor is reported and the rest still dropped.
///
/// While the runtime shuts down, a destructor that waits (a receive, a lock) is unwound with
/// the shutdown payload, as any goroutine that waits then is, even if the goroutine's body
/// was unwound already: here nothing else is unwinding (the body's unwind was caught), so a
/// second one is safe, and it lets the other locals be dropped. That unwind is the shutdown
/// at work, not a panic of the destructor, and is not reported.
fn drop_locals(g: &G) {
    // Relaxed: only the goroutine itself reads and writes its own flag.
    let unwound_before = g.unwound.load(Ordering::Relaxed);
    for _ in 0..4 {
        // SAFETY: the goroutine owns its locals; no borrow of them is live here.
        let locals = core::mem::take(unsafe { &mut *g.locals.get() });
        if locals.is_empty() {
            break;
        }
        for l in locals {
            g.unwound.store(false, Ordering::Relaxed);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(l))) {
                Ok(()) => {}
                Err(p) if p.is::<crate::RuntimeShutdown>() => {}
                Err(_) => crate::message(format_args!(
                    "goroutine {}: a goroutine-local destructor panicked",
                    goid(g)
                )),
            }
        }
    }
    // Unwound once, it stays so: what runs after must not be unwound again.
    let now = g.unwound.load(Ordering::Relaxed);
    g.unwound.store(unwound_before || now, Ordering::Relaxed);
}

/// Drops the running goroutine's locals now (before its result is published, so that whoever
/// joins it sees them dropped).
pub(crate) fn drop_current_locals() {
    if let Some(g) = current_g() {
        drop_locals(g);
    }
}

/// First code on a goroutine's stack (see `safepoint_arch::Context::new_on_stack`).
///
/// # Safety
/// `data` is the address of the G being started, which the calling M owns.
pub(crate) unsafe extern "C" fn g_entry(data: usize, _arg: usize) -> ! {
    // SAFETY: per the contract, data is a live (type-stable) G.
    let g = unsafe { &*(data as *const G) };
    // SAFETY: the goroutine owns its body now.
    let body = unsafe { (*g.body.get()).take() };
    if let Some(body) = body {
        // The body catches its own panics (see `spawn_with`); a panic escaping here would unwind
        // into the trampoline, so contain it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body.call())).is_err() {
            crate::throw!("goroutine {}: panic escaped its body", goid(g));
        }
    }
    // Goroutine-locals are dropped on the goroutine itself, where their destructors may still
    // use the runtime.
    // Leave the managed stack empty (frames a panic unwound past are dropped here), and give
    // back a large buffer rather than keep it with the dead G.
    let ms = g.mstack();
    if ms.capacity_words() > MSTACK_KEEP_WORDS {
        ms.release();
    } else {
        ms.reset();
    }
    drop_locals(g);
    mcall(After::Exit);
    crate::throw!("dead goroutine {} resumed", goid(g));
}

fn running() -> (&'static M, &'static G) {
    let m = current_m().unwrap_or_else(|| {
        panic!("not on a goroutine: this call must be made by a goroutine of a safepoint runtime")
    });
    let g = m.curg().unwrap_or_else(|| {
        panic!("not on a goroutine: this call must be made by a goroutine of a safepoint runtime")
    });
    (m, g)
}

/// Checks that the running goroutine may switch away: not inside `no_preempt`, not holding the
/// world stopped, not inside a blocking call (its P is handed off: parking there would find
/// the goroutine in `Syscall`, not `Running`). A described panic otherwise.
fn check_may_switch(m: &M, g: &G, what: &str) {
    if g.status.load().base() == Some(Status::Syscall) {
        panic!(
            "goroutine {}: {what} inside a blocking call (the goroutine has handed off its P)",
            goid(g)
        );
    }
    if g.pins.get() != 0 {
        panic!(
            "goroutine {}: {what} inside a no_preempt section (a thread-bound borrow may be live)",
            goid(g)
        );
    }
    if m.locks.load(Ordering::Relaxed) != 0 {
        panic!(
            "goroutine {}: {what} while the runtime holds this M (world stopped or runtime lock held)",
            goid(g)
        );
    }
}

/// Yields the processor: the goroutine goes to the back of its P's run queue.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use safepoint_sched::{Runtime, go, yield_now};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     let flag = Arc::new(AtomicBool::new(false));
///     let f = flag.clone();
///     go(move || f.store(true, Ordering::Relaxed));
///     // One P: the other goroutine runs only when this one gives the P up.
///     while !flag.load(Ordering::Relaxed) {
///         yield_now();
///     }
/// });
/// ```
pub fn yield_now() {
    let (m, g) = running();
    check_may_switch(m, g, "yield");
    unwind_if_draining(g);
    mcall(After::Yield);
}

/// Yields the processor to the goroutines queued on this P: the running goroutine goes to the
/// back of its P's run queue even if it is urgent (an urgent goroutine's [`yield_now`] goes to
/// the urgent queue, which its P serves first, so nothing queued on its P would run). It
/// stays urgent: if it is moved from this queue (stolen, or handed off by sysmon) it is
/// queued as urgent again.
pub(crate) fn yield_local() {
    let (m, g) = running();
    check_may_switch(m, g, "yield");
    unwind_if_draining(g);
    mcall(After::YieldLocal);
}

/// Whether `g`'s runtime is shutting down (draining: its goroutines are being unwound).
///
/// Runs on: `g`, or anyone while `g`'s runtime is alive.
pub(crate) fn draining(g: &G) -> bool {
    let sched = g.sched.get();
    // SAFETY: a G's `sched` points at its live runtime while the G belongs to it, which the
    // caller guarantees; null once retired.
    // SeqCst: pairs with the store in `Runtime::shutdown`.
    unsafe { sched.as_ref() }.is_some_and(|s| s.draining.load(Ordering::SeqCst))
}

/// Unwinds the running goroutine `g` with the [`crate::RuntimeShutdown`] payload if its
/// runtime is shutting down and it has not been sent that unwind before (a goroutine gets it
/// once: one that catches it, or blocks again while it unwinds, is not unwound twice).
///
/// Runs on: `g`, at a safepoint outside every runtime critical section and `no_preempt`
/// section (the callers check: `check_may_switch` or `poll_slow`'s own test).
pub(crate) fn unwind_if_draining(g: &G) {
    if !g.unwound.load(Ordering::Relaxed) && g.no_unwind.get() == 0 && draining(g) {
        shutdown_unwind(g);
    }
}

/// Runs `f` (which may switch) without letting shutdown unwind the running goroutine inside
/// it: for runtime waits that have a request out (a suspender's `preempt_stop`) that nobody
/// else would withdraw. The goroutine unwinds at its next safepoint after.
pub(crate) fn without_shutdown_unwind<R>(f: impl FnOnce() -> R) -> R {
    let g = current_g();
    if let Some(g) = g {
        g.no_unwind.set(g.no_unwind.get() + 1);
    }
    let r = f();
    // Re-read: the goroutine may have moved to another thread (the G is the same).
    if let Some(g) = current_g() {
        g.no_unwind.set(g.no_unwind.get() - 1);
    }
    r
}

/// Unwinds the running goroutine `g` with the shutdown payload. `resume_unwind`, not `panic!`:
/// the panic hook is not run, so a shutdown prints nothing.
fn shutdown_unwind(g: &G) -> ! {
    g.unwound.store(true, Ordering::Relaxed);
    std::panic::resume_unwind(Box::new(crate::RuntimeShutdown { goroutine: goid(g) }))
}

/// Unwinds the running goroutine with the shutdown payload: for a primitive whose cancellable
/// park shutdown ended, once it has unlinked its node.
///
/// Runs on: a goroutine.
pub(crate) fn shutdown_unwind_current() -> ! {
    shutdown_unwind(current_g().expect("shutdown_unwind_current off a goroutine"))
}

/// Parks the running goroutine (see [`crate::park`]); if shutdown ends the park, unwinds it
/// with the shutdown payload instead of returning. For parks whose callback leaves nothing on
/// the goroutine's stack linked anywhere (a token in a queue or a cell is fine: a stale token
/// is refused by its generation).
pub(crate) fn park<F>(reason: usize, f: F)
where
    F: FnOnce(crate::GoroutineRef) -> bool,
{
    if park_cancellable(reason, f) {
        let g = current_g().expect("resumed on a goroutine");
        shutdown_unwind(g);
    }
}

/// Parks the running goroutine. Shutdown may end the park (if the goroutine has not been
/// unwound yet): then it returns true, and the caller must unlink whatever the callback linked
/// before it unwinds or returns (see `wait::park_current_cancellable`).
pub(crate) fn park_cancellable<F>(reason: usize, f: F) -> bool
where
    F: FnOnce(crate::GoroutineRef) -> bool,
{
    park_inner(reason, f)
}

fn park_inner<F>(reason: usize, f: F) -> bool
where
    F: FnOnce(crate::GoroutineRef) -> bool,
{
    let (m, g) = running();
    check_may_switch(m, g, "park");
    // Read by shutdown once it sees us Waiting (the status word's Release orders it).
    g.cancellable.store(!g.unwound.load(Ordering::Relaxed), Ordering::Relaxed);
    g.wait_reason.store(reason, Ordering::Relaxed);
    let mut f = Some(f);
    let mut call = move |r: crate::GoroutineRef| (f.take().expect("park callback called twice"))(r);
    let dynf: &mut (dyn FnMut(crate::GoroutineRef) -> bool + '_) = &mut call;
    // SAFETY: only the lifetime is erased. g0 calls the callback once, while this goroutine
    // is parked and cannot resume (SCAN is held until the callback returns), so everything
    // it borrows from this frame is alive.
    let dynf: *mut (dyn FnMut(crate::GoroutineRef) -> bool + 'static) =
        unsafe { core::mem::transmute(dynf as *mut (dyn FnMut(crate::GoroutineRef) -> bool + '_)) };
    mcall(After::Park(dynf));
    g.wait_reason.store(0, Ordering::Relaxed);
    g.cancellable.store(false, Ordering::Relaxed);
    // Relaxed: shutdown stored it before it queued us; the queue hand-off orders it.
    g.cancelled.swap(false, Ordering::Relaxed)
}

/// Makes a parked goroutine runnable.
pub(crate) fn ready(r: crate::GoroutineRef) {
    // The owner lock (a std mutex) and the run queues: a runtime critical section for the
    // preemption handler.
    crate::preempt::rt_section(|| ready_locked(r))
}

fn ready_locked(r: crate::GoroutineRef) {
    let g = r.g.get();
    let mut spins = 0u32;
    // Is the caller an M of g's runtime? Then the runtime is alive for the whole call.
    let same = current_m().is_some_and(|m| ptr::eq(m.sched, g.sched.get()));
    if same {
        // SAFETY: same runtime, alive while its M runs.
        let sched = unsafe { &*g.sched.get() };
        if cas_ready(sched, g, r.generation, &mut spins) {
            sched.enqueue(GPtr::from(g), true);
        }
        return;
    }
    // From elsewhere: hold the G's owner lock so its runtime cannot shut down under us.
    let owner = g.owner.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sched) = owner.as_ref() else {
        // Its runtime has shut down, and shutdown ended every park, this one's too: a thread
        // outside the runtime that took the token from a lock's or channel's queue before the
        // park was ended (its node was gone when the goroutine looked) wakes it here, after the
        // runtime went. Nothing is left to wake.
        return;
    };
    if cas_ready(sched, g, r.generation, &mut spins) {
        sched.enqueue(GPtr::from(g), true);
    }
}

/// `Waiting -> Runnable` for the park of `generation`: true if done. While the runtime shuts
/// down, a token whose park shutdown already ended (the goroutine is unwinding, or parked
/// again with a new generation) is ignored: false.
fn cas_ready(sched: &crate::runtime::Sched, g: &G, generation: u32, spins: &mut u32) -> bool {
    loop {
        match g.status.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(generation)) {
            crate::status::Cas::Ok => return true,
            crate::status::Cas::Scanning => crate::status::backoff(spins),
            // SeqCst: as in `draining`. Shutdown ends a park only after it set the flag.
            crate::status::Cas::Other(_) if sched.draining.load(Ordering::SeqCst) => return false,
            crate::status::Cas::Other(w) => panic!(
                "ready: stale or duplicate goroutine handle (goroutine {}, token gen {}, status {})",
                goid(g),
                generation,
                w
            ),
        }
    }
}

/// Readies a goroutine the runtime itself parked (`Preempted -> Waiting` by a suspender): any
/// generation.
pub(crate) fn ready_owned(g: &'static G) {
    let generation = g.status.load().generation;
    ready(crate::GoroutineRef { g: GPtr::from(g), generation });
}

/// The slow path of a poll: a preemption request (or a stale poison) is pending.
///
/// Runs on: a goroutine. Keeps the request if the goroutine may not be preempted now; it is
/// re-armed when the runtime critical section ends (the crate essay, "Safepoints and preemption", item 2).
#[cold]
#[inline(never)]
pub(crate) fn poll_slow() {
    let Some(m) = current_m() else { return };
    let Some(g) = m.curg() else { return };
    if m.locks.load(Ordering::Relaxed) != 0 || g.pins.get() != 0 || m.p().is_none() {
        // Not now: clear the fast-path word but keep `preempt`; release_m / the end of the
        // no_preempt section re-poisons it.
        g.guard().unpoison();
        return;
    }
    // Order matters: reset the guard, then consume the request (see G::request_preempt).
    g.guard().unpoison();
    fence(Ordering::SeqCst);
    let p = m.p().expect("checked above");
    if p.run_safe_point_fn.load(Ordering::Acquire) {
        crate::stw::run_safe_point_fn(m.sched(), p);
    }
    // The runtime is shutting down: unwind here (a suspender's request is answered first, at
    // the park below; the unwind comes at the next safepoint).
    if !g.preempt_stop.load(Ordering::SeqCst) {
        unwind_if_draining(g);
    }
    if !g.preempt.swap(false, Ordering::SeqCst) {
        return;
    }
    // It answers requests here: the next one need not be followed by a signal at once.
    g.async_prone.store(false, Ordering::Relaxed);
    if g.preempt_stop.load(Ordering::SeqCst) {
        mcall(After::PreemptPark);
        return;
    }
    // A stop is pending (g0 then stops the P), a time slice ended (sysmon), or the runtime is
    // shutting down: go to the back of the local queue (stealable by other Ps), and end the
    // slice so that whatever waits in runnext does not inherit it. (Go puts a preempted
    // goroutine on the global queue; with runnext hand-offs ending their slices in the local
    // queue, the global queue would be served far less often than the local one, and a
    // preempted goroutine would wait behind up to 61 slices.)
    mcall(After::YieldPreempted);
}

/// Checks for a preemption request: call it at loop back-edges of code that may run long.
///
/// ```
/// use safepoint_sched::{Runtime, poll};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// let sum = rt.block_on(|| {
///     let mut s = 0u64;
///     for i in 0..100_000u64 {
///         s += i;
///         if i % 1024 == 0 {
///             poll(); // a safepoint: a stop of the world or a time slice may take effect here
///         }
///     }
///     s
/// });
/// assert_eq!(sum, 4_999_950_000);
/// ```
#[inline]
pub fn poll() {
    if let Some(g) = current_g()
        && g.guard().is_poisoned()
    {
        poll_slow();
    }
}

/// Enters a runtime critical section on this M: no preemption until `release_m`.
pub(crate) fn acquire_m() -> Option<&'static M> {
    let m = current_m()?;
    m.locks.fetch_add(1, Ordering::Relaxed);
    // The preemption handler reads `locks` on this thread: keep the section's accesses after
    // the increment.
    compiler_fence(Ordering::SeqCst);
    Some(m)
}

/// Leaves a runtime critical section; re-arms a preemption request that arrived meanwhile.
pub(crate) fn release_m(m: &M) {
    // As in `acquire_m`: the section's accesses stay before the decrement.
    compiler_fence(Ordering::SeqCst);
    if m.locks.fetch_sub(1, Ordering::Relaxed) == 1
        && let Some(g) = m.curg()
        && g.pins.get() == 0
    {
        g.rearm_guard();
    }
}

/// Runs `f`, a call that may block in the kernel, without holding up other goroutines: the P is
/// left in `Syscall` state and sysmon hands it to another M if the call lasts.
///
/// ```
/// use safepoint_sched::{Runtime, blocking};
///
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// let len = rt.block_on(|| {
///     // A system call that may block: the P can go to another thread meanwhile.
///     blocking(|| std::fs::read_to_string("/proc/self/stat").map(|s| s.len()))
/// });
/// assert!(len.unwrap() > 0);
/// ```
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let Some(m) = current_m().filter(|m| m.curg().is_some()) else {
        return f();
    };
    let g = m.curg().expect("checked");
    check_may_switch(m, g, "blocking call");
    // A goroutine that loops on blocking calls may never come back to the scheduler's loop
    // otherwise (its P stays its own across short calls): at shutdown, it unwinds here.
    unwind_if_draining(g);
    entersyscall(m, g);
    struct Exit;
    impl Drop for Exit {
        fn drop(&mut self) {
            exitsyscall();
        }
    }
    let guard = Exit;
    let r = f();
    drop(guard);
    // Possibly on another M now: read the goroutine afresh (the G is the same).
    if let Some(g) = current_g() {
        unwind_if_draining(g);
    }
    // A blocking call may switch, so its return is a safepoint: it answers a request that
    // came meanwhile. A goroutine that makes only short calls otherwise never yields its time
    // slice (sysmon's request waits for a poll that never comes), and whatever waits in its
    // P's queue waits for ever.
    poll();
    r
}

fn entersyscall(m: &M, g: &G) {
    let sched = m.sched();
    m.locks.fetch_add(1, Ordering::Relaxed);
    let p = m.p().expect("goroutine without a P");
    if p.run_safe_point_fn.load(Ordering::Acquire) {
        crate::stw::run_safe_point_fn(sched, p);
    }
    if let Some(t) = &sched.trace {
        // SAFETY: this M owns p until the status store below.
        t.run_end(unsafe { p.trace.get() }, p.id);
    }
    p.syscalltick.fetch_add(1, Ordering::Relaxed);
    g.syscall_p.set(p as *const P);
    g.status.cas(Status::Running, Status::Syscall);
    // Leave the P: it stays ours unless sysmon or a stop retakes it by CAS.
    m.p.store(0, Ordering::Relaxed);
    // Release: pairs with the Acquire in `Sched::preempt_in_syscall` (sysmon).
    p.syscall_m.store(m as *const M as usize, Ordering::Release);
    p.m.store(0, Ordering::Release);
    p.set_status(PStatus::Syscall);
    if sched.gcwaiting.load(Ordering::SeqCst) && p.cas_status(PStatus::Syscall, PStatus::GcStop) {
        sched.stopwait_done();
    }
    m.locks.fetch_sub(1, Ordering::Relaxed);
}

fn exitsyscall() {
    let m = current_m().expect("exitsyscall off an M");
    let g = m.curg().expect("exitsyscall off a goroutine");
    let sched = m.sched();
    m.locks.fetch_add(1, Ordering::Relaxed);
    // SAFETY: syscall_p was set by entersyscall to one of this runtime's Ps.
    let oldp = unsafe { &*g.syscall_p.get() };
    g.syscall_p.set(ptr::null());
    // Fast path: our P is still ours.
    if oldp.cas_status(PStatus::Syscall, PStatus::Running) {
        m.p.store(oldp as *const P as usize, Ordering::Relaxed);
        oldp.m.store(m as *const M as usize, Ordering::Release);
        g.status.cas(Status::Syscall, Status::Running);
        if let Some(t) = &sched.trace {
            // SAFETY: the CAS made this M oldp's owner.
            t.run_begin(unsafe { oldp.trace.get() }, oldp.id, goid(g));
        }
        release_m(m);
        return;
    }
    // Slow path: an idle P.
    if !sched.gcwaiting.load(Ordering::SeqCst) {
        let mut l = sched.locked();
        if let Some(p) = sched.pidleget(&mut l) {
            drop(l);
            acquirep(m, p);
            g.status.cas(Status::Syscall, Status::Running);
            if let Some(t) = &sched.trace {
                // SAFETY: this M has just acquired p.
                t.run_begin(unsafe { p.trace.get() }, p.id, goid(g));
            }
            release_m(m);
            return;
        }
    }
    // None: queue ourselves and let this M go idle.
    m.locks.fetch_sub(1, Ordering::Relaxed);
    mcall(After::ExitSyscall);
}

/// The id of the running goroutine, or None off a goroutine.
///
/// ```
/// use safepoint_sched::{Runtime, goroutine_id};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// assert_eq!(goroutine_id(), None); // not on a goroutine
/// let id = rt.block_on(goroutine_id);
/// assert!(id.is_some());
/// ```
pub fn goroutine_id() -> Option<u64> {
    current_g().map(goid)
}

/// A section in which the running goroutine is not preempted and may not switch: hold it
/// around any thread-bound borrow (a `thread_local!` value, a std lock guard). Switching
/// (yield, park, blocking, channel operations) inside it panics with a description.
#[derive(Debug)]
pub struct NoPreempt {
    _not_send: core::marker::PhantomData<*const ()>,
}

/// Starts a [`NoPreempt`] section (nests). Off a goroutine it does nothing.
///
/// ```
/// use safepoint_sched::{Runtime, in_no_preempt, no_preempt};
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     {
///         let _np = no_preempt();
///         assert!(in_no_preempt());
///         // ... code that must not be stopped or moved to another thread ...
///     }
///     assert!(!in_no_preempt());
/// });
/// ```
pub fn no_preempt() -> NoPreempt {
    if let Some(g) = current_g() {
        g.pins.set(g.pins.get() + 1);
        // The preemption handler reads `pins` on this thread: the section's accesses must not
        // move above the increment (nor, in drop, below the decrement).
        compiler_fence(Ordering::SeqCst);
    }
    NoPreempt { _not_send: core::marker::PhantomData }
}

impl Drop for NoPreempt {
    fn drop(&mut self) {
        if let Some(g) = current_g() {
            compiler_fence(Ordering::SeqCst);
            let n = g.pins.get() - 1;
            g.pins.set(n);
            if n == 0 && current_m().is_some_and(|m| m.locks.load(Ordering::Relaxed) == 0) {
                g.rearm_guard();
            }
        }
    }
}

/// The managed-stack hook for growth, shrinking and release: the goroutine's status is
/// CopyStack while its buffer moves (no suspender may read it meanwhile). Refused with a
/// described panic inside a pinned or `no_preempt` section, whose code may hold pointers into
/// the buffer (a section's register view), and inside a blocking call, where a collector may
/// be reading it.
pub(crate) fn copy_begin() {
    let Some(g) = current_g() else { return };
    if g.pins.get() > 0 {
        panic!(
            "goroutine {}: managed stack moved (grown, shrunk or released) inside a pinned \
             or no_preempt section, where its frames' slots may be borrowed; push, shrink or \
             release between sections",
            goid(g)
        );
    }
    match g.status.load().base() {
        Some(Status::Running) => g.status.cas(Status::Running, Status::CopyStack),
        Some(Status::Syscall) => panic!(
            "goroutine {}: managed stack used inside a blocking call (it must stay frozen there)",
            goid(g)
        ),
        s => crate::throw!("managed stack growth in status {:?}", s),
    }
}

/// The managed-stack hook after growth.
pub(crate) fn copy_end() {
    if let Some(g) = current_g() {
        g.status.cas(Status::CopyStack, Status::Running);
    }
}

/// The managed-stack hook for a poisoned guard: the poll slow path.
pub(crate) fn stack_preempt() {
    if let Some(g) = current_g() {
        if g.status.load().base() == Some(Status::Syscall) {
            // Blocking calls leave the managed stack frozen: a push or poll there is a bug.
            g.guard().unpoison();
            panic!(
                "goroutine {}: managed stack used inside a blocking call (it must stay frozen there)",
                goid(g)
            );
        }
        poll_slow();
    }
}

/// Runs `f` with the running goroutine's managed stack: push frames, set slots, poll. The
/// borrow cannot outlive the call, so it cannot be handed to another goroutine.
///
/// Panics off a goroutine.
///
/// ```
/// use safepoint_sched::stackmap::{FuncDesc, Registry};
/// use safepoint_sched::{Runtime, with_managed_stack};
/// let reg = Registry::new();
/// let f = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap();
/// # let rt = Runtime::builder().procs(1).build().unwrap();
/// let depth = rt.block_on(move || {
///     with_managed_stack(|ms| ms.push(f)); // the running goroutine's own stack
///     let d = with_managed_stack(|ms| ms.depth());
///     with_managed_stack(|ms| ms.pop());
///     d
/// });
/// assert_eq!(depth, 1);
/// ```
#[inline]
pub fn with_managed_stack<R>(f: impl FnOnce(&safepoint_stackmap::ManagedStack) -> R) -> R {
    let g = current_g().unwrap_or_else(|| panic!("with_managed_stack: not on a goroutine"));
    f(g.mstack())
}

/// The running goroutine's managed-stack traceback, if the runtime has a registry and the stack
/// has frames.
pub(crate) fn managed_traceback() -> Option<String> {
    let g = current_g()?;
    // SAFETY: the G belongs to the live runtime this goroutine runs on.
    let sched = unsafe { &*g.sched.get() };
    let reg = sched.config.registry.as_ref()?;
    let ms = g.mstack();
    if ms.is_empty() {
        return None;
    }
    Some(ms.traceback(reg).to_string())
}
