//! The collector: configuration, the phase machine, one cycle, the background sweeper, the
//! pacer, statistics.

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_deque::Injector;
use crossbeam_utils::CachePadded;
use safepoint_sched::{Chan, Runtime, RuntimeHandle, WorldStop};
use safepoint_stackmap::{Frame, Registry, Visitor};

use crate::debug::DebugKnobs;
use crate::globals::Globals;
use crate::heap::{AllocError, Cache, Heap, HeapConfig, HeapStats};
use crate::mark::{GREY, MarkCtx, Tracer, checkmark, shade_bit};
use crate::types::{RegistryConfig, TagRule, TypeError, TypeRegistry};

/// The collector's phase (the crate essay, "The collector"). A cycle goes `Off -> Quiesce -> Mark -> Stw ->
/// Sweep -> Off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// No marking. Sweeping of the last cycle may be finished or not.
    Off = 0,
    /// A ragged barrier brings every P to the cycle: each flushes its allocation cache.
    Quiesce = 1,
    /// Marking from the roots, while the program runs (with `gcstoptheworld=1`, inside the
    /// cycle's stop).
    Mark = 2,
    /// Mark termination, inside the cycle's stop: verify (checkmark), end marking, pace.
    Stw = 3,
    /// Concurrent, lazy sweeping: allocation sweeps the spans it takes, a background
    /// goroutine sweeps the rest.
    Sweep = 4,
}

impl Phase {
    /// The phase's name in the execution trace.
    ///
    /// ```
    /// use safepoint_gc::Phase;
    /// assert_eq!(Phase::Mark.name(), "mark");
    /// assert_eq!(Phase::Sweep.name(), "sweep");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Phase::Off => "off",
            Phase::Quiesce => "quiesce",
            Phase::Mark => "mark",
            Phase::Stw => "mark termination",
            Phase::Sweep => "sweep",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Quiesce,
            2 => Phase::Mark,
            3 => Phase::Stw,
            4 => Phase::Sweep,
            _ => Phase::Off,
        }
    }
}

/// Why an operation of the collector or its [`Mutator`](crate::Mutator) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcError {
    /// Allocation failed: the heap's hard limit, an object too large, or the OS.
    Alloc(AllocError),
    /// A bad type, header or length.
    Type(TypeError),
    /// The call must be made from a goroutine of the collector's runtime.
    WrongRuntime,
    /// The runtime would not start one of the collector's goroutines (it is shutting down, or
    /// no goroutine stack could be had); the runtime's error is also the
    /// [`source`](std::error::Error::source).
    Runtime(safepoint_sched::Error),
    /// A heap operation inside a blocking call: the goroutine has handed off its P, and its
    /// managed stack is frozen there (a collector may be reading it).
    NoP,
    /// The slot belongs to a scope that has ended (or to another mutator).
    StaleSlot,
    /// The slot or field holds no reference (null, or an immediate value).
    NotAReference {
        /// The word found.
        found: usize,
    },
    /// The slot holds no immediate integer.
    NotAnInteger {
        /// The word found.
        found: usize,
    },
    /// An integer too wide for an immediate value under the heap's tag rule.
    IntegerOutOfRange {
        /// The integer.
        value: i64,
    },
    /// A field or element index past the object's end.
    OutOfBounds {
        /// The index asked for.
        index: usize,
        /// The number of fields or elements.
        len: usize,
    },
    /// The operation does not fit the field's kind or the object's type.
    WrongKind {
        /// The object's type name.
        type_name: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A [`Global`](crate::Global), [`RefChan`](crate::RefChan) or
    /// [`Shape`](crate::Shape) of another collector.
    WrongHeap,
    /// This goroutine already has a live [`Mutator`](crate::Mutator).
    MutatorActive,
    /// The channel is closed.
    Closed,
    /// A [`Section`](crate::Section) entered while another section of the same goroutine is
    /// running (sections do not nest: the outer one's references must not cross the inner
    /// one's safepoints).
    NestedSection,
    /// A section's frame operation found no section frame on top of the goroutine's managed
    /// stack (none pushed, or another kind of frame pushed over it).
    NoFrame,
    /// A slot index past the top section frame's slots.
    SlotOutOfFrame {
        /// The slot asked for.
        index: usize,
        /// The frame's slot count.
        slots: usize,
    },
    /// A function id that the runtime's function registry does not hold (the runtime was
    /// built without one, or the id is another registry's).
    UnknownFunction {
        /// The id's index.
        index: u32,
    },
}

impl fmt::Display for GcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcError::Alloc(e) => write!(f, "{e}"),
            GcError::Type(e) => write!(f, "{e}"),
            GcError::WrongRuntime => {
                write!(f, "not on a goroutine of the runtime this collector was built for")
            }
            GcError::Runtime(e) => write!(f, "cannot start the collector's goroutines: {e}"),
            GcError::NoP => write!(
                f,
                "not allowed inside a blocking call (the goroutine has no P, and its managed \
                 stack is frozen)"
            ),
            GcError::StaleSlot => write!(f, "slot of a scope that has ended"),
            GcError::NotAReference { found } => write!(f, "not a reference: {found:#x}"),
            GcError::NotAnInteger { found } => write!(f, "not an integer: {found:#x}"),
            GcError::IntegerOutOfRange { value } => {
                write!(f, "integer {value} does not fit an immediate value")
            }
            GcError::OutOfBounds { index, len } => {
                write!(f, "index {index} out of range for length {len}")
            }
            GcError::WrongKind { type_name, what } => write!(f, "{type_name}: {what}"),
            GcError::WrongHeap => write!(f, "handle belongs to another collector"),
            GcError::MutatorActive => write!(f, "this goroutine already has a mutator"),
            GcError::Closed => write!(f, "channel closed"),
            GcError::NestedSection => {
                write!(f, "a section entered inside another section of the same goroutine")
            }
            GcError::NoFrame => write!(f, "no section frame on top of the managed stack"),
            GcError::SlotOutOfFrame { index, slots } => {
                write!(f, "slot {index} outside the top section frame ({slots} slots)")
            }
            GcError::UnknownFunction { index } => write!(
                f,
                "function {index} is not in the runtime's function registry (built without \
                 one, or the id is another registry's)"
            ),
        }
    }
}

/// [`GcError::Alloc`], [`GcError::Type`] and [`GcError::Runtime`] give the error they wrap as
/// their source (its message is also in theirs, so that printing a `GcError` alone still says
/// why).
///
/// ```
/// use std::error::Error as _;
/// use safepoint_gc::{GcError, TypeDesc, TypeRegistry};
///
/// let reg = TypeRegistry::new();
/// let e = GcError::from(reg.register(TypeDesc::RefArray { name: String::new() }).unwrap_err());
/// assert_eq!(e.source().unwrap().to_string(), e.to_string());
/// let e = GcError::Runtime(safepoint_sched::Error::Shutdown);
/// assert_eq!(e.source().unwrap().to_string(), "the runtime is shutting down");
/// assert!(GcError::NoP.source().is_none());
/// ```
impl std::error::Error for GcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GcError::Alloc(e) => Some(e),
            GcError::Type(e) => Some(e),
            GcError::Runtime(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AllocError> for GcError {
    fn from(e: AllocError) -> Self {
        GcError::Alloc(e)
    }
}

impl From<TypeError> for GcError {
    fn from(e: TypeError) -> Self {
        GcError::Type(e)
    }
}

/// The heap goal after a cycle that traced `traced` live bytes while `black` bytes were
/// allocated (black) during its marking: `gc_percent` past the traced heap, plus the black
/// bytes once; at least [`GcConfig::min_heap`], and at most [`GcConfig::memory_limit`] unless
/// the live heap is already near it.
///
/// The black bytes are carried, not multiplied. Allocated while marking, they are marked
/// without being traced: none can be freed before the next cycle's sweep, so the next cycle
/// must make room for them, but nothing says they are live, and in a program whose objects
/// die young most are not. Go's goal is `GOGC` percent past its marked heap, black bytes
/// included, so it doubles them too. Ours marks `binary-trees-compiled 21` in about the time
/// Go takes, but the program allocates about twice as fast meanwhile (45-75 MB black a cycle
/// against Go's 30-40 MB), and with Go's rule its peak RSS was 1.07 times Go's; carried once,
/// 0.95 times, for 120 cycles instead of 88 (Go runs 84) and a wall time of 0.75 of Go's
/// instead of 0.70 (`benches/peers/compare --runs 5 --suite gc-compiled`).
pub(crate) fn heap_goal(config: &GcConfig, traced: usize, black: usize) -> usize {
    let gp = config.gc_percent as usize;
    traced
        .saturating_add((traced / 100).saturating_mul(gp))
        .saturating_add(traced % 100 * gp / 100)
        .saturating_add(black)
        .max(config.min_heap)
        // The soft limit caps the goal, but leaves at least 1/16 of the live heap to
        // allocate before the next cycle (past the limit, collecting nonstop would not help).
        .min(config.memory_limit.max(traced.saturating_add(black).saturating_add(traced / 16)))
}

/// The collector's settings; [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GcConfig {
    /// The heap goal is `live * (1 + gc_percent / 100)`, plus what the last marking allocated
    /// (see the crate's essay on pacing). Default 100;
    /// `u32::MAX` turns triggered collection off. `SAFEPOINT_GC=N` (or `off`) in the
    /// environment overrides it, as `GOGC` does Go's.
    pub gc_percent: u32,
    /// The heap goal never goes below this many bytes. Default 4 MiB.
    pub min_heap: usize,
    /// Allocation past this many bytes of span pages fails with an out-of-memory error (after
    /// a collection has tried to make room). Default: no limit.
    pub hard_limit: usize,
    /// A soft limit on the heap: the goal never goes above it (while the live heap is below
    /// it), so collections come more often as the heap nears it. Default: no limit;
    /// `SAFEPOINT_MEMLIMIT` (bytes, or with a suffix `KiB`, `MiB`, `GiB`, `TiB`) in the
    /// environment overrides it, as `GOMEMLIMIT` does Go's.
    pub memory_limit: usize,
    /// Mark with the world stopped (`gcstoptheworld`): the debugging mode. Default: off
    /// (concurrent marking).
    pub stop_the_world: bool,
    /// Verify each marking by re-marking from scratch (`gccheckmark`). Default off.
    pub checkmark: bool,
    /// Fill freed objects with a pattern and catch any use of one (`gcpoison`). Default off.
    pub poison: bool,
    /// One line per cycle through the message sink (`gctrace`). Default off.
    pub trace: bool,
    /// How tagged words are read. Default [`TagRule::LOW_BIT`].
    pub tag_rule: TagRule,
    /// Address space reserved for typed spans (see [`HeapConfig::typed_reserve`]). Default
    /// 256 GiB, which costs no memory.
    pub typed_reserve: usize,
    /// The word a slot of a sealed frame is cleared to when the frame's current stack map
    /// calls it dead (see [`GcBuilder::dead_slot_word`]). Default 0 (null).
    pub dead_slot_word: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            gc_percent: 100,
            min_heap: 4 << 20,
            hard_limit: usize::MAX,
            memory_limit: usize::MAX,
            stop_the_world: false,
            checkmark: false,
            poison: false,
            trace: false,
            tag_rule: TagRule::LOW_BIT,
            typed_reserve: HeapConfig::default().typed_reserve,
            dead_slot_word: 0,
        }
    }
}

/// Builds a [`Gc`]; knobs set in `SAFEPOINT_DEBUG` are added to what the builder says, and
/// `SAFEPOINT_GC` and `SAFEPOINT_MEMLIMIT` override its `gc_percent` and `memory_limit`.
#[derive(Clone, Debug, Default)]
pub struct GcBuilder {
    config: GcConfig,
    ignore_env: bool,
}

impl GcBuilder {
    /// The `gc_percent` (see [`GcConfig::gc_percent`]).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().ignore_env().gc_percent(50).build(&rt).unwrap();
    /// assert_eq!(gc.config().gc_percent, 50);
    /// ```
    pub fn gc_percent(mut self, p: u32) -> Self {
        self.config.gc_percent = p;
        self
    }
    /// The minimum heap goal in bytes.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().ignore_env().min_heap(64 << 20).build(&rt).unwrap();
    /// assert_eq!(gc.config().min_heap, 64 << 20);
    /// ```
    pub fn min_heap(mut self, bytes: usize) -> Self {
        self.config.min_heap = bytes;
        self
    }
    /// The hard limit in bytes.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().hard_limit(8 << 20).build(&rt).unwrap();
    /// let bytes = gc.types().register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a]| {
    ///         // Past the limit, even after a collection: an error, not an abort.
    ///         let e = m.alloc_array(a, bytes, 16 << 20).unwrap_err();
    ///         assert!(matches!(e, GcError::Alloc(_)), "{e}");
    ///     });
    /// });
    /// ```
    pub fn hard_limit(mut self, bytes: usize) -> Self {
        self.config.hard_limit = bytes;
        self
    }
    /// The soft memory limit in bytes.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().ignore_env().memory_limit(256 << 20).build(&rt).unwrap();
    /// assert_eq!(gc.config().memory_limit, 256 << 20);
    /// ```
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.config.memory_limit = bytes;
        self
    }
    /// Stop-the-world marking.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().stop_the_world(true).build(&rt).unwrap();
    /// assert!(gc.config().stop_the_world);
    /// gc.collect(); // marks inside the cycle's stop
    /// ```
    pub fn stop_the_world(mut self, on: bool) -> Self {
        self.config.stop_the_world = on;
        self
    }
    /// Checkmark verification.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().checkmark(true).build(&rt).unwrap();
    /// assert!(gc.config().checkmark);
    /// gc.collect(); // verified by marking again from scratch
    /// ```
    pub fn checkmark(mut self, on: bool) -> Self {
        self.config.checkmark = on;
        self
    }
    /// The address space reserved for typed spans (see [`GcConfig::typed_reserve`]).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().typed_reserve(1 << 30).build(&rt).unwrap();
    /// assert_eq!(gc.config().typed_reserve, 1 << 30);
    /// ```
    pub fn typed_reserve(mut self, bytes: usize) -> Self {
        self.config.typed_reserve = bytes;
        self
    }
    /// Poisoning of freed objects.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().poison(true).build(&rt).unwrap();
    /// assert!(gc.config().poison);
    /// ```
    pub fn poison(mut self, on: bool) -> Self {
        self.config.poison = on;
        self
    }
    /// A trace line per cycle.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().trace(true).build(&rt).unwrap();
    /// assert!(gc.config().trace);
    /// gc.collect(); // prints a `gc 1 @...` line through the message sink
    /// ```
    pub fn trace(mut self, on: bool) -> Self {
        self.config.trace = on;
        self
    }
    /// The tag rule for tagged words.
    ///
    /// ```
    /// use safepoint_gc::{Gc, TagRule};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// // References are words whose low bit is 1 (other tagged words are immediates).
    /// let rule = TagRule { mask: 1, ref_tag: 1 };
    /// let gc = Gc::builder().tag_rule(rule).build(&rt).unwrap();
    /// assert_eq!(gc.config().tag_rule, rule);
    /// ```
    pub fn tag_rule(mut self, rule: TagRule) -> Self {
        self.config.tag_rule = rule;
        self
    }
    /// The word a register of a sealed frame reads after a collection cleared it, because the
    /// frame's current stack map called it dead (a wrong map: the frame still used it). 0
    /// (null) by default; an embedder whose encoding has its own nil names it here, so that
    /// a wrong map reads as that nil rather than as whatever 0 means to the embedder (an
    /// integer, say). It must be an immediate under the tag rule ([`GcBuilder::tag_rule`]):
    /// [`build`](Self::build) refuses a word the rule reads as a reference.
    /// [`Section::cleared`](crate::Section::cleared) gives it as a value.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, TagRule, TypeError};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let rule = TagRule { mask: 3, ref_tag: 1 }; // references end in 01
    /// let gc = Gc::builder().tag_rule(rule).dead_slot_word(2).build(&rt).unwrap();
    /// assert_eq!(gc.config().dead_slot_word, 2);
    /// let refused = Gc::builder().tag_rule(rule).dead_slot_word(0x1001).build(&rt);
    /// assert!(matches!(refused, Err(GcError::Type(TypeError::BadConfig { .. }))));
    /// ```
    pub fn dead_slot_word(mut self, word: usize) -> Self {
        self.config.dead_slot_word = word;
        self
    }

    /// Do not read `SAFEPOINT_DEBUG`, `SAFEPOINT_GC` or `SAFEPOINT_MEMLIMIT` (tests that must
    /// not be changed by the environment).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// // SAFEPOINT_GC, SAFEPOINT_MEMLIMIT and SAFEPOINT_DEBUG make no difference to this one.
    /// let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    /// assert_eq!(gc.config().gc_percent, 100);
    /// assert!(!gc.config().trace);
    /// ```
    pub fn ignore_env(mut self) -> Self {
        self.ignore_env = true;
        self
    }

    /// The collector for `rt`'s goroutines. It starts a background sweeper goroutine on `rt`.
    ///
    /// # Errors
    /// [`GcError::Type`] for a bad tag rule, [`GcError::Alloc`] if the heap's tables cannot be
    /// mapped, [`GcError::Runtime`] if `rt` will not start the collector's goroutines.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().gc_percent(200).build(&rt).unwrap();
    /// assert_eq!(gc.cycles(), 0);
    /// ```
    pub fn build(self, rt: &Runtime) -> Result<Gc, GcError> {
        let mut config = self.config;
        if !self.ignore_env {
            let k = DebugKnobs::from_env();
            config.trace |= k.gctrace;
            config.checkmark |= k.gccheckmark;
            config.poison |= k.gcpoison;
            config.stop_the_world |= k.gcstoptheworld;
            if let Some(p) = crate::debug::gc_percent_from_env() {
                config.gc_percent = p;
            }
            if let Some(limit) = safepoint_sched::env::memlimit() {
                config.memory_limit = limit;
            }
        }
        let types = TypeRegistry::with_config(RegistryConfig {
            tag_rule: config.tag_rule,
            ..RegistryConfig::default()
        })?;
        if config.tag_rule.is_ref(config.dead_slot_word) {
            return Err(GcError::Type(TypeError::BadConfig {
                reason: "the dead-slot word must be an immediate under the tag rule",
            }));
        }
        let heap = Heap::new(HeapConfig {
            hard_limit: config.hard_limit,
            poison: config.poison,
            typed_reserve: config.typed_reserve,
        })?;
        let handle = rt.handle();
        let procs = handle.procs();
        let caches: Box<[_]> = (0..procs)
            .map(|_| {
                CachePadded::new(PCache(UnsafeCell::new(PState {
                    cache: heap.new_cache(),
                    wbuf: Vec::with_capacity(crate::concurrent::WBUF_LEN),
                    assist: Vec::new(),
                })))
            })
            .collect();
        let reg = handle.registry().cloned().unwrap_or_else(|| Arc::new(Registry::new()));
        let sweeper = Arc::new(Chan::new(1));
        let driver = Arc::new(Chan::new(1));
        let inner = Arc::new(Inner {
            trigger: AtomicU64::new(if config.gc_percent == u32::MAX {
                u64::MAX
            } else {
                config.min_heap as u64
            }),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                // Relaxed: only uniqueness matters.
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            config,
            typed: heap.typed_range(),
            heap,
            types,
            rt: handle,
            reg,
            caches,
            globals: Globals::new(procs),
            phase: AtomicU8::new(Phase::Off as u8),
            trace_phase: Mutex::new(None),
            phase_clock: Arc::new(PhaseClock {
                phase: AtomicU8::new(Phase::Off as u8),
                since: AtomicU64::new(0),
            }),
            cycles: AtomicU64::new(0),
            cycle_lock: safepoint_sched::Mutex::new(()),
            stats: Mutex::new(CycleStats::default()),
            pool: OnceLock::new(),
            sweeper: sweeper.clone(),
            start: Instant::now(),
            conc: crate::concurrent::Shared::new(),
            driver: driver.clone(),
            requests: Mutex::new(Vec::new()),
            weak_read: Default::default(),
            external: Default::default(),
        });
        let _ = inner.conc.me.set(Arc::downgrade(&inner));
        // The watchdog's check (only with `schedcheck=1`): it holds the clock weakly, so a
        // dropped collector is never reported.
        let clock = Arc::downgrade(&inner.phase_clock);
        inner.rt.add_watchdog_check(Box::new(move |now| clock.upgrade()?.stuck(now)));
        let weak = Arc::downgrade(&inner);
        // The collector's goroutines are the runtime's machinery, not the program's: a
        // deadlock report leaves them out.
        rt.spawn(move || {
            safepoint_sched::set_system(true);
            background_sweeper(weak, sweeper)
        })
        .map_err(GcError::Runtime)?;
        let weak = Arc::downgrade(&inner);
        rt.spawn(move || crate::concurrent::driver(weak, driver)).map_err(GcError::Runtime)?;
        let cleanups = Arc::new(Chan::new(1));
        inner.heap.specials().set_waker(cleanups.clone());
        let weak = Arc::downgrade(&inner);
        rt.spawn(move || crate::weak::cleanup_goroutine(weak, cleanups))
            .map_err(GcError::Runtime)?;
        Ok(Gc { inner })
    }
}

/// The phase and when it last changed, kept for the watchdog's check (written only with the
/// watchdog on).
struct PhaseClock {
    phase: AtomicU8,
    since: AtomicU64,
}

/// How long a cycle may stay in one of its marking phases before the watchdog reports it.
const PHASE_STUCK_NS: u64 = 10_000_000_000;

impl PhaseClock {
    /// The watchdog's check: a cycle that has stayed in Quiesce, Mark or Stw for
    /// [`PHASE_STUCK_NS`] (sweeping may last as long as nobody allocates).
    fn stuck(&self, now: u64) -> Option<String> {
        let phase = Phase::from_u8(self.phase.load(Ordering::Relaxed));
        let since = self.since.load(Ordering::Relaxed);
        (matches!(phase, Phase::Quiesce | Phase::Mark | Phase::Stw)
            && now.saturating_sub(since) >= PHASE_STUCK_NS)
            .then(|| {
                format!(
                    "the collector's phase has stayed {phase:?} for {} s",
                    (now - since) / 1_000_000_000
                )
            })
    }
}

/// One P's allocation cache and write-barrier buffer.
pub(crate) struct PState {
    pub(crate) cache: Cache,
    /// Addresses the write barrier shaded on this P and nobody has marked yet.
    pub(crate) wbuf: Vec<usize>,
    /// Grey objects of an assist in progress (empty between assists).
    pub(crate) assist: Vec<usize>,
}

/// One P's state; see `PState`.
pub(crate) struct PCache(pub(crate) UnsafeCell<PState>);

impl PCache {
    /// P `p`'s state.
    ///
    /// # Safety
    /// The caller is P `p`'s goroutine inside a pinned section, or the ragged barrier's
    /// function for P `p`, or the world is stopped (see the `Sync` impl).
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub(crate) unsafe fn get(&self) -> &mut PState {
        // SAFETY: per the contract, nobody else uses this P's state now.
        unsafe { &mut *self.0.get() }
    }
}

// SAFETY: cache `i` is touched only by the goroutine running on P `i` inside a `no_preempt`
// section (it keeps the P for the whole section), by the ragged barrier's function for P `i`
// (which runs when P `i`'s goroutine is at a safepoint, so not inside such a section), or with
// the world stopped. These never overlap, and the scheduler's hand-offs order them.
unsafe impl Sync for PCache {}

pub(crate) struct Inner {
    /// Unique among the process's collectors (for telling their shapes apart).
    pub(crate) id: u64,
    pub(crate) config: GcConfig,
    pub(crate) heap: Heap,
    /// The heap's typed arenas (a copy: it never changes), for finding headers with no load
    /// from the heap.
    pub(crate) typed: crate::pageheap::TypedRange,
    pub(crate) types: TypeRegistry,
    pub(crate) rt: RuntimeHandle,
    pub(crate) reg: Arc<Registry>,
    pub(crate) caches: Box<[CachePadded<PCache>]>,
    pub(crate) globals: Globals,
    phase: AtomicU8,
    /// When the phase last changed, for the watchdog (`SAFEPOINT_DEBUG=schedcheck=1`).
    phase_clock: Arc<PhaseClock>,
    /// The phase being traced (with its cycle and start), when the runtime's execution trace
    /// is on: each phase of each cycle becomes a span on the trace's GC track.
    trace_phase: Mutex<Option<(Phase, u64, u64)>>,
    pub(crate) cycles: AtomicU64,
    /// The heap's total allocated bytes at which the next cycle starts.
    trigger: AtomicU64,
    /// One cycle at a time; goroutines that want one meanwhile wait here (and find it done).
    cycle_lock: safepoint_sched::Mutex<()>,
    stats: Mutex<CycleStats>,
    pool: OnceLock<rayon::ThreadPool>,
    sweeper: Arc<Chan<()>>,
    pub(crate) start: Instant,
    /// Concurrent marking's shared state (see `concurrent`).
    pub(crate) conc: crate::concurrent::Shared,
    /// Wakes the background cycle driver: for a triggered cycle (concurrent mode), or for a
    /// [`Gc::collect`] asked from outside the runtime (either mode).
    pub(crate) driver: Arc<Chan<()>>,
    /// Collections asked for from outside the runtime: the driver runs one after its next
    /// wake-up and answers each sender.
    requests: Mutex<Vec<std::sync::mpsc::Sender<()>>>,
    /// What a weak read must do besides loading its cell (the `weak` module's "A read").
    pub(crate) weak_read: crate::weak::ReadState,
    /// Memory outside the heap that objects own, as the embedder reports it (`external`).
    pub(crate) external: Arc<crate::external::Counts>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sweeper and the driver hold only weak references; closing their channels ends
        // them. If the runtime is gone (a `Gc` or `Global` outlived it), so are they: a close
        // would try to wake goroutines of a dead runtime.
        if !self.rt.is_shut_down() {
            if self.rt.trace_on() {
                // The phase still open (the last cycle's sweep) ends with the collector.
                self.trace_phase(Phase::Off);
            }
            self.sweeper.close();
            self.driver.close();
            self.heap.specials().close();
        }
    }
}

/// A garbage-collected heap bound to one runtime. Cheap to clone (shared); `Send + Sync`.
#[derive(Clone)]
pub struct Gc {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Gc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gc").field("phase", &self.phase()).field("cycles", &self.cycles()).finish()
    }
}

/// A snapshot of the collector's counters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GcStats {
    /// Completed cycles.
    pub cycles: u64,
    /// Bytes found live by the last marking.
    pub live_bytes: usize,
    /// The heap goal set by the last cycle.
    pub goal_bytes: usize,
    /// The heap's sizes now.
    pub heap: HeapStats,
    /// Pauses of the last cycles (at most [`GcStats::RECENT_PAUSES`]), oldest first. A
    /// cycle's pause runs from its stop's request to the start of the restart (as Go counts
    /// mark termination's), and includes any earlier termination stops of the cycle that found
    /// work. Older pauses, up to the last 100,000, are returned on request by
    /// [`Gc::pauses_since`].
    pub pauses: Vec<Duration>,
    /// Pauses recorded so far (one per cycle): the number of the next pause, for
    /// [`Gc::pauses_since`].
    pub pause_count: u64,
    /// The longest pause so far.
    pub max_pause: Duration,
    /// Sum of all pauses.
    pub total_pause: Duration,
    /// Goroutine stacks the last cycle scanned.
    pub stacks_scanned: usize,
    /// Pauses by length: bucket `i` counts pauses of `2^i ..< 2^(i+1)` nanoseconds (the last
    /// bucket also counts everything longer).
    pub pause_histogram: [u64; 32],
}

impl GcStats {
    /// How many of the last pauses [`GcStats::pauses`] holds.
    pub const RECENT_PAUSES: usize = 256;

    /// The `p`-th percentile pause (0 to 100) of the recent pauses ([`GcStats::pauses`]); zero
    /// if none. For the whole run, see [`GcStats::pause_histogram`] and [`Gc::pauses_since`].
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// gc.collect();
    /// gc.collect();
    /// let s = gc.stats();
    /// assert!(s.pause_percentile(50.0) <= s.pause_percentile(100.0));
    /// ```
    pub fn pause_percentile(&self, p: f64) -> Duration {
        if self.pauses.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.pauses.clone();
        v.sort();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// Times and counts of one cycle, for the trace and the statistics.
pub(crate) struct Timeline {
    pub(crate) t0: Instant,
    pub(crate) heap_before: usize,
    pub(crate) heap_after: usize,
    pub(crate) sweep_term: Duration,
    pub(crate) quiesce: Duration,
    pub(crate) stopping: Duration,
    pub(crate) mark: Duration,
    /// Pauses before the final one (termination stops that found work and let go), each
    /// from its request to the start of its restart.
    pub(crate) term_pause: Duration,
    /// Stops in the cycle.
    pub(crate) stops: usize,
    /// In the final stop: flushing the barrier buffers (and any last drain); flushing the
    /// allocation caches.
    pub(crate) stop_flush: Duration,
    pub(crate) stop_caches: Duration,
    pub(crate) worker_cpu: Duration,
    pub(crate) assist_cpu: Duration,
    pub(crate) roots: usize,
    pub(crate) stacks: usize,
    pub(crate) shades: usize,
    /// Full barrier buffers that mutators flushed themselves while the cycle marked.
    pub(crate) self_flushes: usize,
    /// Bytes allocated black while the cycle marked (0 for a stop-the-world marking).
    pub(crate) black: usize,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            t0: Instant::now(),
            heap_before: 0,
            heap_after: 0,
            sweep_term: Duration::ZERO,
            quiesce: Duration::ZERO,
            stopping: Duration::ZERO,
            mark: Duration::ZERO,
            term_pause: Duration::ZERO,
            stops: 0,
            stop_flush: Duration::ZERO,
            stop_caches: Duration::ZERO,
            worker_cpu: Duration::ZERO,
            assist_cpu: Duration::ZERO,
            roots: 0,
            black: 0,
            stacks: 0,
            shades: 0,
            self_flushes: 0,
        }
    }
}

#[derive(Default)]
struct CycleStats {
    live_bytes: usize,
    goal_bytes: usize,
    pauses: std::collections::VecDeque<Duration>,
    /// Pauses ever recorded (`pauses` holds the last `MAX_PAUSES` of them).
    count: u64,
    max: Duration,
    total_pause: Duration,
    hist: [u64; 32],
}

const MAX_PAUSES: usize = 100_000;

impl Gc {
    /// A builder with the defaults.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder()
    ///     .gc_percent(50)            // collect when the heap is 1.5 times the live heap
    ///     .memory_limit(256 << 20)   // a soft limit the pacer stays under
    ///     .hard_limit(1 << 30)       // past this, allocation fails with an error
    ///     .build(&rt)
    ///     .unwrap();
    /// assert_eq!(gc.config().gc_percent, 50);
    /// ```
    pub fn builder() -> GcBuilder {
        GcBuilder::default()
    }

    /// A collector with the defaults (and `SAFEPOINT_DEBUG`) for `rt`.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::new().unwrap();
    /// let gc = safepoint_gc::Gc::new(&rt).unwrap();
    /// assert_eq!(gc.cycles(), 0);
    /// ```
    pub fn new(rt: &Runtime) -> Result<Gc, GcError> {
        GcBuilder::default().build(rt)
    }

    /// The heap's types: register descriptors here.
    ///
    /// ```
    /// use safepoint_gc::{Gc, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let t = gc.types().register(TypeDesc::RefArray { name: "list".into() }).unwrap();
    /// assert_eq!(gc.types().lookup("list"), Some(t));
    /// ```
    pub fn types(&self) -> &TypeRegistry {
        &self.inner.types
    }

    /// The phase now.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// use safepoint_gc::Phase;
    /// let gc = Gc::new(&rt).unwrap();
    /// assert_eq!(gc.phase(), Phase::Off); // no cycle yet
    /// ```
    pub fn phase(&self) -> Phase {
        // Relaxed: a snapshot for diagnostics and tests.
        Phase::from_u8(self.inner.phase.load(Ordering::Relaxed))
    }

    /// Completed cycles.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// gc.collect();
    /// assert!(gc.cycles() >= 1);
    /// ```
    pub fn cycles(&self) -> u64 {
        // Relaxed: a counter.
        self.inner.cycles.load(Ordering::Relaxed)
    }

    /// The settings in force (builder plus `SAFEPOINT_DEBUG`).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::builder().ignore_env().build(&rt).unwrap();
    /// assert_eq!(gc.config().gc_percent, 100); // the default, as GOGC's
    /// ```
    pub fn config(&self) -> &GcConfig {
        &self.inner.config
    }

    /// Counters and pause times.
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = safepoint_gc::Gc::new(&rt).unwrap();
    /// gc.collect();
    /// let s = gc.stats();
    /// assert!(s.cycles >= 1);
    /// assert_eq!(s.pauses.len() as u64, s.cycles);
    /// ```
    pub fn stats(&self) -> GcStats {
        // Without preemption, as in `stats_snapshot`.
        let _np = safepoint_sched::no_preempt();
        let s = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        GcStats {
            cycles: self.cycles(),
            live_bytes: s.live_bytes,
            goal_bytes: s.goal_bytes,
            heap: crate::np(|| self.inner.heap.stats()),
            pauses: s
                .pauses
                .range(s.pauses.len().saturating_sub(GcStats::RECENT_PAUSES)..)
                .copied()
                .collect(),
            pause_count: s.count,
            max_pause: s.max,
            total_pause: s.total_pause,
            pause_histogram: s.hist,
            // Relaxed: a counter written before the stop that ended the last cycle.
            stacks_scanned: self.inner.conc.last_stacks.load(Ordering::Relaxed),
        }
    }

    /// The pauses numbered `first` (counting from 0, in the order of [`GcStats::pause_count`])
    /// onwards, oldest first, as far as they are kept (the last 100,000): a benchmark reads
    /// `pause_count` before a workload and this after it.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let before = gc.stats().pause_count;
    /// gc.collect();
    /// gc.collect();
    /// assert!(gc.pauses_since(before).len() >= 2); // one pause per cycle
    /// ```
    pub fn pauses_since(&self, first: u64) -> Vec<Duration> {
        // Without preemption, as in `stats_snapshot`.
        let _np = safepoint_sched::no_preempt();
        let s = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        let kept_from = s.count - s.pauses.len() as u64;
        let skip = first.saturating_sub(kept_from).min(s.pauses.len() as u64) as usize;
        s.pauses.range(skip..).copied().collect()
    }

    /// Runs a full cycle now and waits for it (and for its sweep) to finish; then gives the OS
    /// the pages that have stayed free since the previous scavenge.
    ///
    /// From a thread outside the runtime, a goroutine of another runtime, or inside a
    /// blocking call (where the goroutine has no P to run a cycle on), the cycle runs on the
    /// collector's driver goroutine and the caller waits for it.
    ///
    /// # Panics
    /// Inside a `no_preempt` section; off the collector's runtime, if that runtime has shut
    /// down or shuts down before the cycle is done (nothing is left to run it).
    ///
    /// ```
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = safepoint_gc::Gc::new(&rt).unwrap();
    /// gc.collect(); // from a thread outside the runtime: the driver runs the cycle
    /// let g = gc.clone();
    /// rt.block_on(move || g.collect()); // or from a goroutine
    /// assert!(gc.cycles() >= 2);
    /// ```
    pub fn collect(&self) {
        // Inside a blocking call the goroutine is as a thread outside the runtime: its P is
        // handed off and its managed stack frozen.
        let in_blocking = safepoint_sched::goroutine_id()
            .and_then(|id| safepoint_sched::pinned(id, |pin| pin.p().is_none()))
            .unwrap_or(false);
        if in_blocking || !self.inner.rt.is_current() {
            assert!(
                !self.inner.rt.is_shut_down(),
                "Gc::collect: the collector's runtime has shut down"
            );
            assert!(
                !safepoint_sched::in_no_preempt(),
                "Gc::collect: cannot wait for a collection inside a no_preempt section"
            );
            let (tx, rx) = std::sync::mpsc::channel();
            crate::np(|| self.inner.lock_requests().push(tx));
            // A full channel means the driver is already woken, and it looks at the requests
            // after every wake-up.
            let _ = self.inner.driver.try_send(());
            // The driver answers once the cycle, its sweep and the scavenge are done. The
            // wait blocks the thread (on another runtime's goroutine, in a blocking call, so
            // that runtime neither waits for it nor calls it deadlocked).
            let wait = || {
                loop {
                    match rx.recv_timeout(Duration::from_millis(10)) {
                        Ok(()) => return true,
                        // Looks every 10 ms whether the runtime is still there to answer.
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                            if !self.inner.rt.is_shut_down() => {}
                        Err(_) => return false,
                    }
                }
            };
            let answered = if in_blocking { wait() } else { safepoint_sched::blocking(wait) };
            assert!(
                answered,
                "Gc::collect: the collector's runtime shut down during the collection"
            );
            return;
        }
        assert!(
            !safepoint_sched::in_no_preempt(),
            "Gc::collect: cannot collect inside a no_preempt section"
        );
        // Urgent throughout, as the cycle's driver is: back from the scavenge's blocking call
        // it would otherwise wait in the global queue behind every busy P's time slices.
        let was = safepoint_sched::set_urgent(true);
        self.inner.collect_here();
        safepoint_sched::set_urgent(was);
    }

    /// Counts of weak handles and cleanups.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// assert_eq!(gc.weak_stats().handles, 0);
    /// ```
    pub fn weak_stats(&self) -> crate::WeakStats {
        self.inner.heap.specials().stats()
    }

    /// The handle for reporting memory outside the heap that this heap's objects own, so
    /// that the pacer counts it (see [`External`](crate::External)).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let ext = gc.external();
    /// ext.add(1000);
    /// assert_eq!(gc.external().bytes(), 1000); // every handle shares the counts
    /// # ext.sub(1000);
    /// ```
    pub fn external(&self) -> crate::External {
        crate::External::new(self.inner.external.clone())
    }

    /// Whether two handles name the same collector.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let other = Gc::new(&rt).unwrap();
    /// assert!(gc.same(&gc.clone()));
    /// assert!(!gc.same(&other));
    /// ```
    pub fn same(&self, other: &Gc) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Inner {
    /// [`Gc::collect`]'s work, on a goroutine of the runtime: a full cycle, the rest of its
    /// sweep, and a scavenge.
    pub(crate) fn collect_here(&self) {
        self.cycle(None);
        self.finish_sweep();
        self.scavenge();
    }

    /// The collections asked for from outside the runtime (take it without preemption).
    fn lock_requests(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::mpsc::Sender<()>>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one collection for every request from outside the runtime made so far, if any,
    /// and answers them (on the driver, after each wake-up).
    pub(crate) fn serve_requests(&self) {
        let waiting = crate::np(|| std::mem::take(&mut *self.lock_requests()));
        if waiting.is_empty() {
            return;
        }
        self.collect_here();
        for tx in waiting {
            // The asker may have given up (its thread unwound): nobody to tell.
            let _ = tx.send(());
        }
    }

    /// Starts a cycle if the heap has reached the trigger, unless the caller cannot (inside a
    /// `no_preempt` section: the next allocation tries again).
    pub(crate) fn maybe_collect(&self) {
        // Relaxed: a hint; the cycle re-checks under its lock.
        if self.allocated_bytes() < self.trigger.load(Ordering::Relaxed)
            || safepoint_sched::in_no_preempt()
        {
            return;
        }
        if self.config.stop_the_world {
            self.cycle(Some(self.cycles.load(Ordering::Relaxed)));
        } else if matches!(self.phase_now(), Phase::Off | Phase::Sweep) {
            // The driver runs the cycle; a full channel means it is already asked.
            let _ = self.driver.try_send(());
        }
    }

    /// What an allocation that took its slow path (a new bitmap word or span) owes, paid by
    /// the allocating goroutine at a safepoint of its own, outside any pinned section: start a
    /// cycle if the heap reached its trigger, wait while marking is far behind
    /// ([`throttle`](Self::throttle)), and answer any pending preemption request (a stop, a
    /// ragged barrier, a stack scan, the end of its time slice).
    ///
    /// The poll is what makes the trigger hold for a goroutine that does nothing but allocate.
    /// Waking the cycle's driver readies an urgent goroutine, and with no P idle that ends
    /// one running goroutine's time slice (this one's, with one P); without a safepoint here
    /// that request would wait for a poll or a push the allocator may never make, and the
    /// driver, the cycle's stack scans and barriers, and every other goroutine of its P with
    /// it. A refill comes at least once per 64 allocations, so the allocator answers within
    /// that many. Inside a `no_preempt` section nothing here happens (the poll keeps the
    /// request for the section's end; the next slow allocation tries the trigger again).
    pub(crate) fn alloc_safepoint(&self) {
        self.maybe_collect();
        self.throttle();
        safepoint_sched::poll();
    }

    /// Whether the heap is past its trigger.
    pub(crate) fn over_trigger(&self) -> bool {
        // Relaxed: see `maybe_collect`.
        self.allocated_bytes() >= self.trigger.load(Ordering::Relaxed)
    }

    /// What the trigger is measured in: the heap's total allocated bytes and the external
    /// bytes ever reported (see `external`), each counted from the start.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.heap.allocated_bytes().saturating_add(self.external.added())
    }

    /// The collector's mark threads (one per P; made on first use).
    pub(crate) fn mark_pool(&self) -> &rayon::ThreadPool {
        self.pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.rt.procs().max(1))
                .thread_name(|i| format!("safepoint-mark-{i}"))
                .build()
                .expect("mark worker threads")
        })
    }

    /// For the metrics: the last cycle's live bytes and goal, the pause histogram (buckets of
    /// `GcStats::pause_histogram`) and the pauses' sum.
    pub(crate) fn collector_figures(&self) -> (usize, usize, [u64; 32], Duration) {
        // Without preemption, as in `stats_snapshot`.
        crate::np(|| {
            let s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            (s.live_bytes, s.goal_bytes, s.hist, s.total_pause)
        })
    }

    /// The last cycle's live bytes and goal.
    pub(crate) fn stats_snapshot(&self) -> (usize, usize) {
        // Without preemption: the cycle's driver takes this lock with the world stopped, so a
        // goroutine held (by a stop, or asynchronously) while holding it would deadlock the
        // stop. (Allocation's throttle reads it from every goroutine.)
        crate::np(|| {
            let s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            (s.live_bytes, s.goal_bytes.max(self.config.min_heap))
        })
    }

    pub(crate) fn phase_now(&self) -> Phase {
        // Relaxed: see `set_phase`.
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        // Relaxed: the phase is published to other goroutines by the barrier or stop that
        // follows each change.
        self.phase.store(p as u8, Ordering::Relaxed);
        if self.rt.trace_on() {
            self.trace_phase(p);
        }
        if self.rt.schedcheck() {
            // Relaxed: read only by the watchdog, for a report.
            self.phase_clock.since.store(safepoint_arch::nanotime(), Ordering::Relaxed);
            self.phase_clock.phase.store(p as u8, Ordering::Relaxed);
        }
    }

    /// Sweeps whatever the last cycle left unswept and waits for sweepers still at work, and
    /// turns Sweep Off. (The pages that stayed free go back to the OS from the background
    /// sweeper and [`Gc::collect`], not here: a cycle starts with this, and must not wait for
    /// the OS.)
    pub(crate) fn finish_sweep(&self) {
        while crate::np(|| self.heap.sweep_one()).is_some() {}
        // Others finish the spans they claimed inside no_preempt sections, on other Ms, in
        // microseconds: wait for them without giving up this goroutine's place (a goroutine
        // yield would put it, the cycle's driver as often as not, behind every runnable
        // goroutine, each of which may run a whole time slice first), yielding only the
        // thread, in case the OS has descheduled theirs.
        let mut spins = 0u32;
        while !self.heap.sweep_done() {
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        self.sweep_off();
    }

    /// Gives the OS the pages that have stayed free since the previous scavenge (a cycle
    /// ago, at least), so memory the heap stopped needing is released within about two
    /// cycles.
    pub(crate) fn scavenge(&self) {
        // In a blocking call: releasing a large heap's pages can take the OS milliseconds,
        // which no stop or barrier should wait for (the scavenge holds the page-heap lock
        // only briefly, and a goroutine in a blocking call is never stopped or held while it
        // holds it).
        safepoint_sched::blocking(|| self.heap.scavenge());
    }

    /// The cycle's sweep is done: Sweep turns Off (a cycle that started meanwhile has set its
    /// own phase).
    fn sweep_off(&self) {
        // Without preemption: no stop (which starts a new sweep) between the look and the
        // store.
        crate::np(|| {
            if self.heap.sweep_done() {
                self.weak_read.sweep_ended();
            }
        });
        let off = self.phase.compare_exchange(
            Phase::Sweep as u8,
            Phase::Off as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if off.is_ok() && self.rt.trace_on() {
            self.trace_phase(Phase::Off);
        }
    }

    /// Execution trace: ends the span of the phase traced so far and starts `p`'s (none for
    /// Off). A phase's cycle is the one its Quiesce began. Without preemption: a stopper calls
    /// it with the world stopped, so no goroutine may be held with this lock.
    fn trace_phase(&self, p: Phase) {
        crate::np(|| {
            let mut open = self.trace_phase.lock().unwrap_or_else(|e| e.into_inner());
            let now = safepoint_arch::nanotime();
            let mut cycle = self.cycles.load(Ordering::Relaxed) + 1;
            if let Some((old, c, from)) = open.take() {
                if old == p {
                    // The same phase again (a termination stop that found work goes back to
                    // Mark): the span goes on.
                    *open = Some((old, c, from));
                    return;
                }
                self.rt.trace_span(safepoint_sched::TraceTrack::Gc, old.name(), from, now, c);
                cycle = c;
            }
            if p == Phase::Quiesce {
                // Relaxed: a counter, written by the cycle's driver, which is the caller.
                cycle = self.cycles.load(Ordering::Relaxed) + 1;
            }
            if p != Phase::Off {
                *open = Some((p, cycle, now));
            }
        })
    }

    /// One cycle. `seen`: for a triggered cycle, the cycle count when the trigger was seen
    /// (if a cycle completed since, this one is not needed); `None` forces a cycle.
    pub(crate) fn cycle(&self, seen: Option<u64>) {
        let _one = self.cycle_lock.lock();
        // The cycle's goroutine waits on workers, barriers and stops; each time it is woken it
        // must run at once, or marking stretches (and the heap with it, as what is allocated
        // meanwhile is black).
        let was = safepoint_sched::set_urgent(true);
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                safepoint_sched::set_urgent(self.0);
            }
        }
        let _u = Restore(was);
        if let Some(seen) = seen
            && (self.cycles.load(Ordering::Relaxed) != seen || !self.over_trigger())
        {
            return;
        }
        let mut tl = Timeline::new();
        // Sweep termination: the last cycle's mark bits must all be consumed first.
        self.finish_sweep();
        // Bytes in allocated objects (exact: caches included).
        tl.heap_before = crate::np(|| self.heap.stats()).live_bytes as usize;
        tl.sweep_term = tl.t0.elapsed();
        if self.config.stop_the_world {
            self.cycle_stw(tl);
        } else {
            self.cycle_concurrent(tl);
        }
    }

    /// A cycle whose marking runs inside the stop.
    fn cycle_stw(&self, mut tl: Timeline) {
        // Off -> Quiesce: a ragged barrier, not a stop: each P flushes its cache at its next
        // safepoint (idle and blocked Ps are done by us).
        self.set_phase(Phase::Quiesce);
        let t = Instant::now();
        let caches = &self.caches;
        safepoint_sched::for_each_p(&|p| {
            // SAFETY: the barrier runs this for P `p` while no goroutine of P `p` is inside an
            // allocation (see `PCache`).
            unsafe { caches[p].get().cache.flush() }
        });
        tl.quiesce = t.elapsed();

        // Quiesce -> Mark, inside the stop.
        let t = Instant::now();
        let stop = safepoint_sched::stop_the_world("gc");
        let t_stop = Instant::now();
        tl.stopping = t_stop - t;
        self.set_phase(Phase::Mark);
        for c in self.caches.iter() {
            // SAFETY: the world is stopped: no goroutine is inside an allocation.
            unsafe { c.get().cache.flush() };
        }
        let (marked, roots, nroots) = self.mark(&stop);
        tl.mark = t_stop.elapsed();
        tl.roots = nroots;
        self.set_phase(Phase::Stw);
        self.terminate(stop, t_stop, marked, roots, tl);
    }

    /// Mark termination with the world stopped (`stop`, taken at `t_stop`): verify, end the
    /// marking, pace the next cycle, restart the world, wake the sweeper.
    pub(crate) fn terminate(
        &self,
        stop: WorldStop,
        t_stop: Instant,
        marked_bytes: usize,
        roots: Vec<(usize, String)>,
        mut tl: Timeline,
    ) {
        let ctx = MarkCtx { heap: &self.heap, types: &self.types, rule: self.config.tag_rule };
        let checked = self.config.checkmark.then(|| checkmark(&ctx, &roots));
        // Lock-free: every cache has just been flushed, so the counters are exact.
        tl.heap_after = self.heap.live_bytes_estimate() as usize;
        // Weak cells of unmarked objects are doomed from here to their sweep.
        self.weak_read.marking_ended();
        self.heap.specials().drop_pending_ephemerons();
        self.heap.finish_mark();
        let black = tl.black;
        let held = marked_bytes.saturating_add(black);
        let goal = heap_goal(&self.config, marked_bytes, black);
        // External bytes reported since count toward the trigger as allocation does (see
        // `external`); the goal is the heap's alone.
        let allocated = self.allocated_bytes();
        // The next cycle starts once enough is allocated to reach the trigger point between
        // what this cycle left (`held`) and the goal: at the goal itself when marking is
        // instant (stop-the-world), earlier when it runs alongside the program, by the
        // fraction the pacer has learnt.
        let frac = if self.config.stop_the_world { 1.0 } else { self.conc.trigger_frac() };
        let room = ((goal - held.min(goal)) as f64 * frac) as u64;
        self.trigger.store(allocated.saturating_add(room), Ordering::Relaxed);
        let n = self.cycles.fetch_add(1, Ordering::Relaxed) + 1;
        self.set_phase(Phase::Sweep);
        let t_end = Instant::now();
        drop(stop);
        let restart = t_end.elapsed();
        // A pause runs from the stop request to the start of the restart, as Go counts its
        // mark termination's (its `now` is read before `startTheWorldWithSema`): the restart
        // hands every P back at once, and what follows is the OS running the woken threads.
        // That is normally a few microseconds; rarely (about one cycle in a thousand on a
        // 2-core machine) the woken thread takes the stopper's own core and the stopper
        // resumes a millisecond later, while the program already runs. gctrace shows it as
        // `restart`.
        let in_stop = t_end - t_stop;
        let pause = tl.stopping + in_stop + tl.term_pause;
        {
            // Without preemption, as in `stats_snapshot`.
            let _np = safepoint_sched::no_preempt();
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.live_bytes = marked_bytes;
            s.goal_bytes = goal;
            if s.pauses.len() == MAX_PAUSES {
                s.pauses.pop_front();
            }
            s.pauses.push_back(pause);
            s.count += 1;
            s.max = s.max.max(pause);
            s.total_pause += pause;
            let ns = pause.as_nanos().max(1) as u64;
            s.hist[(63 - ns.leading_zeros() as usize).min(31)] += 1;
        }
        // Sweep: wake the background sweeper (a full channel means it is already awake).
        let _ = self.sweeper.try_send(());
        if self.config.trace {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let mode = if self.config.stop_the_world {
                format!(
                    "{:.3}+{:.3}+{:.3}+{:.3} ms clock (sweep term + quiesce + stopping + mark \
                     and termination in the stop), {} roots",
                    ms(tl.sweep_term),
                    ms(tl.quiesce),
                    ms(tl.stopping),
                    ms(pause),
                    tl.roots
                )
            } else {
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                format!(
                    "{:.3}+{:.3}+{:.3}+{:.3} ms clock (sweep term + quiesce + concurrent mark + \
                     termination stop), stop {:.0}+{:.0}+{:.0}+{:.0}+{:.0} us (earlier stops + \
                     stopping + flush + caches + end; {} stops), restart {:.0} us, {:.3}+{:.3} \
                     ms cpu (workers + assists), {} stacks, {} barrier shades ({} full buffers \
                     flushed by mutators)",
                    ms(tl.sweep_term),
                    ms(tl.quiesce),
                    ms(tl.mark),
                    ms(pause),
                    us(tl.term_pause),
                    us(tl.stopping),
                    us(tl.stop_flush),
                    us(tl.stop_caches),
                    us(in_stop - tl.stop_flush - tl.stop_caches),
                    tl.stops,
                    us(restart),
                    ms(tl.worker_cpu),
                    ms(tl.assist_cpu),
                    tl.stacks,
                    tl.shades,
                    tl.self_flushes
                )
            };
            safepoint_sched::message(format_args!(
                "gc {n} @{:.3}s: {mode}, {}->{}->{} MB heap (before, after, live), {}{} MB goal, \
                 {} P{}{}",
                (tl.t0 - self.start).as_secs_f64(),
                tl.heap_before >> 20,
                tl.heap_after >> 20,
                marked_bytes >> 20,
                match self.external.live() {
                    0 => String::new(),
                    ext => format!("{} MB external, ", ext >> 20),
                },
                goal >> 20,
                self.rt.procs(),
                if self.config.stop_the_world { " (stop-the-world)" } else { "" },
                checked.map(|c| format!(", checkmark ok ({c} objects)")).unwrap_or_default(),
            ));
            if let Some(line) = self.heap.specials().trace_line(n) {
                safepoint_sched::message(format_args!("{line}"));
            }
        }
    }

    /// Marks from the roots with the world stopped; returns the bytes marked, the roots (kept
    /// only for checkmark) and the number of roots.
    pub(crate) fn mark(&self, stop: &WorldStop) -> (usize, Vec<(usize, String)>, usize) {
        let ctx = MarkCtx { heap: &self.heap, types: &self.types, rule: self.config.tag_rule };
        let keep = self.config.checkmark;
        let mut roots: Vec<(usize, String)> = Vec::new();
        let injector = Injector::new();
        let mut nroots = 0;
        let mut marked = 0usize;
        let mut push = |addr: usize, what: &dyn Fn() -> String| {
            nroots += 1;
            if keep {
                roots.push((addr, what()));
            }
            if let Some(size) = shade_bit(&self.heap, addr) {
                marked += size;
                injector.push(addr | GREY);
            }
        };
        let rule = self.config.tag_rule;
        self.globals.for_each(|i, w| {
            if rule.is_ref(w) {
                push(w & !rule.mask, &|| format!("global {i}"));
            }
        });
        self.heap.specials().for_each_cell(|c| push(c, &|| format!("weak cell {c:#x}")));
        for g in stop.goroutines() {
            let stale = stop.async_stopped(g);
            let mut v = RootVisitor::new(self, g.id(), stale, &mut push);
            stop.walk_managed_stack(g, &self.reg, &mut v);
        }
        let workers = self.rt.procs().max(1);
        let idle = AtomicUsize::new(0);
        let total = AtomicUsize::new(marked);
        let run = |balance: bool| {
            let mut t = Tracer::new(ctx, &injector, Vec::with_capacity(1024), balance);
            t.drain_to_termination(&idle, workers);
            // Relaxed: a sum, read after every marker has returned.
            total.fetch_add(t.marked_bytes, Ordering::Relaxed);
        };
        let specials = self.heap.specials();
        self.weak_marking_starts();
        loop {
            // SeqCst: as in `drain_to_termination`; every marker has returned.
            idle.store(0, Ordering::SeqCst);
            if workers == 1 {
                run(false);
            } else {
                self.mark_pool().broadcast(|_| run(true));
            }
            // Ephemerons whose keys the marking reached: their values are marked in turn
            // (see the `weak` module, "Ephemerons"), until a round finds none.
            let mut t = Tracer::new(ctx, &injector, Vec::new(), false);
            let shaded = specials.ephemeron_round(&self.heap, rule, &mut t);
            // Relaxed: as above.
            total.fetch_add(t.marked_bytes, Ordering::Relaxed);
            drop(t);
            if shaded == 0 {
                break;
            }
        }
        (total.load(Ordering::Relaxed), roots, nroots)
    }
}

/// Shades what a goroutine's managed stack references.
///
/// For a goroutine stopped asynchronously (`stale`), the innermost function frame's maps may
/// be stale, so its slots are scanned conservatively: a word counts only if it is the start
/// of an allocated object (plain, or with the tag rule's reference tag). Every other frame is
/// scanned precisely.
///
/// Every goroutine of the runtime is scanned, and with several heaps on one runtime their
/// slots hold references of every heap: a reference in another heap's arenas is skipped. One
/// in this heap's arenas must name an allocated object, and one in no heap's (garbage, which
/// only a write outside the API makes) is a fatal error of the marker, as before.
pub(crate) struct RootVisitor<'a, F: FnMut(usize, &dyn Fn() -> String)> {
    rule: TagRule,
    /// The word a dead slot of a sealed frame is cleared to ([`GcConfig::dead_slot_word`]).
    dead: usize,
    handle: bool,
    goid: u64,
    frame: usize,
    heap: &'a Heap,
    stale: bool,
    push: &'a mut F,
}

impl<'a, F: FnMut(usize, &dyn Fn() -> String)> RootVisitor<'a, F> {
    /// The visitor of goroutine `goid`'s stack for the collector `gc` (its tag rule, its
    /// dead-slot word, its heap); `stale` if the goroutine was stopped asynchronously.
    pub(crate) fn new(gc: &'a Inner, goid: u64, stale: bool, push: &'a mut F) -> Self {
        RootVisitor {
            rule: gc.config.tag_rule,
            dead: gc.config.dead_slot_word,
            handle: false,
            goid,
            frame: 0,
            heap: &gc.heap,
            stale,
            push,
        }
    }

    /// Whether the reference `r` found in a slot is this heap's business: it is in one of
    /// this heap's arenas (then it must name an allocated object), or in no heap's at all
    /// (garbage: shading it reports it). Another heap's reference is skipped.
    #[inline]
    fn is_for_us(&self, r: usize) -> bool {
        self.heap.owns(r) || !crate::pageheap::any_heap_owns(r)
    }
}

impl<F: FnMut(usize, &dyn Fn() -> String)> Visitor for RootVisitor<'_, F> {
    fn frame(&mut self, frame: &Frame) {
        // A sealed function frame (a section's) holds tagged values in every slot, as a
        // handle frame does, whatever its map calls them: only the section API writes it.
        self.handle = frame.func.is_none() || frame.sealed;
        self.frame = frame.depth;
    }
    fn reference(&mut self, slot: usize, word: &safepoint_stackmap::SlotWord) {
        // Relaxed: the world is stopped.
        let w = word.load(Ordering::Relaxed);
        // A handle frame's slots hold tagged values (the mutator's encoding); a function's
        // reference slots hold plain addresses.
        let r = if self.handle {
            self.rule.is_ref(w).then_some(w & !self.rule.mask)
        } else {
            (w != 0).then_some(w)
        };
        if let Some(r) = r.filter(|&r| self.is_for_us(r)) {
            let (g, f) = (self.goid, self.frame);
            (self.push)(r, &|| format!("goroutine {g} frame {f} slot {slot}"));
        }
    }
    fn tagged(&mut self, slot: usize, word: &safepoint_stackmap::SlotWord) {
        // Relaxed: the world is stopped.
        let w = word.load(Ordering::Relaxed);
        let r = w & !self.rule.mask;
        if self.rule.is_ref(w) && self.is_for_us(r) {
            let (g, f) = (self.goid, self.frame);
            (self.push)(r, &|| format!("goroutine {g} frame {f} slot {slot}"));
        }
    }
    fn stale_top(&self) -> bool {
        self.stale
    }
    fn dead(&mut self, _slot: usize, word: &safepoint_stackmap::SlotWord) {
        // A slot of a sealed function frame that its current map calls dead: not a root, so
        // its object may be freed by this cycle; cleared, so that if the map was wrong the
        // section reads null (or the embedder's word for a cleared slot) there, never the
        // freed object. (The goroutine is stopped; its resumption orders this store before
        // its next read.)
        if self.dead == 0 {
            word.clear();
        } else {
            // SAFETY: `GcBuilder::build` refused a dead-slot word that the tag rule reads as
            // a reference: this one is an immediate, so no walk takes it for an object.
            unsafe { word.clear_to(self.dead) };
        }
    }
    fn conservative(&mut self, slot: usize, word: &safepoint_stackmap::SlotWord) {
        // Relaxed: the goroutine is held.
        let w = word.load(Ordering::Relaxed);
        let untagged = w & !self.rule.mask;
        let r = if self.heap.is_ref(w) {
            Some(w)
        } else if self.rule.is_ref(w) && self.heap.is_ref(untagged) {
            Some(untagged)
        } else {
            None
        };
        if let Some(r) = r {
            let (g, f) = (self.goid, self.frame);
            (self.push)(r, &|| {
                format!("goroutine {g} frame {f} slot {slot}{}", crate::mark::CONSERVATIVE_ROOT)
            });
        }
    }
}

/// The background sweeper: after each cycle, sweeps span by span, yielding between spans so
/// it takes only idle time from the program.
fn background_sweeper(gc: Weak<Inner>, wake: Arc<Chan<()>>) {
    while wake.recv().is_ok() {
        let Some(inner) = gc.upgrade() else { return };
        let mut n = 0u32;
        while crate::np(|| inner.heap.sweep_one()).is_some() {
            n += 1;
            // A stop or a ragged barrier waits for the sweeper one span at most (sweeping
            // runs in no_preempt sections, where even the preemption signal is declined).
            safepoint_sched::poll();
            if n.is_multiple_of(16) {
                safepoint_sched::yield_now();
            }
        }
        if inner.heap.sweep_done() {
            inner.sweep_off();
            inner.scavenge();
        }
    }
}

#[cfg(test)]
mod goal_tests {
    use super::{GcConfig, heap_goal};

    const MB: usize = 1 << 20;

    #[test]
    fn the_goal_is_gc_percent_past_the_traced_heap_with_black_bytes_carried_once() {
        let c = GcConfig::default();
        assert_eq!(heap_goal(&c, 100 * MB, 0), 200 * MB);
        assert_eq!(heap_goal(&c, 100 * MB, 50 * MB), 250 * MB);
        let c = GcConfig { gc_percent: 50, ..GcConfig::default() };
        assert_eq!(heap_goal(&c, 100 * MB, 10 * MB), 160 * MB);
        // Rounding keeps the remainder of the division by 100.
        let c = GcConfig { gc_percent: 150, min_heap: 0, ..GcConfig::default() };
        assert_eq!(heap_goal(&c, 1234, 0), 1234 + 1851);
    }

    #[test]
    fn the_goal_has_a_floor_and_a_soft_cap_that_leaves_room() {
        let c = GcConfig::default();
        assert_eq!(heap_goal(&c, 0, 0), 4 * MB, "min_heap");
        let c = GcConfig { memory_limit: 150 * MB, ..GcConfig::default() };
        assert_eq!(heap_goal(&c, 100 * MB, 0), 150 * MB, "capped at the limit");
        // Past the limit, the goal still leaves a sixteenth of the live heap to allocate.
        assert_eq!(heap_goal(&c, 160 * MB, 20 * MB), 190 * MB);
    }

    #[test]
    fn huge_inputs_saturate_instead_of_overflowing() {
        let c = GcConfig { gc_percent: u32::MAX - 1, ..GcConfig::default() };
        assert_eq!(heap_goal(&c, usize::MAX / 2, usize::MAX / 2), usize::MAX);
        let c = GcConfig::default();
        assert_eq!(heap_goal(&c, usize::MAX, usize::MAX), usize::MAX);
    }
}

#[cfg(test)]
mod phase_clock_tests {
    use super::*;

    /// The watchdog's check reports a cycle stuck in a marking phase for 10 s, never one that
    /// is off or sweeping.
    #[test]
    fn a_marking_phase_unchanged_for_ten_seconds_is_reported() {
        let c = PhaseClock { phase: AtomicU8::new(Phase::Mark as u8), since: AtomicU64::new(5) };
        assert_eq!(c.stuck(5 + PHASE_STUCK_NS - 1), None);
        let why = c.stuck(5 + PHASE_STUCK_NS).unwrap();
        assert_eq!(why, "the collector's phase has stayed Mark for 10 s");
        for p in [Phase::Off, Phase::Sweep] {
            c.phase.store(p as u8, Ordering::Relaxed);
            assert_eq!(c.stuck(u64::MAX), None);
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use std::error::Error as _;

    /// The errors a `GcError` wraps are its source; the others have none.
    #[test]
    fn wrapped_errors_are_the_source() {
        let alloc = AllocError::OutOfMemory { requested: 64, limit: 32 };
        let e = GcError::from(alloc.clone());
        let src = e.source().expect("an allocation error is the source");
        assert_eq!(src.to_string(), alloc.to_string());
        let e = GcError::Type(TypeError::EmptyName);
        assert_eq!(e.source().unwrap().to_string(), TypeError::EmptyName.to_string());
        assert!(GcError::StaleSlot.source().is_none());
        assert!(GcError::Closed.source().is_none());
    }
}
