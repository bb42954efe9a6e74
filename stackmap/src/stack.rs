//! The managed stack: its frames, the owner's operations, growth and shrinking.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::guard::{StackGuard, hooks};
use crate::registry::{FuncId, MAX_FRAME_SLOTS};

/// Words of a frame header, which sits above the frame's slots: `[function | slot count]`,
/// `[safepoint | safepoint count]`.
pub(crate) const HEADER: usize = 2;
/// Set in the function field of a handle frame; the other bits are 0.
pub(crate) const HANDLE_BIT: u32 = 1 << 31;
/// With `HANDLE_BIT`: a sealed handle frame (see [`ManagedStack::push_sealed_handles`]).
pub(crate) const SEALED_BIT: u32 = 1;
/// Without `HANDLE_BIT`: a sealed function frame (see [`ManagedStack::push_sealed`]); the
/// function's index is the field's other bits (indices are below [`MAX_FUNCS`]).
///
/// [`MAX_FUNCS`]: crate::MAX_FUNCS
pub(crate) const SEALED_FUNC_BIT: u32 = 1 << 30;

/// Whether the function field `func` is a sealed frame's, of either kind.
#[inline(always)]
pub(crate) fn is_sealed(func: u32) -> bool {
    func == HANDLE_BIT | SEALED_BIT || func & (HANDLE_BIT | SEALED_FUNC_BIT) == SEALED_FUNC_BIT
}
/// The first buffer, in words (1 KiB), unless the limit is smaller.
pub(crate) const MIN_WORDS: usize = 128;

/// Header word 0 (at `end - 2`): function field in the low half, slot count in the high half
/// (the link to the caller: its frame ends `slots + 2` words below this frame's end).
#[inline(always)]
pub(crate) fn word0(func: u32, slots: u32) -> usize {
    func as usize | (slots as usize) << 32
}
/// Header word 1 (at `end - 1`): current safepoint in the low half, safepoint count in the
/// high half.
#[inline(always)]
pub(crate) fn word1(sp: u32, count: u32) -> usize {
    sp as usize | (count as usize) << 32
}

/// Whether slot `i` of a frame of `info` is a reference or a tagged slot at any of its
/// safepoints (which kind, if so).
fn may_hold_reference(info: &crate::FuncInfo, i: usize) -> Option<crate::BitmapKind> {
    const W: usize = usize::BITS as usize;
    // The maps' words themselves (bit `i` of a map is bit `i % W` of word `i / W`), not a
    // bitvec copy: bitvec's bit references and its drop after a raw view are retags that
    // Miri's Stacked Borrows rejects.
    let bit = |words: &[usize]| words.get(i / W).is_some_and(|w| w >> (i % W) & 1 == 1);
    for map in info.maps.iter() {
        if bit(&map.refs) {
            return Some(crate::BitmapKind::Refs);
        }
    }
    for map in info.maps.iter() {
        if bit(&map.tagged) {
            return Some(crate::BitmapKind::Tagged);
        }
    }
    None
}

/// Formats a byte count the way the limit panic prints it: in the largest binary unit that
/// divides it exactly (`1 GiB`, `512 KiB`), else in bytes (`1000 bytes`).
///
/// ```
/// use safepoint_stackmap::format_bytes;
/// assert_eq!(format_bytes(1 << 30), "1 GiB");
/// assert_eq!(format_bytes(512 << 10), "512 KiB");
/// assert_eq!(format_bytes(1000), "1000 bytes");
/// ```
pub fn format_bytes(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (u, name) in UNITS {
        if n >= u && n.is_multiple_of(u) {
            return format!("{} {name}", n / u);
        }
    }
    format!("{n} bytes")
}

/// How a managed stack is made. Defaults: a 1 GiB limit, validation in debug builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackConfig {
    limit_bytes: usize,
    validate: bool,
}

impl StackConfig {
    /// The default limit: 1 GiB.
    pub const DEFAULT_LIMIT: usize = 1 << 30;
    /// The largest limit: frame offsets are kept in 32 bits, so just under 32 GiB.
    pub const MAX_LIMIT: usize = (u32::MAX as usize) * 8;

    /// The defaults.
    ///
    /// ```
    /// use safepoint_stackmap::StackConfig;
    /// const C: StackConfig = StackConfig::new(); // usable in constants
    /// assert_eq!(C.limit(), StackConfig::DEFAULT_LIMIT);
    /// ```
    pub const fn new() -> Self {
        StackConfig { limit_bytes: Self::DEFAULT_LIMIT, validate: cfg!(debug_assertions) }
    }

    /// The most bytes the stack's buffer may take; a push past it panics the goroutine with
    /// "goroutine N: managed stack exceeds LIMIT" (LIMIT as [`format_bytes`] prints it).
    /// Rounded down to whole words.
    ///
    /// # Panics
    /// If `bytes` is over [`StackConfig::MAX_LIMIT`].
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let big = reg.register(FuncDesc::new("big", 1000, 0, 1)).unwrap(); // 8 KiB frames
    /// let ms = ManagedStack::new(7, StackConfig::default().limit_bytes(32 << 10));
    /// ms.push(big);
    /// let deep = std::panic::AssertUnwindSafe(|| (0..10).for_each(|_| ms.push(big)));
    /// let r = std::panic::catch_unwind(deep);
    /// let msg = r.unwrap_err().downcast::<String>().unwrap();
    /// assert_eq!(*msg, "goroutine 7: managed stack exceeds 32 KiB");
    /// ```
    pub fn limit_bytes(mut self, bytes: usize) -> Self {
        assert!(
            bytes <= Self::MAX_LIMIT,
            "managed stack limit of {bytes} bytes is over the maximum of {} bytes",
            Self::MAX_LIMIT
        );
        self.limit_bytes = bytes;
        self
    }

    /// Whether every walk first checks every frame (function id, safepoint, links and sizes
    /// in bounds) before yielding any slot. The walker's cheap checks, enough to keep it in
    /// bounds, run either way. Default: on in debug builds.
    ///
    /// ```
    /// use safepoint_stackmap::StackConfig;
    /// assert!(StackConfig::default().validate(true).validates());
    /// assert!(!StackConfig::default().validate(false).validates());
    /// ```
    pub fn validate(mut self, on: bool) -> Self {
        self.validate = on;
        self
    }

    /// The limit in bytes.
    ///
    /// ```
    /// use safepoint_stackmap::StackConfig;
    /// assert_eq!(StackConfig::default().limit_bytes(1 << 20).limit(), 1 << 20);
    /// ```
    pub fn limit(&self) -> usize {
        self.limit_bytes
    }

    /// Whether validation is on.
    ///
    /// ```
    /// use safepoint_stackmap::StackConfig;
    /// // On in debug builds, off in release ones, unless set.
    /// assert_eq!(StackConfig::default().validates(), cfg!(debug_assertions));
    /// ```
    pub fn validates(&self) -> bool {
        self.validate
    }
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig::new()
    }
}

/// One goroutine's managed stack: a contiguous buffer of words holding frames.
///
/// See the crate documentation for the frame layout and the protocol with the scheduler.
///
/// # Who may call what
/// * The **owner** (the goroutine, or whoever holds it exclusively: the scheduler between two
///   lives of a pooled G) calls the safe `&self` methods. They are `&self` so that no `&mut`
///   borrow is alive while the preempt hook runs and another thread scans the stack; the type
///   is `!Sync`, so safe code cannot reach it from two threads.
/// * **Another thread** (a collector, a traceback dumper) calls only the `unsafe …_stopped`
///   methods, through a pointer, while the owner is stopped at a safepoint and the caller holds
///   the right to scan it (the G's `SCAN` bit). Everything those methods read is an atomic
///   word, so the only thing the contract has to rule out is the owner moving the buffer.
///
/// ```compile_fail
/// // The owner API is for one thread at a time: safe code cannot share a stack.
/// fn shared<T: Sync>() {}
/// shared::<safepoint_stackmap::ManagedStack>();
/// ```
///
/// Slots are `AtomicUsize` accessed with `Relaxed` ordering (`docs/ARCHITECTURE.md`, "Memory
/// ordering": words a marker may read while a goroutine runs are atomics). The ordering
/// between the owner's last writes and a scanner's reads comes from the scheduler's hand-off
/// (the status CAS), not from here.
pub struct ManagedStack {
    guard: StackGuard,
    /// Index one past the top frame's header (0: no frame). The only position the stack
    /// keeps: every frame's header sits at the end of the frame and gives its size.
    pub(crate) top: AtomicUsize,
    /// Words of the top frame (slots + header; 0 with no frame): the owner's copy of what the
    /// top header says, so that a pop does not wait for the header it just wrote and a slot
    /// access needs no header read. Only the owner reads it.
    top_size: Cell<usize>,
    /// The buffer of `guard.limit_words()` words (dangling while that is 0).
    pub(crate) buf: AtomicPtr<AtomicUsize>,
    id: AtomicU64,
    /// The limit in words.
    limit_words: usize,
    limit_bytes: usize,
    pub(crate) validate: bool,
    /// `!Sync`: the owner API is for one thread at a time.
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for ManagedStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedStack")
            .field("id", &self.id())
            .field("used_words", &self.used_words())
            .field("capacity_words", &self.capacity_words())
            .field("poisoned", &self.guard.is_poisoned())
            .finish()
    }
}

fn dangling() -> *mut AtomicUsize {
    NonNull::<AtomicUsize>::dangling().as_ptr()
}

/// A zeroed buffer of `words` words.
fn alloc_words(words: usize) -> *mut AtomicUsize {
    let layout = Layout::array::<AtomicUsize>(words).expect("managed stack size fits a layout");
    // SAFETY: `words > 0` (callers never ask for an empty buffer), so the layout is not
    // zero-sized. All-zero bytes are a valid `AtomicUsize`.
    let p = unsafe { alloc::alloc_zeroed(layout) }.cast::<AtomicUsize>();
    if p.is_null() {
        alloc::handle_alloc_error(layout);
    }
    p
}

/// Frees a buffer made by `alloc_words(words)`.
///
/// # Safety
/// `p` came from `alloc_words(words)` and nothing uses it any more.
unsafe fn free_words(p: *mut AtomicUsize, words: usize) {
    let layout = Layout::array::<AtomicUsize>(words).expect("allocated with this layout");
    // SAFETY: the caller passes a live allocation made with this very layout.
    unsafe { alloc::dealloc(p.cast(), layout) }
}

impl ManagedStack {
    /// An empty stack for goroutine `id` (used in messages). Allocates nothing: the buffer
    /// is made by the first push.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    ///
    /// let reg = Registry::new();
    /// // `g(x)`: 3 slots, 1 argument, 1 safepoint at which slots 0 and 2 hold references.
    /// let g = reg.register(FuncDesc::new("g", 3, 1, 1).refs_at(0, &[0, 2])).unwrap();
    /// let ms = ManagedStack::new(7, StackConfig::default());
    /// assert!(ms.is_empty());
    /// // SAFETY: no collector ever scans this stack (it belongs to no runtime), so the words
    /// // in its reference slots are never taken for objects.
    /// unsafe {
    ///     ms.push_with_args(g, &[0x1000]);
    ///     ms.set(2, 0x2000);
    /// }
    /// assert_eq!((ms.get(0), ms.get(1), ms.get(2)), (0x1000, 0, 0x2000));
    /// ms.pop();
    /// assert!(ms.is_empty());
    /// ```
    pub fn new(id: u64, config: StackConfig) -> Self {
        ManagedStack {
            guard: StackGuard::new(),
            top: AtomicUsize::new(0),
            top_size: Cell::new(0),
            buf: AtomicPtr::new(dangling()),
            id: AtomicU64::new(id),
            limit_words: config.limit_bytes / 8,
            limit_bytes: config.limit_bytes,
            validate: config.validate,
            _not_sync: PhantomData,
        }
    }

    /// The goroutine id the stack reports in messages.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// assert_eq!(ManagedStack::new(42, StackConfig::default()).id(), 42);
    /// ```
    pub fn id(&self) -> u64 {
        self.id.load(Relaxed)
    }

    /// Gives the stack to another goroutine (a pooled G reused).
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.set_id(2); // reused by goroutine 2
    /// assert_eq!(ms.id(), 2);
    /// ```
    pub fn set_id(&self, id: u64) {
        self.id.store(id, Relaxed);
    }

    /// The guard word shared with the scheduler. Its address is stable while `self` is not
    /// moved; poisoning it from any thread asks the owner to stop at its next push or poll.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.guard().poison(); // from any thread: "stop at your next push or poll"
    /// assert!(ms.guard().is_poisoned());
    /// ms.guard().unpoison();
    /// ```
    #[inline]
    pub fn guard(&self) -> &StackGuard {
        &self.guard
    }

    /// The limit in bytes.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default().limit_bytes(1 << 20));
    /// assert_eq!(ms.limit_bytes(), 1 << 20);
    /// ```
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Words in use (headers and slots of every frame).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert_eq!(ms.used_words(), 0);
    /// ms.push(f);
    /// assert_eq!(ms.used_words(), 3 + 2); // three slots and the two header words
    /// ```
    pub fn used_words(&self) -> usize {
        self.top.load(Relaxed)
    }

    /// Words in the buffer (0 before the first push or after [`release`](Self::release)).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert_eq!(ms.capacity_words(), 0); // no buffer before the first push
    /// ms.push(f);
    /// assert!(ms.capacity_words() >= ms.used_words());
    /// ```
    pub fn capacity_words(&self) -> usize {
        self.guard.limit_words()
    }

    /// Whether no frame is on the stack.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert!(ms.is_empty());
    /// ms.push(f);
    /// assert!(!ms.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.top.load(Relaxed) == 0
    }

    /// Number of frames (follows every link: O(depth)).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.push_handles(2);
    /// assert_eq!(ms.depth(), 2);
    /// ```
    pub fn depth(&self) -> usize {
        let buf = self.buf.load(Relaxed);
        let mut end = self.top.load(Relaxed);
        let mut n = 0;
        while end >= HEADER {
            n += 1;
            // SAFETY: `end` is the end of a frame, at or below `top <= capacity`: its header
            // is the two words below. Pushes write sizes that chain down to exactly 0.
            let slots = unsafe { &*buf.add(end - HEADER) }.load(Relaxed) >> 32;
            end = end.saturating_sub(HEADER + slots);
        }
        n
    }

    /// Slot count of the top frame.
    ///
    /// # Panics
    /// If the stack is empty.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// assert_eq!(ms.frame_slots(), 3);
    /// ms.push_handles(5);
    /// assert_eq!(ms.frame_slots(), 5);
    /// ```
    #[inline]
    pub fn frame_slots(&self) -> usize {
        let (w0, _) = self.top_header("frame_slots");
        w0 >> 32
    }

    /// The top frame's function (`None` for a handle frame) and current safepoint.
    ///
    /// # Panics
    /// If the stack is empty.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// assert_eq!(ms.top_frame_info(), (Some(f.index()), 1));
    /// ms.push_handles(1);
    /// assert_eq!(ms.top_frame_info().0, None); // a handle frame
    /// ```
    pub fn top_frame_info(&self) -> (Option<u32>, u32) {
        let (w0, w1) = self.top_header("top_frame_info");
        let func = w0 as u32;
        ((func & HANDLE_BIT == 0).then_some(func & !SEALED_FUNC_BIT), w1 as u32)
    }

    /// The top frame's end (`top`) and its header words.
    #[inline(always)]
    fn top_header(&self, what: &str) -> (usize, usize) {
        let top = self.top.load(Relaxed);
        if top == 0 {
            self.fail_empty(what);
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `2 <= top <= capacity`: the top frame's header is the two words below `top`.
        unsafe { ((*buf.add(top - 2)).load(Relaxed), (*buf.add(top - 1)).load(Relaxed)) }
    }

    /// Pushes a frame of function `f`, its slots zeroed, at safepoint 0.
    ///
    /// This is a preemption point: if the guard is poisoned, the preempt hook runs first
    /// (with the stack as it was before the push). It is also the growth check: with no room,
    /// the buffer is moved to one twice as large (or as large as the frame needs).
    ///
    /// # Panics
    /// "goroutine N: managed stack exceeds LIMIT" if the frame does not fit in the limit; the
    /// stack is left as it was.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// // One frame, its slots zeroed, at safepoint 0.
    /// assert_eq!((ms.depth(), ms.get(0), ms.top_frame_info().1), (1, 0, 0));
    /// ms.pop();
    /// ```
    #[inline]
    pub fn push(&self, f: FuncId) {
        self.push_raw(f.index, f.slots as usize, f.safepoints);
    }

    /// Pushes a frame of function `f` (as [`push`](Self::push)) only if that needs no slow
    /// path: the buffer has room and no preemption request is pending. Returns whether it
    /// pushed. This never runs the preempt hook and never moves the buffer, so an
    /// interpreter can call it where it must not reach a safepoint (inside a pinned section),
    /// and take the slow [`push`](Self::push) elsewhere when it answers false.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert!(!ms.try_push(f)); // no buffer yet: that is the slow path
    /// ms.push(f);
    /// assert!(ms.try_push(f)); // room, and no request pending
    /// ms.guard().poison();
    /// assert!(!ms.try_push(f)); // a request pending: the caller takes the slow push
    /// assert_eq!(ms.depth(), 2);
    /// ```
    #[inline]
    pub fn try_push(&self, f: FuncId) -> bool {
        let top = self.top.load(Relaxed);
        if !self.guard.admits(top + HEADER + f.slots as usize) {
            return false;
        }
        self.write_frame(top, f.index, f.slots as usize, f.safepoints);
        true
    }

    /// Slot 0 of the top frame, as a pointer, for an interpreter that reads and writes its
    /// registers without a bounds check per access. Null for an empty stack.
    ///
    /// The pointer is valid for the top frame's [`frame_slots`](Self::frame_slots) words
    /// until the buffer can move: the next [`push`](Self::push), [`poll`](Self::poll) or
    /// anything else that can reach the preempt hook (a collector may shrink the stack while
    /// the hook holds the goroutine). [`try_push`](Self::try_push) and [`pop`](Self::pop) do
    /// not move it. Dereferencing it is the caller's `unsafe` business, with those rules; the
    /// slots are atomics (use `Relaxed` loads and stores, as [`get`](Self::get) does), and
    /// what is written there is scanned as the frame's function says.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// use std::sync::atomic::Ordering;
    /// assert!(ms.top_slots_ptr().is_null());
    /// ms.push(f);
    /// let p = ms.top_slots_ptr();
    /// // SAFETY: slot 2 of the top frame (3 slots); nothing can move the buffer until the next
    /// // push or poll. A plain number in a slot the maps never call a reference.
    /// unsafe { (*p.add(2)).store(77, Ordering::Relaxed) };
    /// assert_eq!(ms.get(2), 77);
    /// ```
    #[inline]
    pub fn top_slots_ptr(&self) -> *const AtomicUsize {
        let top = self.top.load(Relaxed);
        if top == 0 {
            return std::ptr::null();
        }
        // In bounds: `top - top_size` is the top frame's slot 0, at or above word 0.
        self.buf.load(Relaxed).wrapping_add(top - self.top_size.get())
    }

    /// Pushes a frame of function `f` whose first `args.len()` slots are `args` and the rest
    /// zero. As [`push`](Self::push); the values in `args` must stay reachable through the
    /// caller's frame until this returns (the push is a safepoint).
    /// [`push_with_args_checked`](Self::push_with_args_checked) is the safe form.
    ///
    /// # Safety
    /// As for [`set`](Self::set), for each argument and its slot: a collector scanning this
    /// stack takes what a reference or tagged slot holds for what the slot says, and one that
    /// finds a word that is not (a reference to no live object of its heap) ends the process.
    ///
    /// # Panics
    /// As [`push`](Self::push), and if `args` has more values than the frame has slots.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: no collector scans this stack, so any word may be stored.
    /// unsafe { ms.push_with_args(f, &[0, 7]) };
    /// assert_eq!((ms.get(0), ms.get(1), ms.get(2)), (0, 7, 0)); // the rest zero
    /// ```
    #[inline]
    pub unsafe fn push_with_args(&self, f: FuncId, args: &[usize]) {
        if args.len() > f.slots as usize {
            self.fail(format_args!(
                "{} arguments pushed into a frame of {} slots",
                args.len(),
                f.slots
            ));
        }
        self.push(f);
        let base = self.top.load(Relaxed) - HEADER - f.slots as usize;
        let buf = self.buf.load(Relaxed);
        for (i, &a) in args.iter().enumerate() {
            // SAFETY: the frame just pushed has `f.slots >= args.len()` slots below `top`.
            unsafe { &*buf.add(base + i) }.store(a, Relaxed);
        }
    }

    /// Pushes a frame of function `f` whose first `args.len()` slots are `args` (as
    /// [`push_with_args`](Self::push_with_args)), checking first that no argument could be
    /// taken for a reference: each is 0 (null), or goes into a slot that is neither a
    /// reference nor a tagged slot at any safepoint of `f` (see
    /// [`set_checked`](Self::set_checked)). References are for an embedding layer that knows
    /// the heap (the collector's `Mutator`), or for the `unsafe` form.
    ///
    /// # Panics
    /// With a description, before pushing anything: if `f` is not a function of `reg`, or an
    /// argument is refused; otherwise as [`push_with_args`](Self::push_with_args).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    /// let reg = Registry::new();
    /// // Three slots: 0 a reference at safepoint 1, 1 and 2 plain words.
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push_with_args_checked(&reg, f, &[0, 7, 8]); // null into the reference slot
    /// assert_eq!((ms.get(0), ms.get(1), ms.get(2)), (0, 7, 8));
    /// ms.pop();
    /// // A word that is not null, for a slot a safepoint scans: refused, nothing pushed.
    /// let r = catch_unwind(AssertUnwindSafe(|| ms.push_with_args_checked(&reg, f, &[0x1000])));
    /// assert!(r.is_err());
    /// assert_eq!(ms.depth(), 0);
    /// ```
    pub fn push_with_args_checked(&self, reg: &crate::Registry, f: FuncId, args: &[usize]) {
        let Some(info) = reg.get(f) else {
            self.fail(format_args!("push_with_args_checked: function {f:?} is not in the registry"))
        };
        for (i, &a) in args.iter().enumerate() {
            if a != 0
                && let Some(kind) = may_hold_reference(info, i)
            {
                self.fail(format_args!(
                    "argument {i} of {} is {a:#x}, but slot {i} is a {kind} slot at a safepoint \
                     of the function: only null may be stored there by safe code (a collector \
                     would take the word for a reference)",
                    info.name()
                ));
            }
        }
        // SAFETY: every non-null argument goes into a slot no safepoint of `f` scans.
        unsafe { self.push_with_args(f, args) }
    }

    /// Pushes a handle frame of `n` slots, every one a reference, for native Rust code to keep
    /// managed values in. As [`push`](Self::push), otherwise.
    ///
    /// # Panics
    /// As [`push`](Self::push), and if `n` is over [`MAX_FRAME_SLOTS`].
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push_handles(2);
    /// assert_eq!((ms.depth(), ms.frame_slots()), (1, 2)); // every slot a reference
    /// ms.pop();
    /// ```
    #[inline]
    pub fn push_handles(&self, n: usize) {
        if n > MAX_FRAME_SLOTS {
            self.fail(format_args!(
                "handle frame of {n} slots is larger than the maximum of {MAX_FRAME_SLOTS}"
            ));
        }
        self.push_raw(HANDLE_BIT, n, 1);
    }

    /// Pushes a *sealed* handle frame of `n` slots and returns the position of its slot 0
    /// (for [`get_at`](Self::get_at)/[`set_at`](Self::set_at)). The collector scans it as any
    /// handle frame, but safe code cannot write its slots: [`set`](Self::set) refuses a
    /// sealed top frame, and [`set_at`](Self::set_at) is `unsafe`. This is how an embedding
    /// layer (the collector's `Mutator`) keeps the promise that its slots hold only values it
    /// put there. [`is_sealed_frame_at`](Self::is_sealed_frame_at) checks that the frame is
    /// still on the stack.
    ///
    /// # Safety
    /// The caller writes the frame's slots only with values the collector may scan as the
    /// frame's kind says (null, immediates by the heap's tag rule, addresses of live objects),
    /// and pops it with [`pop`](Self::pop) when done.
    ///
    /// # Panics
    /// As [`push_handles`](Self::push_handles).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: this code alone writes the frame's slots, with null only, and pops it.
    /// let base = unsafe { ms.push_sealed_handles(2) };
    /// assert!(ms.is_sealed_frame_at(base, 2));
    /// assert_eq!(ms.get_at(base), 0);
    /// ms.pop();
    /// assert!(!ms.is_sealed_frame_at(base, 2));
    /// ```
    #[inline]
    pub unsafe fn push_sealed_handles(&self, n: usize) -> usize {
        if n > MAX_FRAME_SLOTS {
            self.fail(format_args!(
                "handle frame of {n} slots is larger than the maximum of {MAX_FRAME_SLOTS}"
            ));
        }
        let base = self.top.load(Relaxed);
        self.push_raw(HANDLE_BIT | SEALED_BIT, n, 1);
        // `base` was read before the push, which may have moved the buffer but not positions.
        base
    }

    /// Pushes a *sealed* frame of function `f`, its slots zeroed, at safepoint 0 (as
    /// [`push`](Self::push), a preemption point): its slots are scanned by `f`'s maps at the
    /// frame's current safepoint, as a function frame's, but safe code cannot write them
    /// ([`set`](Self::set) and [`set_checked`](Self::set_checked) refuse a sealed top frame,
    /// [`set_at`](Self::set_at) is `unsafe`), and a walk reports the slots the current
    /// safepoint calls dead to [`Visitor::dead`](crate::Visitor::dead), where a collector
    /// clears them. This is how an embedding layer (the collector's sections) lets a frame
    /// carry the embedder's precise maps and still never hand out a word a wrong map let the
    /// collector free: such a slot reads null after the scan that did not keep its object.
    /// [`sealed_top`](Self::sealed_top) finds it.
    ///
    /// # Safety
    /// As [`push_sealed_handles`](Self::push_sealed_handles).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).tagged_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// let base = ms.used_words();
    /// // SAFETY: this code alone writes the frame's slots, with null only, and pops it.
    /// unsafe { ms.push_sealed(f) };
    /// assert_eq!(ms.sealed_top(), Some((base, 3)));
    /// assert_eq!(ms.top_frame_info(), (Some(f.index()), 0));
    /// ms.pop();
    /// ```
    #[inline]
    pub unsafe fn push_sealed(&self, f: FuncId) {
        self.push_raw(f.index | SEALED_FUNC_BIT, f.slots as usize, f.safepoints);
    }

    /// Pushes a sealed frame of function `f` (as [`push_sealed`](Self::push_sealed)) only if
    /// that needs no slow path, as [`try_push`](Self::try_push): returns whether it pushed.
    ///
    /// # Safety
    /// As [`push_sealed_handles`](Self::push_sealed_handles).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: only null is written to the frames, and they are popped.
    /// assert!(!unsafe { ms.try_push_sealed(f) }); // no buffer yet: the slow path
    /// unsafe { ms.push_sealed(f) };
    /// assert!(unsafe { ms.try_push_sealed(f) });
    /// assert_eq!(ms.depth(), 2);
    /// ```
    #[inline]
    pub unsafe fn try_push_sealed(&self, f: FuncId) -> bool {
        let top = self.top.load(Relaxed);
        if !self.guard.admits(top + HEADER + f.slots as usize) {
            return false;
        }
        self.write_frame(top, f.index | SEALED_FUNC_BIT, f.slots as usize, f.safepoints);
        true
    }

    /// Pushes a sealed handle frame of `n` slots (as
    /// [`push_sealed_handles`](Self::push_sealed_handles)) only if that needs no slow path:
    /// the buffer has room and no preemption request is pending. Returns the position of its
    /// slot 0, or `None` (nothing pushed). Like [`try_push`](Self::try_push) it never runs the
    /// preempt hook and never moves the buffer, so it may be called where no safepoint may be
    /// reached (a pinned section).
    ///
    /// # Safety
    /// As [`push_sealed_handles`](Self::push_sealed_handles).
    ///
    /// # Panics
    /// As [`push_handles`](Self::push_handles), if `n` is over [`MAX_FRAME_SLOTS`].
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f); // a buffer, with room
    /// // SAFETY: as for `push_sealed_handles`: only null is ever written here, and it is popped.
    /// let base = unsafe { ms.try_push_sealed_handles(1) }.unwrap();
    /// assert!(ms.is_sealed_frame_at(base, 1));
    /// ms.pop();
    /// ```
    #[inline]
    pub unsafe fn try_push_sealed_handles(&self, n: usize) -> Option<usize> {
        if n > MAX_FRAME_SLOTS {
            self.fail(format_args!(
                "handle frame of {n} slots is larger than the maximum of {MAX_FRAME_SLOTS}"
            ));
        }
        let base = self.top.load(Relaxed);
        if !self.guard.admits(base + HEADER + n) {
            return None;
        }
        self.write_frame(base, HANDLE_BIT | SEALED_BIT, n, 1);
        Some(base)
    }

    /// The position of slot 0 (for [`get_at`](Self::get_at)) and the slot count of the top
    /// frame, if it is a sealed frame, of handles (see
    /// [`push_sealed_handles`](Self::push_sealed_handles)) or of a function
    /// ([`push_sealed`](Self::push_sealed)); `None` for an empty stack or any other top
    /// frame. A few loads: for an embedding layer that checks, at every slot access,
    /// that the top frame is one of its own.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert_eq!(ms.sealed_top(), None); // empty
    /// ms.push(f);
    /// assert_eq!(ms.sealed_top(), None); // a function frame
    /// // SAFETY: only null is written to the frame, and it is popped.
    /// let base = unsafe { ms.push_sealed_handles(2) };
    /// assert_eq!(ms.sealed_top(), Some((base, 2)));
    /// ms.pop();
    /// ```
    #[inline]
    pub fn sealed_top(&self) -> Option<(usize, usize)> {
        self.top_if_sealed().map(|(_, top, size)| (top - size, size - HEADER))
    }

    /// The buffer, the top and the top frame's size (header included), if the top frame is
    /// sealed: the one look at the top that [`sealed_top`](Self::sealed_top),
    /// [`sealed_top_slots`](Self::sealed_top_slots) and [`pop_sealed`](Self::pop_sealed)
    /// share.
    #[inline(always)]
    fn top_if_sealed(&self) -> Option<(*mut AtomicUsize, usize, usize)> {
        let top = self.top.load(Relaxed);
        if top == 0 {
            return None;
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `2 <= top <= capacity`: the top frame's header is the two words below `top`.
        let w0 = unsafe { &*buf.add(top - HEADER) }.load(Relaxed);
        is_sealed(w0 as u32).then(|| (buf, top, self.top_size.get()))
    }

    /// Slot 0 of the top frame, as a pointer, and the frame's slot count, if the top frame is
    /// sealed (as [`sealed_top`](Self::sealed_top)); `None` for an empty stack or any other
    /// top frame. One check for an embedding layer that reads or writes slots of its own
    /// frame: the pointer is valid for that many words, under the rules of
    /// [`top_slots_ptr`](Self::top_slots_ptr) (until anything that can move the buffer).
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// use std::sync::atomic::Ordering;
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert!(ms.sealed_top_slots().is_none()); // empty
    /// ms.push_handles(1);
    /// assert!(ms.sealed_top_slots().is_none()); // not sealed
    /// // SAFETY: only null is written to the frame, and it is popped.
    /// let base = unsafe { ms.push_sealed_handles(2) };
    /// let (p, n) = ms.sealed_top_slots().unwrap();
    /// assert_eq!(n, 2);
    /// // SAFETY: slot 1 of the sealed top frame; nothing moved the buffer since.
    /// assert_eq!(unsafe { (*p.add(1)).load(Ordering::Relaxed) }, ms.get_at(base + 1));
    /// ms.pop();
    /// ```
    #[inline(always)]
    pub fn sealed_top_slots(&self) -> Option<(*const AtomicUsize, usize)> {
        let (buf, top, size) = self.top_if_sealed()?;
        // In bounds: the top frame's slot 0 is `top - size`, at or above word 0.
        Some((buf.wrapping_add(top - size).cast_const(), size - HEADER))
    }

    /// Whether a sealed handle frame of `n` slots whose slot 0 is at `base` is on the stack.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// let base = ms.used_words();
    /// // SAFETY: only null is written to the frame, and it is popped.
    /// assert_eq!(unsafe { ms.push_sealed_handles(3) }, base);
    /// assert!(ms.is_sealed_frame_at(base, 3));
    /// assert!(!ms.is_sealed_frame_at(base, 2)); // another size
    /// ```
    #[inline]
    pub fn is_sealed_frame_at(&self, base: usize, n: usize) -> bool {
        let hdr = base + n;
        if hdr + HEADER > self.top.load(Relaxed) {
            return false;
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `hdr < top <= capacity`.
        unsafe { &*buf.add(hdr) }.load(Relaxed) == word0(HANDLE_BIT | SEALED_BIT, n as u32)
    }

    #[inline(always)]
    fn push_raw(&self, func: u32, slots: usize, safepoints: u32) {
        let top = self.top.load(Relaxed);
        let new_top = top + HEADER + slots;
        if !self.guard.admits(new_top) {
            self.morestack(new_top);
        }
        self.write_frame(top, func, slots, safepoints);
    }

    /// Writes a frame of `slots` zeroed slots at `top` (the stack's top) and makes it the top
    /// frame. The caller made sure it fits: the guard admitted `top + HEADER + slots`, or
    /// `morestack` made room (the `try_` pushes check the guard themselves and come here
    /// without a second look at it).
    #[inline(always)]
    fn write_frame(&self, top: usize, func: u32, slots: usize, safepoints: u32) {
        // Loaded after `morestack`, which may have moved the buffer (growth, or a collector
        // shrinking it while the preempt hook held us).
        let buf = self.buf.load(Relaxed);
        let hdr = top + slots;
        // SAFETY: `top + HEADER + slots <= capacity` (the caller's guard check, or
        // `morestack`), and only the owner, which we are, writes above `top`.
        unsafe {
            // Four independent stores a round, then at most a pair and a single: most frames
            // are a few slots, and a one-store loop costs a loop branch per slot. Counted in
            // slots left (not positions), so that a push of a constant size (a section
            // frame's) compiles to its stores alone.
            let mut i = top;
            let mut left = slots;
            while left >= 4 {
                (*buf.add(i)).store(0, Relaxed);
                (*buf.add(i + 1)).store(0, Relaxed);
                (*buf.add(i + 2)).store(0, Relaxed);
                (*buf.add(i + 3)).store(0, Relaxed);
                i += 4;
                left -= 4;
            }
            if left >= 2 {
                (*buf.add(i)).store(0, Relaxed);
                (*buf.add(i + 1)).store(0, Relaxed);
                i += 2;
                left -= 2;
            }
            if left == 1 {
                (*buf.add(i)).store(0, Relaxed);
            }
            (*buf.add(hdr)).store(word0(func, slots as u32), Relaxed);
            (*buf.add(hdr + 1)).store(word1(0, safepoints), Relaxed);
        }
        // The frame's words before the new top, in program order: a goroutine stopped by a
        // signal between two instructions must never show a top past an unwritten header.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
        self.top.store(hdr + HEADER, Relaxed);
        self.top_size.set(HEADER + slots);
    }

    /// Pops the top frame.
    ///
    /// # Panics
    /// If the stack is empty.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.push(f);
    /// ms.pop();
    /// assert_eq!(ms.depth(), 1);
    /// ```
    #[inline]
    pub fn pop(&self) {
        let top = self.top.load(Relaxed);
        if top == 0 {
            self.fail_empty("pop");
        }
        self.pop_from(top);
    }

    /// Pops the top frame if it is a sealed frame (as [`sealed_top`](Self::sealed_top) would
    /// find it), and says whether it did: an embedding layer's return from one of its own
    /// frames, with one look at the top. `false` (nothing popped) for an empty stack or any
    /// other top frame.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert!(!ms.pop_sealed()); // empty
    /// ms.push_handles(1);
    /// // SAFETY: only null is written to the frame.
    /// unsafe { ms.push_sealed_handles(2) };
    /// assert!(ms.pop_sealed());
    /// assert!(!ms.pop_sealed()); // a plain handle frame is left alone
    /// assert_eq!(ms.depth(), 1);
    /// ```
    #[inline]
    pub fn pop_sealed(&self) -> bool {
        let Some((_, top, _)) = self.top_if_sealed() else { return false };
        self.pop_from(top);
        true
    }

    /// Pops the top frame, which ends at `top` (the stack's top, not 0).
    #[inline(always)]
    fn pop_from(&self, top: usize) {
        let new_top = top - self.top_size.get();
        self.top.store(new_top, Relaxed);
        // The caller's size, from its header: written long ago, so reading it is off the
        // path from one push to the next.
        let size = if new_top == 0 {
            0
        } else {
            let buf = self.buf.load(Relaxed);
            // SAFETY: `2 <= new_top <= capacity`: the caller's header is the two words below.
            HEADER + (unsafe { &*buf.add(new_top - 2) }.load(Relaxed) >> 32)
        };
        self.top_size.set(size);
    }

    /// Records that the top frame now stands at safepoint `sp`: from now on a walk yields the
    /// slots that `sp`'s bitmaps name. Call it before anything that can reach a safepoint (a
    /// call, that is a push; a poll; an allocation).
    ///
    /// # Panics
    /// If the stack is empty or `sp` is not below the function's safepoint count.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1); // slot 0 is a live reference from here on
    /// assert_eq!(ms.top_frame_info().1, 1);
    /// ```
    #[inline]
    pub fn set_safepoint(&self, sp: u32) {
        let top = self.top.load(Relaxed);
        if top == 0 {
            self.fail_empty("set_safepoint");
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `2 <= top <= capacity`: the top frame's header is the two words below.
        let w1 = unsafe { &*buf.add(top - 1) };
        let cur = w1.load(Relaxed);
        let count = (cur >> 32) as u32;
        if sp >= count {
            self.fail(format_args!(
                "safepoint {sp} out of range: the top frame has safepoints 0..{count}"
            ));
        }
        w1.store(word1(sp, count), Relaxed);
    }

    /// [`set_safepoint`](Self::set_safepoint) without its panic for a safepoint out of range:
    /// `Err(count)`, the top frame's safepoint count, and nothing changes.
    ///
    /// # Panics
    /// If the stack is empty.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// assert_eq!(ms.try_set_safepoint(1), Ok(()));
    /// assert_eq!(ms.try_set_safepoint(2), Err(2));
    /// assert_eq!(ms.top_frame_info().1, 1);
    /// ```
    #[inline]
    pub fn try_set_safepoint(&self, sp: u32) -> Result<(), u32> {
        let top = self.top.load(Relaxed);
        if top == 0 {
            self.fail_empty("try_set_safepoint");
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `2 <= top <= capacity`: the top frame's header is the two words below.
        let w1 = unsafe { &*buf.add(top - 1) };
        let count = (w1.load(Relaxed) >> 32) as u32;
        if sp >= count {
            return Err(count);
        }
        w1.store(word1(sp, count), Relaxed);
        Ok(())
    }

    /// Preemption check for loop back-edges: if the guard is poisoned, runs the preempt hook.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// for _ in 0..1000 {
    ///     ms.poll(); // a loop back-edge: one load and a branch unless a request is pending
    /// }
    /// ```
    #[inline]
    pub fn poll(&self) {
        if self.guard.poisoned_relaxed() {
            self.poll_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn poll_slow(&self) {
        if StackGuard::word_poisoned(self.guard.load_acquire()) {
            (hooks().preempt)();
        }
    }

    /// Slot `i` of the top frame.
    ///
    /// # Panics
    /// If the stack is empty or `i` is past the top frame.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// assert_eq!(ms.get(1), 0);
    /// ```
    #[inline]
    pub fn get(&self, i: usize) -> usize {
        self.slot(i).load(Relaxed)
    }

    /// Sets slot `i` of the top frame to `v`, for an interpreter that keeps the invariant
    /// below itself (its compiler's stack maps say what each slot holds). The safe form is
    /// [`set_checked`](Self::set_checked).
    ///
    /// # Safety
    /// While `v` is in the slot, at every safepoint the frame stands at where the slot is a
    /// reference slot (of a function's map, or any slot of a handle frame), `v` is null or a
    /// reference to a live object of the heap whose collector scans this stack, and where it
    /// is a tagged slot, `v` is that, or an immediate by that heap's tag rule. A collector
    /// that finds anything else there cannot tell garbage from a reference and ends the
    /// process (a fatal error). With no collector scanning the stack, any word may be stored.
    ///
    /// ```compile_fail
    /// let ms = safepoint_stackmap::ManagedStack::new(1, Default::default());
    /// ms.push_handles(1);
    /// ms.set(0, 0x1234_5670); // unsafe: safe code stores through `set_checked`
    /// ```
    ///
    /// # Panics
    /// If the stack is empty or `i` is past the top frame, or the top frame is sealed (see
    /// [`push_sealed_handles`](Self::push_sealed_handles), [`push_sealed`](Self::push_sealed)).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// // SAFETY: no collector scans this stack, so any word may be stored.
    /// unsafe { ms.set(1, 42) };
    /// assert_eq!(ms.get(1), 42);
    /// ```
    #[inline]
    pub unsafe fn set(&self, i: usize, v: usize) {
        let w = self.slot(i);
        let top = self.top.load(Relaxed);
        let buf = self.buf.load(Relaxed);
        // SAFETY: `slot` checked that the stack has a top frame, whose header is the two
        // words below `top <= capacity`.
        if is_sealed(unsafe { &*buf.add(top - HEADER) }.load(Relaxed) as u32) {
            self.fail(format_args!(
                "slot {i} of a sealed frame written directly (its owner, such as a Mutator \
                 scope or a section, writes it)"
            ));
        }
        w.store(v, Relaxed)
    }

    /// Sets slot `i` of the top frame to `v`, as [`set`](Self::set) does, if that cannot plant
    /// a word a collector would take for a reference: `v` is 0 (null), or the top frame is a
    /// function frame (of `reg`) whose maps make slot `i` neither a reference nor a tagged
    /// slot at any of its safepoints. A reference is stored by an embedding layer that knows
    /// the heap (the collector's `Mutator`), or with the `unsafe` form. Costs a look at every
    /// safepoint's maps: for code off the hot path.
    ///
    /// # Panics
    /// With a description, storing nothing: as [`set`](Self::set), and if `v` is refused, or
    /// the top frame's function is not in `reg`.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// use std::panic::{AssertUnwindSafe, catch_unwind};
    /// let reg = Registry::new();
    /// // Slot 0 is a reference at safepoint 1, slot 1 a tagged slot; slot 2 is a plain word.
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[1]));
    /// let f = f.unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_checked(&reg, 2, 42); // a plain word: any value
    /// ms.set_checked(&reg, 0, 0); // null is always accepted
    /// assert_eq!((ms.get(0), ms.get(2)), (0, 42));
    /// // A non-null word into a slot a safepoint scans is refused, and the slot keeps its value.
    /// for slot in [0, 1] {
    ///     let r = catch_unwind(AssertUnwindSafe(|| ms.set_checked(&reg, slot, 0x1000)));
    ///     assert!(r.is_err());
    ///     assert_eq!(ms.get(slot), 0);
    /// }
    /// ```
    pub fn set_checked(&self, reg: &crate::Registry, i: usize, v: usize) {
        // Bounds first (the same panics as `set`).
        let _ = self.slot(i);
        if v != 0 {
            let (func, _) = self.top_frame_info();
            let refused = match func {
                None => Some("handle frame's".to_string()),
                Some(index) => {
                    let Some(info) = reg.by_index(index) else {
                        self.fail(format_args!(
                            "set_checked: the top frame's function {index} is not in the registry"
                        ))
                    };
                    may_hold_reference(info, i).map(|k| format!("{k}"))
                }
            };
            if let Some(kind) = refused {
                self.fail(format_args!(
                    "slot {i} of the top frame set to {v:#x}, but it is a {kind} slot: only null \
                     may be stored there by safe code (a collector would take the word for a \
                     reference)"
                ));
            }
        }
        // SAFETY: `v` is null, or the slot is one no safepoint of the frame's function scans.
        unsafe { self.set(i, v) }
    }

    /// Word `pos` of the stack, counted from the bottom (word 0), for an owner that remembers
    /// where a frame it pushed begins: [`used_words`](Self::used_words) before a push is the
    /// position of the new frame's slot 0.
    ///
    /// # Panics
    /// If `pos` is at or above the top of the stack.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// let base = ms.used_words(); // the position of the next frame's slot 0
    /// ms.push(f);
    /// assert_eq!(ms.get_at(base), ms.get(0));
    /// ```
    #[inline]
    pub fn get_at(&self, pos: usize) -> usize {
        self.word_at(pos).load(Relaxed)
    }

    /// Sets word `pos` of the stack (see [`get_at`](Self::get_at)) to `v`.
    ///
    /// # Safety
    /// As for [`set`](Self::set), for the slot at `pos`; and if `pos` is a slot of a sealed
    /// handle frame, the caller is the frame's owner (see
    /// [`push_sealed_handles`](Self::push_sealed_handles)) and `v` a value it may hold.
    ///
    /// # Panics
    /// If `pos` is at or above the top of the stack.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// let base = ms.used_words(); // the position of the next frame's slot 0
    /// ms.push(f);
    /// // SAFETY: no collector scans this stack, so any word may be stored.
    /// unsafe { ms.set_at(base + 1, 9) };
    /// assert_eq!(ms.get(1), 9);
    /// ```
    #[inline]
    pub unsafe fn set_at(&self, pos: usize, v: usize) {
        self.word_at(pos).store(v, Relaxed)
    }

    #[inline(always)]
    fn word_at(&self, pos: usize) -> &AtomicUsize {
        let top = self.top.load(Relaxed);
        if pos >= top {
            self.fail(format_args!("word {pos} out of range: the stack has {top} words"));
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `pos < top <= capacity`. The reference is used at once by `get_at`/`set_at`,
        // before anything can move the buffer.
        unsafe { &*buf.add(pos) }
    }

    /// The word of slot `i` of the top frame, for the instant of one access (the buffer may
    /// move at the next push, so this never leaves the module).
    #[inline(always)]
    fn slot(&self, i: usize) -> &AtomicUsize {
        let top = self.top.load(Relaxed);
        if top == 0 {
            self.fail_empty("slot access");
        }
        let size = self.top_size.get();
        if i + HEADER >= size {
            let slots = size - HEADER;
            self.fail(format_args!("slot {i} out of range: the top frame has {slots} slots"));
        }
        let buf = self.buf.load(Relaxed);
        // SAFETY: `top - size + i < top - 2 <= capacity`, as `size <= top` is the top frame's
        // size. The reference is used at once by `get`/`set`, before anything can move the
        // buffer.
        unsafe { &*buf.add(top - size + i) }
    }

    /// Empties the stack for reuse (a new goroutine in a pooled G): no frames, no pending
    /// request. Keeps the buffer.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.guard().poison();
    /// ms.reset();
    /// assert!(ms.is_empty() && !ms.guard().is_poisoned());
    /// assert!(ms.capacity_words() > 0); // the buffer is kept
    /// ```
    pub fn reset(&self) {
        self.top.store(0, Relaxed);
        self.top_size.set(0);
        self.guard.unpoison();
    }

    /// Empties the stack as [`reset`](Self::reset) does and frees its buffer, so that an
    /// idle G costs no buffer. The next push allocates again.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.release();
    /// assert!(ms.is_empty());
    /// assert_eq!(ms.capacity_words(), 0);
    /// ```
    ///
    /// The buffer is freed between the [`Hooks::copy_begin`](crate::Hooks::copy_begin) and
    /// [`Hooks::copy_end`](crate::Hooks::copy_end) hooks, as growth moves it: a runtime's hook
    /// refuses where something may still read the buffer (a scheduler's, inside a blocking
    /// call or a pinned section). [`release_stopped`](Self::release_stopped) is the form for
    /// a stack whose owner is not running.
    pub fn release(&self) {
        if self.capacity_words() == 0 {
            self.reset();
            return;
        }
        let h = hooks();
        (h.copy_begin)();
        self.free_buffer();
        (h.copy_end)();
    }

    /// [`release`](Self::release) without the hooks: for whoever holds a stack whose owner is
    /// gone or stopped (a runtime recycling a dead goroutine's stack).
    ///
    /// # Safety
    /// Nothing reads or writes the stack meanwhile, and nothing holds a pointer into its
    /// buffer (its owner is not running, and no collector scans it).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// // SAFETY: no other code uses this stack.
    /// unsafe { ms.release_stopped() };
    /// assert_eq!(ms.capacity_words(), 0);
    /// ```
    pub unsafe fn release_stopped(&self) {
        self.free_buffer();
    }

    /// Empties the stack and frees its buffer.
    fn free_buffer(&self) {
        self.reset();
        let cap = self.capacity_words();
        if cap > 0 {
            let old = self.buf.swap(dangling(), Relaxed);
            self.guard.set_limit(0);
            // SAFETY: `old` is the buffer of `cap` words; the stack is empty and the owner
            // holds no reference into it (the API hands none out).
            unsafe { free_words(old, cap) };
        }
    }

    /// The slow path of a push that the guard refused: a preemption request, or no room.
    #[cold]
    #[inline(never)]
    fn morestack(&self, new_top: usize) {
        if StackGuard::word_poisoned(self.guard.load_acquire()) {
            (hooks().preempt)();
        }
        // The hook may have let a collector shrink the stack: look again.
        if new_top <= self.capacity_words() {
            return;
        }
        self.grow(new_top);
    }

    /// Moves the buffer to one with room for `new_top` words.
    fn grow(&self, new_top: usize) {
        if new_top > self.limit_words {
            self.fail(format_args!("managed stack exceeds {}", format_bytes(self.limit_bytes)));
        }
        let cap = self.capacity_words();
        let mut new_cap = (cap * 2).max(MIN_WORDS);
        while new_cap < new_top {
            new_cap *= 2;
        }
        let new_cap = new_cap.min(self.limit_words);
        let h = hooks();
        (h.copy_begin)();
        self.move_to(new_cap);
        (h.copy_end)();
    }

    /// Shrinks the buffer to half its size if less than a quarter of it is used (and it is
    /// larger than the first buffer). Returns whether it moved. For the owner itself; a
    /// collector uses [`shrink_stopped`](Self::shrink_stopped).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// let big = reg.register(FuncDesc::new("big", 5000, 0, 1)).unwrap();
    /// ms.push(f);
    /// ms.push(big);
    /// ms.pop();
    /// let before = ms.capacity_words();
    /// assert!(ms.shrink()); // under a quarter used
    /// assert!(ms.capacity_words() < before);
    /// ```
    ///
    /// The move runs between the [`Hooks::copy_begin`](crate::Hooks::copy_begin) and
    /// [`Hooks::copy_end`](crate::Hooks::copy_end) hooks, as growth does: a runtime's hook
    /// refuses where something may still read the buffer (a scheduler's, inside a blocking
    /// call or a pinned section).
    pub fn shrink(&self) -> bool {
        if !self.wants_shrink() {
            return false;
        }
        let h = hooks();
        (h.copy_begin)();
        self.move_to((self.capacity_words() / 2).max(MIN_WORDS));
        (h.copy_end)();
        true
    }

    /// Whether [`shrink`](Self::shrink) would move the buffer: it is larger than the first
    /// one and less than a quarter used.
    fn wants_shrink(&self) -> bool {
        let cap = self.capacity_words();
        cap > MIN_WORDS && self.top.load(Relaxed) < cap / 4
    }

    /// [`shrink`](Self::shrink), from the collector, during a scan.
    ///
    /// # Safety
    /// The owner is stopped at a safepoint (parked, or inside the preempt hook of a push or
    /// poll) and the caller holds the right to scan it, so nothing else touches the stack until
    /// this returns.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0])).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// let big = reg.register(FuncDesc::new("big", 5000, 0, 1)).unwrap();
    /// ms.push(f);
    /// ms.push(big);
    /// ms.pop();
    /// // SAFETY: the owner (this code) is not running any other stack operation meanwhile.
    /// assert!(unsafe { ms.shrink_stopped() });
    /// ```
    pub unsafe fn shrink_stopped(&self) -> bool {
        // No hooks: they are about the running goroutine, which is the collector's, not the
        // stack's owner.
        if !self.wants_shrink() {
            return false;
        }
        self.move_to((self.capacity_words() / 2).max(MIN_WORDS));
        true
    }

    /// Copies the frames into a new buffer of `new_cap >= top` words and frees the old one.
    fn move_to(&self, new_cap: usize) {
        let top = self.top.load(Relaxed);
        debug_assert!(top <= new_cap && new_cap > 0 && new_cap <= self.limit_words);
        let new = alloc_words(new_cap);
        let old = self.buf.load(Relaxed);
        let old_cap = self.capacity_words();
        // SAFETY: both buffers hold at least `top` words and are distinct allocations; no other
        // thread reads the old one meanwhile (the owner is moving its own stack in CopyStack,
        // or a collector holds it stopped), so plain copying races with nothing.
        unsafe { ptr::copy_nonoverlapping(old, new, top) };
        self.buf.store(new, Relaxed);
        self.guard.set_limit(new_cap);
        if old_cap > 0 {
            // SAFETY: `old` is the previous buffer of `old_cap` words, no longer referenced:
            // `buf` names the new one and no reference into the old one is held (see above).
            unsafe { free_words(old, old_cap) };
        }
    }

    /// Panics the goroutine with "goroutine N: msg".
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(crate) fn fail(&self, msg: fmt::Arguments<'_>) -> ! {
        panic!("goroutine {}: {msg}", self.id())
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn fail_empty(&self, what: &str) -> ! {
        self.fail(format_args!("{what} on an empty managed stack"))
    }
}

impl Drop for ManagedStack {
    fn drop(&mut self) {
        let cap = self.capacity_words();
        if cap > 0 {
            // SAFETY: the buffer of `cap` words, owned by us (`&mut self`).
            unsafe { free_words(*self.buf.get_mut(), cap) };
        }
    }
}
