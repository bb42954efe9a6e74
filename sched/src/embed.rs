//! What a collector built on the runtime needs from it: the running goroutine's P (for per-P
//! allocation caches), a handle naming a runtime, and, with the world stopped, the list of
//! goroutines and their managed stacks.

use std::sync::Arc;

use safepoint_stackmap::{Registry, Visitor};

use crate::runtime::{Sched, current_g, current_m};
use crate::status::Status;
use crate::stw::{Goroutine, WorldStop};

/// Names a runtime: lets a collector check that a goroutine belongs to the runtime whose
/// stacks it scans. Cheap to clone; keeps the runtime's shared state (not its threads) alive.
#[derive(Clone)]
pub struct RuntimeHandle {
    sched: Arc<Sched>,
}

impl core::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RuntimeHandle(procs {})", self.sched.procs)
    }
}

impl RuntimeHandle {
    pub(crate) fn new(sched: Arc<Sched>) -> RuntimeHandle {
        RuntimeHandle { sched }
    }

    /// Registers a check for the watchdog ([`crate::Builder::schedcheck`]): with the watchdog
    /// on, sysmon calls it every 100 ms with the time (`safepoint_arch::nanotime`), and a
    /// `Some(description)` aborts the process with that description and the runtime's report.
    /// Without the watchdog, nothing is registered. The check runs on sysmon's thread: it must
    /// be quick and must not block on anything a goroutine holds.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use safepoint_sched::Runtime;
    /// let rt = Runtime::builder().procs(1).schedcheck(true).build().unwrap();
    /// let looks = Arc::new(AtomicU64::new(0));
    /// let l = looks.clone();
    /// // Sysmon calls it about every 100 ms; `Some(problem)` would abort with a report.
    /// rt.handle().add_watchdog_check(Box::new(move |_now| {
    ///     l.fetch_add(1, Ordering::Relaxed);
    ///     None
    /// }));
    /// while looks.load(Ordering::Relaxed) == 0 {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// ```
    pub fn add_watchdog_check(&self, check: crate::WatchdogCheck) {
        if self.sched.config.schedcheck {
            self.sched.watch_checks.add(check);
        }
    }

    /// Whether the watchdog is on ([`crate::Builder::schedcheck`]).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).schedcheck(false).build().unwrap();
    /// assert!(!rt.handle().schedcheck());
    /// ```
    pub fn schedcheck(&self) -> bool {
        self.sched.config.schedcheck
    }

    /// Adds the scheduling-latency histogram to `out`: bucket `i` counts goroutines that
    /// waited `2^i ..< 2^(i+1)` ns from becoming runnable to running (the last bucket also
    /// longer waits). One wait in about eight is timed (a goroutine is sampled at one schedule
    /// of its P in eight), as Go samples. Reads each P's counters; allocates nothing.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, go, yield_now};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let hs: Vec<_> = (0..8).map(|_| go(|| (0..100).for_each(|_| yield_now()))).collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    /// });
    /// let mut hist = [0u64; 32];
    /// rt.handle().sched_latencies(&mut hist);
    /// assert!(hist.iter().sum::<u64>() > 0); // some of the waits in run queues were timed
    /// ```
    pub fn sched_latencies(&self, out: &mut [u64; 32]) {
        for p in self.sched.ps.iter() {
            for (o, b) in out.iter_mut().zip(p.latency.iter()) {
                // Relaxed: statistics.
                *o += b.load(crate::shim::Ordering::Relaxed);
            }
        }
    }

    /// Goroutines now: `(live, queued)`: spawned and not yet exited, and waiting in a run
    /// queue (every P's, the global and the urgent one). Racy snapshots; allocates nothing.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// let (live0, _) = rt.handle().goroutine_counts();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// assert_eq!(rt.handle().goroutine_counts().0, live0 + 1);
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn goroutine_counts(&self) -> (usize, usize) {
        // Relaxed: a statistic.
        (
            self.sched.ngoroutines.load(crate::shim::Ordering::Relaxed),
            crate::runtime::queued(&self.sched),
        )
    }

    /// Whether the execution trace is on ([`crate::Builder::trace`]).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).trace(None).build().unwrap();
    /// assert!(!rt.handle().trace_on());
    /// ```
    pub fn trace_on(&self) -> bool {
        self.sched.trace.is_some()
    }

    /// Records a span on a shared track of the execution trace (the collector's phases, a
    /// stop), from `from` to `to` (`safepoint_arch::nanotime` readings); `arg` is shown as the
    /// span's cycle. Nothing when the trace is off. Takes the trace's lock for the shared
    /// tracks (held for a push): call it where a short lock is allowed.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, TraceTrack};
    /// let file = std::env::temp_dir().join(format!("span-{}.json", std::process::id()));
    /// let rt = Runtime::builder().procs(1).trace(Some(file.clone())).build().unwrap();
    /// let t0 = safepoint_arch::nanotime();
    /// rt.handle().trace_span(TraceTrack::Gc, "my phase", t0, safepoint_arch::nanotime(), 1);
    /// drop(rt);
    /// assert!(std::fs::read_to_string(&file).unwrap().contains("\"my phase\""));
    /// std::fs::remove_file(file).unwrap();
    /// ```
    pub fn trace_span(
        &self,
        track: crate::TraceTrack,
        name: &'static str,
        from: u64,
        to: u64,
        arg: u64,
    ) {
        if let Some(t) = &self.sched.trace {
            t.shared(track, name, from, to, arg);
        }
    }

    /// Records a span from `from` (a `safepoint_arch::nanotime` reading) to now inside the
    /// calling goroutine's span on its P (a stack scan, an assist), if the trace is on and the
    /// caller is a goroutine of this runtime holding a P; `arg` is shown as a goroutine id. No
    /// lock (the P's own buffer); a span started on another P is clipped to this P's.
    ///
    /// ```
    /// use safepoint_sched::Runtime;
    /// let file = std::env::temp_dir().join(format!("nested-{}.json", std::process::id()));
    /// let rt = Runtime::builder().procs(1).trace(Some(file.clone())).build().unwrap();
    /// let h = rt.handle();
    /// rt.block_on(move || {
    ///     let t0 = safepoint_arch::nanotime();
    ///     std::hint::black_box((0..1000).sum::<u64>());
    ///     h.trace_nested("my step", t0, 0); // inside this goroutine's run span on its P
    /// });
    /// drop(rt);
    /// assert!(std::fs::read_to_string(&file).unwrap().contains("\"my step\""));
    /// std::fs::remove_file(file).unwrap();
    /// ```
    pub fn trace_nested(&self, name: &'static str, from: u64, arg: u64) {
        let Some(t) = &self.sched.trace else { return };
        // Without preemption: the P must stay this goroutine's while its buffer is written.
        let _np = crate::no_preempt();
        if let Some(m) = current_m().filter(|m| core::ptr::eq(m.sched, Arc::as_ptr(&self.sched)))
            && let Some(p) = m.p()
        {
            // SAFETY: this M owns p, and the section above keeps it so.
            t.nested(unsafe { p.trace.get() }, p.id, name, from, arg);
        }
    }

    /// Whether the caller is a goroutine of this runtime.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.handle();
    /// assert!(!h.is_current());
    /// assert!(rt.block_on(move || h.is_current()));
    /// ```
    pub fn is_current(&self) -> bool {
        current_g().is_some_and(|g| core::ptr::eq(g.sched.get(), Arc::as_ptr(&self.sched)))
    }

    /// Number of Ps.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// assert_eq!(rt.handle().procs(), 2);
    /// ```
    pub fn procs(&self) -> usize {
        self.sched.procs
    }

    /// How many Ps are idle right now (no goroutine to run): a hint for work that may use a
    /// processor nobody else wants, such as a collector's marking.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// assert!(rt.handle().idle_procs() <= 2);
    /// ```
    pub fn idle_procs(&self) -> usize {
        // Relaxed: a hint, stale as soon as it is read.
        self.sched.npidle.load(crate::shim::Ordering::Relaxed)
    }

    /// Whether the runtime's shutdown has reached its last phase (its `Runtime` was dropped and
    /// its goroutines have been unwound or abandoned): its Ms are exiting and no goroutine will
    /// run again, so there is nobody left to wake. While the drop still unwinds goroutines
    /// this is false: they run, and may be woken (see "Shutdown" in the crate docs).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let h = rt.handle();
    /// assert!(!h.is_shut_down());
    /// drop(rt);
    /// assert!(h.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        // SeqCst: as the store in `Runtime::shutdown`.
        self.sched.shutdown.load(crate::shim::Ordering::SeqCst)
    }

    /// Every goroutine of the runtime that is not dead, for [`suspend_g`](crate::suspend_g)
    /// scans. Goroutines spawned after the call are not in the list.
    ///
    /// ```
    /// use safepoint_sched::{Chan, Runtime};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// let ch = Chan::<u8>::new(0);
    /// let rx = ch.clone();
    /// let h = rt.spawn(move || rx.recv()).unwrap();
    /// assert!(rt.handle().goroutines().iter().any(|g| g.id() == h.id()));
    /// ch.close();
    /// h.join().unwrap().unwrap_err();
    /// ```
    pub fn goroutines(&self) -> Vec<Goroutine> {
        let gs = self.sched.all_gs();
        gs.into_iter()
            .filter(|g| !matches!(g.get().status.load().base(), Some(Status::Dead | Status::Idle)))
            .map(|g| Goroutine { g })
            .collect()
    }

    /// The embedder's function registry, if the runtime was built with one.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// assert!(rt.handle().registry().is_none()); // built without one
    /// ```
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.sched.config.registry.as_ref()
    }
}

impl WorldStop {
    /// Every goroutine of the stopped runtime that is not dead, the caller's own included.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, goroutine_id, stop_the_world};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let w = stop_the_world("list");
    ///     let me = goroutine_id().unwrap();
    ///     assert!(w.goroutines().iter().any(|g| g.id() == me)); // the caller's own included
    ///     w.start();
    /// });
    /// ```
    pub fn goroutines(&self) -> Vec<Goroutine> {
        let sched = self.sched();
        let gs = sched.all_gs();
        gs.into_iter()
            .filter(|g| !matches!(g.get().status.load().base(), Some(Status::Dead | Status::Idle)))
            .map(|g| Goroutine { g })
            .collect()
    }

    /// Whether `g` is held at an asynchronous point in this stop (the preemption signal stopped
    /// it at an arbitrary instruction: see [`Suspended::async_stopped`](crate::Suspended::async_stopped)).
    /// Its innermost managed frame must then be scanned conservatively: its bitmap may be stale.
    /// Stable while the world is stopped.
    ///
    /// ```
    /// use safepoint_sched::{Goroutine, Runtime, stop_the_world};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let w = stop_the_world("check");
    ///     // The stopper itself is at a synchronous safepoint: its stop_the_world call.
    ///     assert!(!w.async_stopped(Goroutine::current().unwrap()));
    ///     w.start();
    /// });
    /// ```
    pub fn async_stopped(&self, g: Goroutine) -> bool {
        g.g.get().status.load().base() == Some(Status::AsyncPreempted)
    }

    /// Walks `g`'s managed stack while the world is stopped: every live reference (and
    /// tagged) slot of every frame at its current safepoint, top frame first. For the caller's
    /// own goroutine, that is its stack as it is in this call. For a goroutine held
    /// asynchronously ([`WorldStop::async_stopped`]) the top frame's bitmap may be stale: a
    /// collector scans that frame's slots conservatively instead.
    ///
    /// # Panics
    /// If `g` belongs to another runtime, or (through the walker) if its stack is corrupted.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_sched::stackmap::{FuncDesc, Registry, SlotWord, Visitor};
    /// use safepoint_sched::{Goroutine, Runtime, stop_the_world, with_managed_stack};
    /// struct Count(usize);
    /// impl Visitor for Count {
    ///     fn reference(&mut self, _slot: usize, _word: &SlotWord) {
    ///         self.0 += 1;
    ///     }
    /// }
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 1).refs_at(0, &[0, 2])).unwrap();
    /// let rt = Runtime::builder().procs(1).registry(reg.clone()).build().unwrap();
    /// let n = rt.block_on(move || {
    ///     with_managed_stack(|ms| ms.push(f)); // a frame whose slots 0 and 2 are references
    ///     let w = stop_the_world("scan");
    ///     let mut c = Count(0);
    ///     w.walk_managed_stack(Goroutine::current().unwrap(), &reg, &mut c);
    ///     w.start();
    ///     with_managed_stack(|ms| ms.pop());
    ///     c.0
    /// });
    /// assert_eq!(n, 2);
    /// ```
    pub fn walk_managed_stack<V: Visitor>(&self, g: Goroutine, reg: &Registry, v: &mut V) {
        let gr = g.g.get();
        assert!(
            core::ptr::eq(gr.sched.get(), self.sched() as *const Sched),
            "walk_managed_stack: goroutine {} belongs to another runtime",
            g.id()
        );
        match gr.status.load().base() {
            Some(Status::Dead | Status::Idle) => {}
            // SAFETY: the world is stopped (`self` proves it and is !Send, so we are the
            // stopper): every other goroutine of this runtime is parked, queued, held at a safe
            // point, held in place by the preemption signal (its M runs nothing until the world
            // starts), or inside a blocking call (whose managed stack is frozen: a push or poll
            // there panics), so nothing writes its managed stack during the walk. The caller's
            // own goroutine is inside this call, which does not touch its stack.
            _ => unsafe { gr.mstack().walk_stopped(reg, v) },
        }
    }
}

/// Runs `f` with the managed stack of the running goroutine if its id is `goid`; `None` if the
/// caller is not that goroutine. For handles that are bound to one goroutine and must refuse to
/// work anywhere else (one lookup of the running goroutine serves both the check and the
/// access).
///
/// ```
/// use safepoint_sched::{Runtime, goroutine_id, with_managed_stack_of};
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     let me = goroutine_id().unwrap();
///     assert_eq!(with_managed_stack_of(me, |ms| ms.id()), Some(me));
///     assert_eq!(with_managed_stack_of(me + 1000, |ms| ms.id()), None); // not the caller
/// });
/// ```
#[inline]
pub fn with_managed_stack_of<R>(
    goid: u64,
    f: impl FnOnce(&safepoint_stackmap::ManagedStack) -> R,
) -> Option<R> {
    let g = current_g()?;
    (crate::g::goid(g) == goid).then(|| f(g.mstack()))
}

/// Why [`with_running_managed_stack_of`] did not run its closure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackRefused {
    /// The caller is not the goroutine named (or no goroutine at all).
    OtherGoroutine,
    /// The goroutine is inside a [`blocking`](crate::blocking) call: its managed stack stays
    /// frozen there (a collector may read it meanwhile).
    Blocking,
}

/// Runs `f` with the managed stack of the running goroutine if its id is `goid` and it is
/// not inside a blocking call: [`with_managed_stack_of`] with the check that a push needs.
/// Unlike [`pinned`], `f` may push frames and reach safepoints (a push's slow path answers a
/// pending stop there). For handles bound to one goroutine that push frames on its stack
/// outside any pinned section: one lookup of the running goroutine serves the identity
/// check, the status check and the access.
///
/// Why no pin is needed: the status can only leave `Running` by the goroutine's own doing (a
/// blocking call, a park) or transiently inside the push itself (growth, a preemption), so the
/// check holds for `f`'s pushes; a preemption signal that holds the goroutine between two of
/// `f`'s steps finds the stack as every push leaves it (header before top), as for any push.
///
/// ```
/// use safepoint_sched::{Runtime, StackRefused, blocking, goroutine_id};
/// use safepoint_sched::with_running_managed_stack_of;
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     let me = goroutine_id().unwrap();
///     assert_eq!(with_running_managed_stack_of(me, |ms| ms.id()), Ok(me));
///     let other = with_running_managed_stack_of(me + 1000, |ms| ms.id());
///     assert_eq!(other, Err(StackRefused::OtherGoroutine));
///     let frozen = blocking(|| with_running_managed_stack_of(me, |ms| ms.id()));
///     assert_eq!(frozen, Err(StackRefused::Blocking));
/// });
/// ```
#[inline]
pub fn with_running_managed_stack_of<R>(
    goid: u64,
    f: impl FnOnce(&safepoint_stackmap::ManagedStack) -> R,
) -> Result<R, StackRefused> {
    let Some(g) = current_g() else { return Err(StackRefused::OtherGoroutine) };
    if crate::g::goid(g) != goid {
        return Err(StackRefused::OtherGoroutine);
    }
    if g.status.load().base() != Some(Status::Running) {
        return Err(StackRefused::Blocking);
    }
    Ok(f(g.mstack()))
}

/// Whether the running goroutine is inside a [`no_preempt`](crate::no_preempt) section (it
/// may not park, yield or stop the world there). False off a goroutine.
///
/// ```
/// use safepoint_sched::{Runtime, in_no_preempt, no_preempt};
/// assert!(!in_no_preempt()); // off a goroutine
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     let np = no_preempt();
///     assert!(in_no_preempt());
///     drop(np);
///     assert!(!in_no_preempt());
/// });
/// ```
pub fn in_no_preempt() -> bool {
    current_g().is_some_and(|g| g.pins.get() > 0)
}

/// The running goroutine held on its P for the length of one short operation: see [`pinned`].
pub struct Pinned {
    g: &'static crate::g::G,
    p: Option<usize>,
    /// Bound to the goroutine's thread for the section.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Pinned {
    /// The goroutine's managed stack.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, goroutine_id, pinned};
    /// let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     let me = goroutine_id().unwrap();
    ///     assert_eq!(pinned(me, |p| p.managed_stack().depth()), Some(0));
    /// });
    /// ```
    #[inline]
    pub fn managed_stack(&self) -> &safepoint_stackmap::ManagedStack {
        self.g.mstack()
    }

    /// The P it runs on (`0..procs`), or `None` inside a blocking call.
    ///
    /// ```
    /// use safepoint_sched::{Runtime, goroutine_id, pinned};
    /// let rt = Runtime::builder().procs(2).build().unwrap();
    /// rt.block_on(|| {
    ///     let p = pinned(goroutine_id().unwrap(), |p| p.p()).unwrap();
    ///     assert!(matches!(p, Some(0 | 1)));
    /// });
    /// ```
    #[inline]
    pub fn p(&self) -> Option<usize> {
        self.p
    }
}

/// Runs `f` on the running goroutine, if its id is `goid`, with preemption held off (as in a
/// [`no_preempt`](crate::no_preempt) section): the goroutine keeps its P throughout, no stop,
/// ragged barrier or asynchronous preemption can come between two of `f`'s steps, and `f`
/// must not park, yield or push managed frames. `None` if the caller is not goroutine `goid`.
///
/// This is the collector's way into per-P state (allocation caches, write-barrier buffers):
/// one lookup of the running goroutine serves the identity check, the P and the stack.
///
/// ```
/// use safepoint_sched::{Runtime, goroutine_id, in_no_preempt, pinned};
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     let me = goroutine_id().unwrap();
///     assert_eq!(pinned(me, |_| in_no_preempt()), Some(true));
///     assert_eq!(pinned(me + 1, |_| ()), None); // another goroutine's id
/// });
/// ```
#[inline]
pub fn pinned<R>(goid: u64, f: impl FnOnce(&Pinned) -> R) -> Option<R> {
    struct Unpin(&'static crate::g::G);
    impl Drop for Unpin {
        #[inline]
        fn drop(&mut self) {
            let g = self.0;
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            let n = g.pins.get() - 1;
            g.pins.set(n);
            // A request that came while pinned found the guard poisoned and left it for us
            // only if a poll ran in the section (which `pinned` forbids); re-arm whenever a
            // request is pending, as `NoPreempt` does. SeqCst pairs with the requester's
            // SeqCst store of `preempt` (the Dekker pair of `rearm_guard`).
            if n == 0
                && g.preempt.load(crate::shim::Ordering::SeqCst)
                && current_m().is_some_and(|m| m.locks.load(crate::shim::Ordering::Relaxed) == 0)
            {
                g.rearm_guard();
            }
        }
    }
    // One lookup of the thread's M serves the goroutine, the identity check and the P.
    let m = current_m()?;
    let g = m.curg()?;
    if crate::g::goid(g) != goid {
        return None;
    }
    g.pins.set(g.pins.get() + 1);
    // The preemption handler reads `pins` on this thread: keep `f`'s accesses after the
    // increment (and, in `Unpin`, before the decrement).
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    let _unpin = Unpin(g);
    let p =
        if g.status.load().base() == Some(Status::Running) { m.p().map(|p| p.id) } else { None };
    Some(f(&Pinned { g, p, _not_send: core::marker::PhantomData }))
}

/// Walks the running goroutine's own managed stack (every live reference and tagged slot of
/// every frame at its current safepoint), as a collector does for the goroutine that runs it.
///
/// # Panics
/// Off a goroutine, or (through the walker) if the stack is corrupted.
///
/// ```
/// use std::sync::Arc;
/// use safepoint_sched::stackmap::{FuncDesc, Registry, SlotWord, Visitor};
/// use safepoint_sched::{Runtime, walk_own_managed_stack, with_managed_stack};
/// struct Slots(Vec<usize>);
/// impl Visitor for Slots {
///     fn reference(&mut self, slot: usize, _word: &SlotWord) {
///         self.0.push(slot);
///     }
/// }
/// let reg = Arc::new(Registry::new());
/// let f = reg.register(FuncDesc::new("f", 4, 0, 2).refs_at(1, &[3])).unwrap();
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// let slots = rt.block_on(move || {
///     with_managed_stack(|ms| {
///         ms.push(f);
///         ms.set_safepoint(1); // where only slot 3 is a live reference
///     });
///     let mut v = Slots(Vec::new());
///     walk_own_managed_stack(&reg, &mut v);
///     with_managed_stack(|ms| ms.pop());
///     v.0
/// });
/// assert_eq!(slots, [3]);
/// ```
pub fn walk_own_managed_stack<V: Visitor>(reg: &Registry, v: &mut V) {
    let g = current_g().unwrap_or_else(|| panic!("walk_own_managed_stack: not on a goroutine"));
    // SAFETY: we are the stack's owner and stay inside this call for the whole walk, so nothing
    // pushes, pops or moves the stack meanwhile; the walk only reads atomic words.
    unsafe { g.mstack().walk_stopped(reg, v) }
}

/// Marks the running goroutine as part of the runtime's machinery (or not): a collector's
/// driver, sweeper or worker, which the program did not start. A deadlock report leaves it
/// out (it still counts as blocked), as Go's leaves out its system goroutines. Returns the
/// previous setting. Off a goroutine it does nothing (and returns false).
///
/// ```
/// use safepoint_sched::{Runtime, set_system};
/// assert!(!set_system(true)); // off a goroutine: nothing
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     assert!(!set_system(true));
///     assert!(set_system(false)); // the previous setting
/// });
/// ```
pub fn set_system(on: bool) -> bool {
    match current_g() {
        Some(g) => g.system.swap(on, crate::shim::Ordering::Relaxed),
        None => false,
    }
}

/// Marks the running goroutine urgent (or not): whenever it is readied, yields or has its
/// time slice ended, it goes ahead of all other runnable goroutines, and if no P is idle when
/// it is readied, one running goroutine's time slice is ended so that a P picks it up within
/// a safepoint or two. For latency-critical work such as a collector's driver and mark
/// workers. An urgent goroutine is not time-sliced: it keeps its P until it parks, sleeps or
/// blocks (when its slice ends, the goroutines queued on its P move to the global queue for
/// the other Ps). With one P, the others wait for it: keep urgent work short or parking
/// often. Returns the previous setting. Off a goroutine it does nothing (and returns false).
///
/// ```
/// use safepoint_sched::{Runtime, set_urgent};
/// let rt = Runtime::builder().procs(1).build().unwrap();
/// rt.block_on(|| {
///     assert!(!set_urgent(true));
///     assert!(set_urgent(false));
/// });
/// ```
pub fn set_urgent(on: bool) -> bool {
    match current_g() {
        // Relaxed: read when this goroutine is next readied, after its park (which orders it).
        Some(g) => g.urgent.swap(on, crate::shim::Ordering::Relaxed),
        None => false,
    }
}
