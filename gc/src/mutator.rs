//! The embedding API: a goroutine's [`Mutator`], its [`Slot`]s, and borrowed [`Bytes`] views.

use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use safepoint_sched::GoroutineLocal;
use safepoint_stackmap::ManagedStack;

use crate::collector::{Gc, GcError, Inner};
use crate::globals::{Global, RefChan};
use crate::mark::{body, header_in};
use crate::types::{Header, TagRule, TypeDesc, TypeId, WORD, WordKind, object_size};

/// Whether the running goroutine has a live [`Mutator`].
pub(crate) static ACTIVE: GoroutineLocal<Cell<bool>> = GoroutineLocal::new(|| Cell::new(false));

/// Where each mutator's scope epochs start. Within a mutator epochs count up (wrapping after
/// 2^32 scopes), so a slot of an ended scope is not mistaken for one of a later scope.
static EPOCH: AtomicU32 = AtomicU32::new(1);

/// [`GcError::NoP`], built only when it is returned: `ok_or(GcError::NoP)` on a hot path
/// builds the error on every call and runs its drop glue (`GcError` owns strings in some
/// variants), a measurable share of a checked operation.
#[cold]
fn no_p<T>() -> Result<T, GcError> {
    Err(GcError::NoP)
}

/// A scope refused (it returns no `Result`): a described panic of the goroutine.
#[cold]
#[inline(never)]
fn scope_refused(e: GcError) -> ! {
    panic!("Mutator::scope: {e}")
}

/// [`GcError::WrongRuntime`], built only when it is returned (see [`no_p`]).
#[cold]
fn wrong_runtime<T>() -> Result<T, GcError> {
    Err(GcError::WrongRuntime)
}

/// A place a managed value lives: one word of a handle frame on the goroutine's managed stack,
/// made by [`Mutator::scope`] and valid until that scope ends. Copy it freely; it is only a
/// name. A slot holds null, a reference, or an immediate integer, encoded by the heap's
/// [`TagRule`].
///
/// A slot cannot leave its goroutine (it is neither `Send` nor `Sync`):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// fn f(s: safepoint_gc::Slot) { send(s) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    depth: u32,
    index: u32,
    epoch: u32,
    _not_send: PhantomData<*const ()>,
}

/// A slot's position: the word, and its scope frame's first slot and size.
#[derive(Clone, Copy, Debug)]
struct Pos {
    at: usize,
    base: usize,
    len: usize,
}

#[derive(Clone, Copy, Debug)]
struct ScopeRec {
    base: usize,
    len: usize,
    epoch: u32,
    /// When the scope's frame was pushed, the enclosing scope's frame was the top frame and
    /// itself chained (or there was no enclosing scope): while this frame is the top frame,
    /// as pushed, every enclosing scope's frame is as pushed too (see `Mutator::intact`).
    chained: bool,
}

/// A goroutine's access to the managed heap.
///
/// Managed references never appear in Rust variables: they live in [`Slot`]s (handle frames
/// on the goroutine's managed stack, which the collector scans precisely), in object fields
/// and in [`Global`]s, and every operation names slots. Operations that can reach a safepoint
/// (allocation, stores, channel operations, [`poll`](Mutator::poll), starting a scope) take
/// `&mut self`; borrowed views of object contents ([`Mutator::bytes`]) borrow `&self`, so
/// the borrow checker ends every view before the next such operation:
///
/// ```compile_fail
/// # use safepoint_gc::{Mutator, Slot, TypeId};
/// fn misuse(m: &mut Mutator, s: Slot, t: TypeId, other: Slot) {
///     let view = m.bytes(s).unwrap();
///     m.alloc(other, t).unwrap(); // a collection here could free what `view` shows
///     let _ = view.len();
/// }
/// ```
///
/// One per goroutine at a time, bound to it (neither `Send` nor `Sync`):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// fn f(m: safepoint_gc::Mutator) { send(m) }
/// ```
///
/// Every bad input is an `Err` ([`GcError`]): a stale slot, a field index out of range, a
/// store of an immediate into a reference field, a wrong type. A scope's frame is a *sealed*
/// handle frame: safe code cannot write its slots except through the mutator (the managed
/// stack's `set` refuses it), and a slot whose frame was popped from under its scope is a
/// [`GcError::StaleSlot`]; so every value a slot holds is one the mutator put there. With
/// `gcpoison` or `gccheckmark`, every reference is also checked against the heap before use,
/// and one that is no longer an allocated object (a collector bug) is a described panic.
pub struct Mutator {
    gc: Arc<Inner>,
    goid: u64,
    rule: TagRule,
    scopes: Vec<ScopeRec>,
    /// Check every reference against the heap before use (gcpoison, gccheckmark).
    validate: bool,
    /// The next scope's epoch.
    epoch: u32,
    /// The last record type [`alloc`](Mutator::alloc) took, by [`TypeId::key`], and its
    /// allocation plan, so a run of allocations of one type looks the registry up once: the
    /// registry is append-only and a type's descriptor never changes, so the plan of a key
    /// this heap once accepted stays right.
    last_alloc: Option<(u64, Plan)>,
    /// The type number an object access last read from a header, and its descriptor's
    /// address (exposed, so the field adds no reason of its own for the mutator not to be
    /// `Send`), so a run of accesses to objects of one type looks the registry up once.
    last_type: Cell<Option<(u32, usize)>>,
    /// The word kinds of the two object types field accesses last resolved through the
    /// registry (the latest first), by their header words: the fast paths of
    /// [`load`](Mutator::load) and [`store`](Mutator::store) check a field with a compare or
    /// two and a bit test, as a section's shape does (see [`Kinds`]). Two, so that code that
    /// goes back and forth between two types (a record and its array) stays on them.
    kinds: [Cell<Kinds>; 2],
    /// The innermost scope's frame (its slot 0 and its slot count) if it is chained, or
    /// [`NO_SCOPE`]: what [`ManagedStack::sealed_top`] answers while the scopes' frames are
    /// as they pushed them (see `intact`).
    inner: (usize, usize),
    _not_send: PhantomData<*const ()>,
}

/// [`Mutator::inner`] with no scope: no frame starts at `usize::MAX`.
const NO_SCOPE: (usize, usize) = (usize::MAX, 0);

/// What the fast paths know of one object type, by its exact header word (as
/// [`header_in`] reads it): its body length and which of its first 64 words are reference
/// and tagged words. An object whose header word is this one has these words (a header names
/// its type, and an array's its length; the registry never changes a registered type), so a
/// field access checks the index and the kind with a compare and two bit tests. Weak,
/// ephemeron and raw words, arrays longer than 64 and every error take the general path,
/// which looks the type up and says what is wrong.
#[derive(Clone, Copy, Debug)]
struct Kinds {
    /// The header word; 0 (never a header: its type bits are zero) before the first.
    header: usize,
    /// Body words, at most 64.
    len: usize,
    refs: u64,
    tagged: u64,
}

impl Kinds {
    const NONE: Kinds = Kinds { header: 0, len: 0, refs: 0, tagged: 0 };

    /// The kinds of an object of `desc` with `len` body words and header word `header`.
    fn of(header: usize, desc: &TypeDesc, len: usize) -> Kinds {
        if len > 64 {
            return Kinds::NONE;
        }
        let all = if len == 64 { u64::MAX } else { (1u64 << len) - 1 };
        let (mut refs, mut tagged) = (0, 0);
        match desc {
            TypeDesc::Record { words, .. } => {
                for (i, k) in words.iter().enumerate() {
                    match k {
                        WordKind::Ref => refs |= 1 << i,
                        WordKind::Tagged => tagged |= 1 << i,
                        _ => {}
                    }
                }
            }
            TypeDesc::RefArray { .. } => refs = all,
            TypeDesc::TaggedArray { .. } => tagged = all,
            TypeDesc::ByteArray { .. } => return Kinds::NONE,
        }
        Kinds { header, len, refs, tagged }
    }
}

/// How to allocate an object of one type and length: its size and kind as [`alloc_plan`]
/// gives them, and its header.
#[derive(Clone, Copy, Debug)]
struct Plan {
    size: usize,
    kind: usize,
    header: Header,
}

impl std::fmt::Debug for Mutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mutator(goroutine {}, {} scopes)", self.goid, self.scopes.len())
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        if safepoint_sched::goroutine_id() == Some(self.goid) {
            ACTIVE.with(|a| a.set(false));
        }
    }
}

/// A borrowed view of a byte array's contents, valid until the next operation of its mutator
/// that can reach a safepoint. Reads are atomic byte loads: another goroutine may write the
/// array meanwhile (you then see some of its bytes), never a data race.
#[derive(Clone, Copy)]
pub struct Bytes<'a> {
    pub(crate) bytes: &'a [AtomicU8],
}

impl std::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({:?})", String::from_utf8_lossy(&self.to_vec()))
    }
}

impl Bytes<'_> {
    /// Length in bytes.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"four").unwrap();
    ///     assert_eq!(m.bytes(s).unwrap().len(), 4);
    /// });
    /// # });
    /// ```
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether it is empty.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"").unwrap();
    ///     assert!(m.bytes(s).unwrap().is_empty());
    /// });
    /// # });
    /// ```
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Byte `i`, if in range.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"ab").unwrap();
    ///     let b = m.bytes(s).unwrap();
    ///     assert_eq!((b.get(1), b.get(2)), (Some(b'b'), None));
    /// });
    /// # });
    /// ```
    pub fn get(&self, i: usize) -> Option<u8> {
        // Relaxed: see the type's documentation.
        self.bytes.get(i).map(|b| b.load(Ordering::Relaxed))
    }
    /// A copy of the contents.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, &[1, 2, 3]).unwrap();
    ///     assert_eq!(m.bytes(s).unwrap().to_vec(), [1, 2, 3]);
    /// });
    /// # });
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        // Relaxed: see the type's documentation.
        self.bytes.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
    /// The contents as a string (invalid UTF-8 replaced).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, &[b'o', b'k', 0xff]).unwrap();
    ///     // Invalid UTF-8 is replaced.
    ///     assert_eq!(m.bytes(s).unwrap().to_string_lossy(), "ok\u{fffd}");
    /// });
    /// # });
    /// ```
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.to_vec()).into_owned()
    }
    /// Whether the contents equal `other`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"key").unwrap();
    ///     assert!(m.bytes(s).unwrap().eq_bytes(b"key"));
    ///     assert!(!m.bytes(s).unwrap().eq_bytes(b"keys"));
    /// });
    /// # });
    /// ```
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        // Relaxed: see the type's documentation.
        self.bytes.len() == other.len()
            && self.bytes.iter().zip(other).all(|(a, &b)| a.load(Ordering::Relaxed) == b)
    }
}

/// A validated object: its address, descriptor and length (array elements; record words).
pub(crate) struct Obj<'a> {
    pub(crate) addr: usize,
    pub(crate) desc: &'a TypeDesc,
    len: usize,
    id: TypeId,
}

impl Mutator {
    /// The running goroutine's mutator for `gc`.
    ///
    /// # Errors
    /// [`GcError::WrongRuntime`] off a goroutine of `gc`'s runtime;
    /// [`GcError::MutatorActive`] if this goroutine already has one.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, Mutator};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// // Off the runtime's goroutines there is no mutator.
    /// assert!(matches!(Mutator::new(&gc), Err(GcError::WrongRuntime)));
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let m = Mutator::new(&g).unwrap();
    ///     // One per goroutine.
    ///     assert!(matches!(Mutator::new(&g), Err(GcError::MutatorActive)));
    ///     drop(m);
    /// });
    /// ```
    pub fn new(gc: &Gc) -> Result<Mutator, GcError> {
        if !gc.inner.rt.is_current() {
            return Err(GcError::WrongRuntime);
        }
        let goid = safepoint_sched::goroutine_id().map_or_else(wrong_runtime, Ok)?;
        if ACTIVE.with(|a| a.replace(true)) {
            return Err(GcError::MutatorActive);
        }
        Ok(Mutator {
            rule: gc.inner.config.tag_rule,
            gc: gc.inner.clone(),
            goid,
            scopes: Vec::new(),
            validate: gc.inner.config.poison || gc.inner.config.checkmark,
            // Relaxed: a unique number, nothing published with it. Each mutator takes a
            // range of 2^20 epochs, so slots of different mutators rarely share one.
            epoch: EPOCH.fetch_add(1 << 20, Ordering::Relaxed),
            last_alloc: None,
            last_type: Cell::new(None),
            kinds: [Cell::new(Kinds::NONE), Cell::new(Kinds::NONE)],
            inner: NO_SCOPE,
            _not_send: PhantomData,
        })
    }

    /// The collector this mutator works on.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// assert!(m.gc().same(&gc));
    /// # });
    /// ```
    pub fn gc(&self) -> Gc {
        Gc { inner: self.gc.clone() }
    }

    /// Runs `f` with `N` fresh slots (null) in a new handle frame, which ends when `f` returns
    /// (or panics). Slots of enclosing scopes stay valid inside.
    ///
    /// # Panics
    /// If `f` leaves frames of its own on the managed stack above the scope's frame; inside a
    /// blocking call ([`GcError::NoP`], every time: the managed stack is frozen there); or as
    /// a managed-stack push panics (the stack over its limit).
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [outer]| {
    ///         m.alloc(outer, pair).unwrap();
    ///         m.scope(|m, [inner]| {
    ///             m.copy(inner, outer).unwrap(); // enclosing slots stay valid inside
    ///             m.collect();
    ///             assert!(m.same(inner, outer).unwrap());
    ///         });
    ///         assert!(m.is_ref(outer).unwrap());
    ///     });
    /// });
    /// ```
    pub fn scope<const N: usize, R>(&mut self, f: impl FnOnce(&mut Mutator, [Slot; N]) -> R) -> R {
        let (depth, epoch) = self.enter(N);
        let slots =
            std::array::from_fn(|i| Slot { depth, index: i as u32, epoch, _not_send: PhantomData });
        self.run_scope(N, move |m| f(m, slots))
    }

    /// [`scope`](Mutator::scope) with a number of slots known only at run time.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// // As many slots as a function's frame needs, chosen at run time.
    /// let sum = m.scope_n(3, |m, s| {
    ///     for (i, &slot) in s.iter().enumerate() {
    ///         m.set_int(slot, i as i64 + 1).unwrap();
    ///     }
    ///     s.iter().map(|&slot| m.int(slot).unwrap()).sum::<i64>()
    /// });
    /// assert_eq!(sum, 6);
    /// # });
    /// ```
    pub fn scope_n<R>(&mut self, n: usize, f: impl FnOnce(&mut Mutator, &[Slot]) -> R) -> R {
        let (depth, epoch) = self.enter(n);
        let slots: Vec<Slot> = (0..n)
            .map(|i| Slot { depth, index: i as u32, epoch, _not_send: PhantomData })
            .collect();
        self.run_scope(n, move |m| f(m, &slots))
    }

    fn enter(&mut self, n: usize) -> (u32, u32) {
        // One look at the goroutine serves the P check and, usually, the push. The P first: a
        // push inside a blocking call would otherwise succeed unless it happened to need its
        // slow path (growth, or a pending preemption request), which panics there.
        let chained = |ms: &ManagedStack| self.scopes.is_empty() || self.intact(ms);
        let fast = safepoint_sched::pinned(self.goid, |pin| {
            pin.p()?;
            let ms = pin.managed_stack();
            let chained = chained(ms);
            // SAFETY: as for the push below. `try_push_sealed_handles` never reaches a
            // safepoint, so it may run pinned.
            Some(unsafe { ms.try_push_sealed_handles(n) }.map(|base| (base, chained)))
        });
        let (base, chained) = match fast {
            Some(Some(Some(pushed))) => pushed,
            Some(None) => scope_refused(GcError::NoP),
            None => scope_refused(GcError::WrongRuntime),
            // The slow path: growth, or a preemption request answered here.
            Some(Some(None)) => self
                .with_stack(|ms| {
                    let chained = chained(ms);
                    // SAFETY: the frame's slots are written only by `put`, with values a slot
                    // may hold, and `run_scope` pops it.
                    (unsafe { ms.push_sealed_handles(n) }, chained)
                })
                .unwrap_or_else(|e| panic!("Mutator::scope: {e}")),
        };
        let epoch = self.epoch;
        self.epoch = self.epoch.wrapping_add(1);
        self.scopes.push(ScopeRec { base, len: n, epoch, chained });
        self.inner = if chained { (base, n) } else { NO_SCOPE };
        ((self.scopes.len() - 1) as u32, epoch)
    }

    fn run_scope<R>(&mut self, n: usize, f: impl FnOnce(&mut Mutator) -> R) -> R {
        let r = catch_unwind(AssertUnwindSafe(|| f(self)));
        let rec = self.scopes.pop().expect("scope record");
        let ok = self.with_stack(|ms| {
            // The scope's frame on top, as it pushed it (see `intact`).
            let fits = ms.sealed_top() == Some((rec.base, n));
            if fits {
                ms.pop();
            }
            fits
        });
        if ok == Ok(true) {
            self.inner = match self.scopes.last() {
                Some(r) if r.chained => (r.base, r.len),
                _ => NO_SCOPE,
            };
        } else {
            // The frame stays where it is, a sealed frame no scope owns: no frame the fast
            // paths look for may be taken for it, so none of the live scopes takes them again
            // (scopes pushed from now on check the stack as it is).
            for r in &mut self.scopes {
                r.chained = false;
            }
            self.inner = NO_SCOPE;
        }
        match r {
            Ok(v) => {
                if ok != Ok(true) {
                    panic!(
                        "Mutator::scope: the managed stack is not as the scope left it \
                         (frames pushed inside were not popped)"
                    );
                }
                v
            }
            Err(p) => resume_unwind(p),
        }
    }

    fn with_stack<R>(
        &self,
        f: impl FnOnce(&safepoint_stackmap::ManagedStack) -> R,
    ) -> Result<R, GcError> {
        safepoint_sched::with_managed_stack_of(self.goid, f).map_or_else(wrong_runtime, Ok)
    }

    /// [`GcError::NoP`] inside a blocking call, where the goroutine may not wait on a channel
    /// (or touch its managed stack).
    fn need_p(&self) -> Result<(), GcError> {
        self.pin(|pin| pin.p().map(drop).map_or_else(no_p, Ok))
    }

    /// Runs `f` pinned on this mutator's goroutine (see [`safepoint_sched::pinned`]).
    #[inline(always)]
    fn pin<R>(
        &self,
        f: impl FnOnce(&safepoint_sched::Pinned) -> Result<R, GcError>,
    ) -> Result<R, GcError> {
        // A match, not `map_or_else(..)?`: that nests the closure's result in another
        // `Result` and copies the (large) value through both, on every operation.
        match safepoint_sched::pinned(self.goid, f) {
            Some(r) => r,
            None => wrong_runtime(),
        }
    }

    #[inline(always)]
    fn pos(&self, s: Slot) -> Result<Pos, GcError> {
        match self.scopes.get(s.depth as usize) {
            Some(r) if r.epoch == s.epoch && (s.index as usize) < r.len => {
                Ok(Pos { at: r.base + s.index as usize, base: r.base, len: r.len })
            }
            _ => Err(GcError::StaleSlot),
        }
    }

    /// What the fast paths know of the type of an object whose header word is `hw`.
    #[inline(always)]
    fn known(&self, hw: usize) -> Option<Kinds> {
        let [latest, earlier] = &self.kinds;
        let k = latest.get();
        if k.header == hw {
            return Some(k);
        }
        let k = earlier.get();
        (k.header == hw).then_some(k)
    }

    /// The fast paths' look at word `i` of the object in the slot at `oat` (of an intact
    /// scope frame): its address, what is known of its type, and word `i`'s bit in the
    /// kinds' masks, if the slot holds a reference to an object of a type [`known`](Self::known)
    /// and `i` is below its body. `None` sends the caller to its general path, which names
    /// what is wrong.
    #[inline(always)]
    fn known_field(&self, ms: &ManagedStack, oat: usize, i: usize) -> Option<(usize, Kinds, u64)> {
        let (rule, o) = (self.rule, ms.get_at(oat));
        if !rule.is_ref(o) {
            return None;
        }
        let addr = o & !rule.mask;
        // The debugging modes' check (`obj_at`).
        if self.validate && !self.gc.heap.is_ref(addr) {
            return None;
        }
        // SAFETY: as in `obj_at`: a reference from this mutator's sealed slot, a live object
        // while the slot holds it.
        let hw = unsafe { header_in(self.gc.typed, addr) };
        let kinds = self.known(hw)?;
        (i < kinds.len).then(|| (addr, kinds, 1u64 << i))
    }

    /// Where slot `s` is on the managed stack, if it names a slot of a live scope (the fast
    /// paths' [`pos`](Self::pos); an error is the general path's to describe).
    #[inline(always)]
    fn at(&self, s: Slot) -> Option<usize> {
        let r = self.scopes.get(s.depth as usize)?;
        (r.epoch == s.epoch && (s.index as usize) < r.len).then_some(r.base + s.index as usize)
    }

    /// Whether the innermost scope is chained ([`ScopeRec::chained`]) and its frame is the
    /// managed stack's top frame, as the scope pushed it: then every scope's frame is (the
    /// fast paths' one check for all the slots they touch, where the general path checks each
    /// slot's frame). Safe code changes a frame below the top only by popping the top one
    /// first, and cannot push a sealed frame back (sealed pushes are `unsafe`; the collector's
    /// own mutators make them, and this goroutine has no other than this one, whose scopes'
    /// frames are its records, and a frame a failed scope end left behind, after which no
    /// live scope is chained). So a sealed frame at the innermost scope's place and of its
    /// size on top is that scope's frame, never popped since it was pushed; when it was
    /// pushed, the enclosing scope's frame was on top as pushed (chained), and so on down:
    /// every scope's frame is as pushed. A sealed frame of a function, which
    /// [`ManagedStack::sealed_top`] also reports, is pushed only by a
    /// [`SectionMutator`](crate::SectionMutator), which this goroutine cannot have alongside.
    #[inline(always)]
    fn intact(&self, ms: &ManagedStack) -> bool {
        ms.sealed_top() == Some(self.inner)
    }

    /// Reads the slot at `p`, after checking that its scope's sealed frame is still on the
    /// stack (code around the API may have popped it and pushed something else there).
    #[inline(always)]
    fn get(ms: &ManagedStack, p: Pos) -> Result<usize, GcError> {
        if !ms.is_sealed_frame_at(p.base, p.len) {
            return Err(GcError::StaleSlot);
        }
        Ok(ms.get_at(p.at))
    }

    /// Writes the slot at `p` (checked as in `get`) with `v`, a value of this heap's encoding
    /// that the caller got from a slot, a field, a global or an allocation.
    #[inline(always)]
    fn put(ms: &ManagedStack, p: Pos, v: usize) -> Result<(), GcError> {
        if !ms.is_sealed_frame_at(p.base, p.len) {
            return Err(GcError::StaleSlot);
        }
        // SAFETY: `p.at` is a slot of this mutator's sealed frame (just checked), and every
        // caller passes a value this heap's slots may hold (null, an immediate, a live object
        // it read from a slot, a field, a global, or allocated in the same pinned section).
        unsafe { ms.set_at(p.at, v) };
        Ok(())
    }

    /// The raw word in slot `s` (the heap's tagged encoding).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     assert_eq!(m.word(a).unwrap(), 0); // a fresh slot holds null
    ///     m.alloc(a, pair).unwrap();
    ///     assert_ne!(m.word(a).unwrap(), 0); // now the object's address
    /// });
    /// # });
    /// ```
    #[inline(always)]
    pub fn word(&self, s: Slot) -> Result<usize, GcError> {
        if let Some(at) = self.at(s) {
            // Not pinned, as below.
            let w = safepoint_sched::with_managed_stack_of(self.goid, |ms| {
                self.intact(ms).then(|| ms.get_at(at))
            });
            if let Some(Some(w)) = w {
                return Ok(w);
            }
        }
        self.word_general(s)
    }

    /// [`word`](Self::word) with every check and error.
    #[cold]
    #[inline(never)]
    fn word_general(&self, s: Slot) -> Result<usize, GcError> {
        let p = self.pos(s)?;
        // Not pinned: reading one word of the goroutine's own stack needs only that the
        // buffer stay in place for the read, and it moves only at the goroutine's own
        // safepoints (a push that grows it) or while a collector holds it at one, never
        // while it runs or is stopped asynchronously (`Suspended::shrink_managed_stack`).
        let w = safepoint_sched::with_managed_stack_of(self.goid, |ms| {
            ms.is_sealed_frame_at(p.base, p.len).then(|| ms.get_at(p.at))
        });
        match w {
            Some(Some(w)) => Ok(w),
            Some(None) => Err(GcError::StaleSlot),
            None => wrong_runtime(),
        }
    }

    /// Writes slot `s`. Refused inside a blocking call (the goroutine's managed stack is
    /// frozen there: a collector may be reading it).
    #[inline(always)]
    fn set_word(&mut self, s: Slot, w: usize) -> Result<(), GcError> {
        if let Some(at) = self.at(s) {
            let done = safepoint_sched::pinned(self.goid, |pin| {
                pin.p()?;
                let ms = pin.managed_stack();
                if !self.intact(ms) {
                    return None;
                }
                // SAFETY: a slot of this mutator's sealed frame (checked above); every caller
                // passes a value a slot may hold (as for `put`).
                unsafe { ms.set_at(at, w) };
                Some(())
            });
            if let Some(Some(())) = done {
                return Ok(());
            }
        }
        self.set_word_general(s, w)
    }

    /// [`set_word`](Self::set_word) with every check and error.
    #[cold]
    #[inline(never)]
    fn set_word_general(&mut self, s: Slot, w: usize) -> Result<(), GcError> {
        let pos = self.pos(s)?;
        self.pin(|pin| {
            pin.p().map_or_else(no_p, Ok)?;
            Self::put(pin.managed_stack(), pos, w)
        })
    }

    /// The object slot `s` references, checked: a real object start, a known type.
    fn obj(&self, s: Slot) -> Result<Obj<'_>, GcError> {
        self.obj_of(self.word(s)?)
    }

    /// The object the slot value `w` references, checked.
    #[inline(always)]
    fn obj_of(&self, w: usize) -> Result<Obj<'_>, GcError> {
        if !self.rule.is_ref(w) {
            return Err(GcError::NotAReference { found: w });
        }
        self.obj_at(w & !self.rule.mask)
    }

    #[inline(always)]
    fn obj_at(&self, addr: usize) -> Result<Obj<'_>, GcError> {
        let heap = &self.gc.heap;
        // Every reference a mutator sees came from its sealed slots, a field or a global,
        // which only the API writes, from values it read or allocated: with a correct
        // collector, a live object. Checking that costs a page-map walk per access, so it is
        // done only in the debugging modes (where it catches a collector that freed too much).
        if self.validate && !heap.is_ref(addr) {
            panic!(
                "safepoint: {addr:#x} is not a managed object (a slot or field was written \
                 outside the mutator API, or the object was freed)"
            );
        }
        // SAFETY: `addr` is the reference of an allocated object (just checked, or held by a
        // slot the API wrote), which stays allocated while this goroutine's slot holds it:
        // nothing reachable is freed.
        let word = unsafe { header_in(self.gc.typed, addr) };
        let Some(h) = Header::from_word(word) else {
            panic!("safepoint: object at {addr:#x} has no header (freed?)")
        };
        let desc = match self.last_type.get() {
            // SAFETY: `d` is the exposed address of a descriptor of this heap's registry (set
            // below), which `self.gc` keeps alive; the registry is append-only and a registered
            // descriptor never moves or changes (it sits in a bucket that is never replaced).
            Some((n, d)) if n == h.type_id().get() => unsafe {
                &*std::ptr::with_exposed_provenance::<TypeDesc>(d)
            },
            _ => self.lookup_type(addr, word, h),
        };
        let len = match desc {
            TypeDesc::Record { words, .. } => words.len(),
            _ => h.len(),
        };
        let [latest, earlier] = &self.kinds;
        if latest.get().header != word && earlier.get().header != word {
            earlier.set(latest.get());
            latest.set(Kinds::of(word, desc, len));
        }
        Ok(Obj { addr, desc, len, id: h.type_id() })
    }

    /// The descriptor of the type of the object at `addr` (header word `word`, `h`), looked
    /// up in the registry and remembered for the next access.
    #[inline(never)]
    fn lookup_type(&self, addr: usize, word: usize, h: Header) -> &TypeDesc {
        let Some(desc) = self.gc.types.get(h.type_id()) else {
            panic!(
                "safepoint: object at {addr:#x} has a corrupt header {word:#x}{}",
                if word as u8 == crate::POISON {
                    ": it was freed (gcpoison pattern): a use after free"
                } else {
                    ""
                }
            )
        };
        let at = std::ptr::from_ref(desc).expose_provenance();
        self.last_type.set(Some((h.type_id().get(), at)));
        desc
    }

    #[inline(always)]
    fn field<'a>(&self, o: &Obj<'a>, i: usize) -> Result<(&'a AtomicUsize, WordKind), GcError> {
        let kind = match o.desc {
            TypeDesc::Record { words, .. } => words.get(i).copied(),
            TypeDesc::RefArray { .. } => (i < o.len).then_some(WordKind::Ref),
            TypeDesc::TaggedArray { .. } => (i < o.len).then_some(WordKind::Tagged),
            TypeDesc::ByteArray { .. } => {
                return Err(GcError::WrongKind {
                    type_name: o.desc.name().to_owned(),
                    what: "a byte array has no word fields",
                });
            }
        };
        let kind = match kind {
            Some(k) => k,
            None => return Err(GcError::OutOfBounds { index: i, len: o.len }),
        };
        // SAFETY: `i < len` body words of an object kept alive by the slot that named it.
        let b = unsafe { body(o.addr, o.len) };
        Ok((&b[i], kind))
    }

    // ---- allocation ----

    /// Allocates a record of type `ty` (fields zero: null references, zero raw words) into
    /// `dst`.
    ///
    /// # Errors
    /// [`GcError::StaleSlot`]; [`GcError::Type`] for an unknown type or an array type;
    /// [`GcError::WrongKind`] for the weak handles' type (only [`weak`](Mutator::weak) makes
    /// handles); [`GcError::Alloc`] when the heap is over its hard limit even after a
    /// collection.
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [p, f]| {
    ///         m.alloc(p, pair).unwrap();
    ///         m.load(f, p, 0).unwrap();
    ///         assert!(m.is_null(f).unwrap()); // fields start null (or zero)
    ///         assert_eq!(m.len(p).unwrap(), 2);
    ///     });
    /// });
    /// ```
    #[inline]
    pub fn alloc(&mut self, dst: Slot, ty: TypeId) -> Result<(), GcError> {
        // The fast path: the type of the last allocation, a slot in place, a P and a free
        // slot in the allocation cache. Anything else (an error, or the allocator's slow path
        // included) takes the general path.
        if let (Some((key, plan)), Some(at)) = (self.last_alloc, self.at(dst))
            && key == ty.key()
        {
            let (gc, tag) = (&*self.gc, self.rule.ref_tag);
            let done = safepoint_sched::pinned(self.goid, |pin| {
                let p = pin.p()?;
                let ms = pin.managed_stack();
                if !self.intact(ms) {
                    return None;
                }
                // Allocated and put in its slot in one pinned section, as in `alloc_planned`.
                match gc.alloc_on(p, plan.size, plan.header, plan.kind) {
                    Ok((addr, false)) => {
                        // SAFETY: a slot of this mutator's sealed frame (checked above), and
                        // a new object's reference.
                        unsafe { ms.set_at(at, addr | tag) };
                        Some(true)
                    }
                    // The slow path's object is put in its slot all the same; the safepoint
                    // it owes is paid below, outside the pinned section.
                    Ok((addr, true)) => {
                        // SAFETY: as above.
                        unsafe { ms.set_at(at, addr | tag) };
                        Some(false)
                    }
                    Err(_) => None,
                }
            });
            match done {
                Some(Some(true)) => return Ok(()),
                Some(Some(false)) => {
                    gc.alloc_safepoint();
                    return Ok(());
                }
                _ => {}
            }
        }
        self.alloc_general(dst, ty)
    }

    /// [`alloc`](Self::alloc) in full: a type lookup, the allocator's slow path, every error.
    #[cold]
    #[inline(never)]
    fn alloc_general(&mut self, dst: Slot, ty: TypeId) -> Result<(), GcError> {
        let plan = match self.last_alloc {
            Some((key, plan)) if key == ty.key() => plan,
            _ => {
                let desc = self.gc.types.desc(ty)?;
                if desc.is_array() {
                    return Err(GcError::WrongKind {
                        type_name: desc.name().to_owned(),
                        what: "alloc of an array type: use alloc_array",
                    });
                }
                crate::weak::not_the_cells_type(desc)?;
                let plan = self.plan(ty, 0)?;
                self.last_alloc = Some((ty.key(), plan));
                plan
            }
        };
        self.alloc_planned(dst, plan)
    }

    /// Allocates an array of type `ty` with `len` elements (zeroed) into `dst`.
    ///
    /// # Errors
    /// As [`alloc`](Mutator::alloc); [`GcError::Type`] for a record type or a length too long.
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let vec = gc.types().register(TypeDesc::TaggedArray { name: "vec".into() }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a, v]| {
    ///         m.alloc_array(a, vec, 3).unwrap();
    ///         for i in 0..3 {
    ///             m.set_int(v, i as i64 * 10).unwrap();
    ///             m.store(a, i, v).unwrap();
    ///         }
    ///         m.load(v, a, 2).unwrap();
    ///         assert_eq!(m.int(v).unwrap(), 20);
    ///         assert!(m.load(v, a, 3).is_err()); // out of bounds: an error
    ///     });
    /// });
    /// ```
    pub fn alloc_array(&mut self, dst: Slot, ty: TypeId, len: usize) -> Result<(), GcError> {
        let desc = self.gc.types.desc(ty)?;
        if !desc.is_array() {
            return Err(GcError::WrongKind {
                type_name: desc.name().to_owned(),
                what: "alloc_array of a record type",
            });
        }
        self.alloc_len(dst, ty, len)
    }

    /// Allocates a byte array of type `ty` holding `data` into `dst`.
    ///
    /// # Errors
    /// As [`alloc_array`](Mutator::alloc_array), and [`GcError::WrongKind`] if `ty` is not a
    /// byte array type.
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [s]| {
    ///         m.alloc_bytes(s, text, b"hello").unwrap();
    ///         m.write_bytes(s, 0, b"J").unwrap();
    ///         assert_eq!(m.bytes(s).unwrap().to_vec(), b"Jello");
    ///     });
    /// });
    /// ```
    pub fn alloc_bytes(&mut self, dst: Slot, ty: TypeId, data: &[u8]) -> Result<(), GcError> {
        let desc = self.gc.types.desc(ty)?;
        if !matches!(desc, TypeDesc::ByteArray { .. }) {
            return Err(GcError::WrongKind {
                type_name: desc.name().to_owned(),
                what: "alloc_bytes of a type that is not a byte array",
            });
        }
        self.alloc_len(dst, ty, data.len())?;
        self.write_bytes(dst, 0, data)
    }

    fn alloc_len(&mut self, dst: Slot, ty: TypeId, len: usize) -> Result<(), GcError> {
        self.pos(dst)?;
        let plan = self.plan(ty, len)?;
        self.alloc_planned(dst, plan)
    }

    /// The allocation plan of type `ty` with length `len`, or why there is none (a type of
    /// another registry or none, a length the type refuses).
    fn plan(&self, ty: TypeId, len: usize) -> Result<Plan, GcError> {
        let header = self.gc.types.header(ty, len)?;
        let desc = self.gc.types.get(ty).expect("header() checked the type");
        let (size, kind) = alloc_plan(desc, header, object_size(desc, len)?);
        Ok(Plan { size, kind, header })
    }

    fn alloc_planned(&mut self, dst: Slot, plan: Plan) -> Result<(), GcError> {
        let Plan { size, kind, header } = plan;
        let pos = self.pos(dst)?;
        let tag = self.rule.ref_tag;
        let gc = &self.gc;
        // Allocate and store into the slot in one pinned section: no collection can come
        // between the two and find the new object unrooted.
        let attempt = || {
            self.pin(|pin| {
                let p = pin.p().map_or_else(no_p, Ok)?;
                let (addr, slow) = gc.alloc_on(p, size, header, kind)?;
                Self::put(pin.managed_stack(), pos, addr | tag)?;
                Ok(slow)
            })
        };
        let slow = match attempt() {
            Ok(slow) => slow,
            Err(GcError::Alloc(crate::AllocError::OutOfMemory { .. }))
                if !safepoint_sched::in_no_preempt() =>
            {
                // Collect and try once more before reporting out of memory.
                gc.cycle(None);
                gc.finish_sweep();
                attempt()?
            }
            Err(e) => return Err(e),
        };
        if slow {
            // The new object is in its slot: a safepoint is legal here.
            gc.alloc_safepoint();
        }
        Ok(())
    }

    // ---- slots ----

    /// Sets `dst` to null.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.clear(a).unwrap(); // no longer a root of the object
    ///     assert!(m.is_null(a).unwrap());
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn clear(&mut self, dst: Slot) -> Result<(), GcError> {
        self.set_word(dst, 0)
    }

    /// Copies the value in `src` to `dst`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a, b]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.copy(b, a).unwrap();
    ///     assert!(m.same(a, b).unwrap());
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn copy(&mut self, dst: Slot, src: Slot) -> Result<(), GcError> {
        let w = self.word(src)?;
        self.set_word(dst, w)
    }

    /// Whether `s` holds null.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     assert!(m.is_null(a).unwrap());
    ///     m.set_int(a, 0).unwrap();
    ///     assert!(!m.is_null(a).unwrap()); // the integer 0 is not null
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn is_null(&self, s: Slot) -> Result<bool, GcError> {
        Ok(self.word(s)? == 0)
    }

    /// Whether `s` holds a reference.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a, b]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.set_int(b, 5).unwrap();
    ///     assert!(m.is_ref(a).unwrap());
    ///     assert!(!m.is_ref(b).unwrap());
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn is_ref(&self, s: Slot) -> Result<bool, GcError> {
        Ok(self.rule.is_ref(self.word(s)?))
    }

    /// Whether `a` and `b` hold the same value (for references: the same object).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a, b, c]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.alloc(b, pair).unwrap();
    ///     m.copy(c, a).unwrap();
    ///     assert!(m.same(a, c).unwrap());
    ///     assert!(!m.same(a, b).unwrap()); // two objects, equal contents or not
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn same(&self, a: Slot, b: Slot) -> Result<bool, GcError> {
        Ok(self.word(a)? == self.word(b)?)
    }

    fn int_shape(&self) -> (u32, usize) {
        let shift = usize::BITS - self.rule.mask.leading_zeros();
        let tag = (1..=7usize)
            .chain([0])
            .find(|&t| t & !self.rule.mask == 0 && t != self.rule.ref_tag)
            .expect("a tag rule leaves some immediate tag");
        (shift, tag)
    }

    /// Stores the immediate integer `v` in `dst`.
    ///
    /// # Errors
    /// [`GcError::IntegerOutOfRange`] if `v` needs more bits than an immediate has (61 to 63,
    /// depending on the tag rule).
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, Mutator};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [v]| {
    ///         m.set_int(v, -12345).unwrap();
    ///         assert_eq!(m.int(v).unwrap(), -12345);
    ///         assert!(!m.is_ref(v).unwrap()); // an immediate: no object
    ///         assert!(matches!(m.set_int(v, i64::MAX), Err(GcError::IntegerOutOfRange { .. })));
    ///     });
    /// });
    /// ```
    #[inline]
    pub fn set_int(&mut self, dst: Slot, v: i64) -> Result<(), GcError> {
        let (shift, tag) = self.int_shape();
        let w = ((v as usize) << shift) | tag;
        if ((w as i64) >> shift) != v {
            return Err(GcError::IntegerOutOfRange { value: v });
        }
        self.set_word(dst, w)
    }

    /// The immediate integer in `s`.
    ///
    /// # Errors
    /// [`GcError::NotAnInteger`] for null or a reference.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a, b]| {
    ///     m.set_int(a, -12).unwrap();
    ///     assert_eq!(m.int(a).unwrap(), -12);
    ///     m.alloc(b, pair).unwrap();
    ///     assert!(m.int(b).is_err()); // a reference is not an integer
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn int(&self, s: Slot) -> Result<i64, GcError> {
        let w = self.word(s)?;
        let (shift, tag) = self.int_shape();
        if w & self.rule.mask != tag || (w == 0 && tag == 0) {
            return Err(GcError::NotAnInteger { found: w });
        }
        Ok((w as i64) >> shift)
    }

    // ---- objects ----

    /// The type of the object in `s`.
    ///
    /// # Errors
    /// [`GcError::NotAReference`] if `s` holds null or an immediate.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     m.alloc(a, pair).unwrap();
    ///     assert_eq!(m.type_of(a).unwrap(), pair);
    /// });
    /// # });
    /// ```
    pub fn type_of(&self, s: Slot) -> Result<TypeId, GcError> {
        // The header's id names no registry: this heap's is its registry.
        Ok(self.gc.types.bind(self.obj(s)?.id))
    }

    /// The length of the array in `s` (elements; bytes for a byte array), or the number of
    /// words of a record.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let vec = gc.types().register(TypeDesc::RefArray { name: "vec".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     m.alloc_array(a, vec, 10).unwrap();
    ///     assert_eq!(m.len(a).unwrap(), 10);
    /// });
    /// # });
    /// ```
    pub fn len(&self, s: Slot) -> Result<usize, GcError> {
        Ok(self.obj(s)?.len)
    }

    /// Loads field (or element) `i` of the object in `obj` into `dst`: a reference field or a
    /// tagged field. Raw words are read with [`read_word`](Mutator::read_word).
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a, b, v]| {
    ///         m.alloc(a, pair).unwrap();
    ///         m.alloc(b, pair).unwrap();
    ///         m.store(a, 0, b).unwrap();        // a.0 = b (through the write barrier)
    ///         m.set_int(v, 5).unwrap();
    ///         m.store(a, 1, v).unwrap();        // a.1 = 5
    ///         m.clear(b).unwrap();
    ///         m.load(b, a, 0).unwrap();         // b = a.0
    ///         assert!(m.is_ref(b).unwrap());
    ///         m.load(v, a, 1).unwrap();
    ///         assert_eq!(m.int(v).unwrap(), 5);
    ///         // A reference field takes no integer.
    ///         assert!(m.store(a, 0, v).is_err());
    ///     });
    /// });
    /// ```
    #[inline]
    pub fn load(&mut self, dst: Slot, obj: Slot, i: usize) -> Result<(), GcError> {
        let (Some(dat), Some(oat)) = (self.at(dst), self.at(obj)) else {
            return self.load_general(dst, obj, i);
        };
        let rule = self.rule;
        // The fast path: both slots in place, a P, an object of the type last resolved and a
        // reference or tagged word. Anything else (an error included) takes the general path
        // below, which does the same in full and names what is wrong.
        let done = safepoint_sched::pinned(self.goid, |pin| {
            pin.p()?;
            let ms = pin.managed_stack();
            if !self.intact(ms) {
                return None;
            }
            let (addr, kinds, bit) = self.known_field(ms, oat, i)?;
            // SAFETY: `i` is below the body words of the object's type (`kinds`, by its header).
            let w = unsafe { &body(addr, i + 1)[i] };
            let v = if kinds.refs & bit != 0 {
                // Acquire: as in `load_general`.
                match w.load(Ordering::Acquire) {
                    0 => 0,
                    v => v | rule.ref_tag,
                }
            } else if kinds.tagged & bit != 0 {
                // Acquire: as in `load_general`.
                w.load(Ordering::Acquire)
            } else {
                return None;
            };
            // SAFETY: a slot of this mutator's sealed frame (checked above), and a value a
            // slot may hold: null, an immediate, or a live object read from a field while
            // pinned (no collection between the field's load and this store).
            unsafe { ms.set_at(dat, v) };
            Some(())
        });
        match done {
            Some(Some(())) => Ok(()),
            _ => self.load_general(dst, obj, i),
        }
    }

    /// [`load`](Self::load) in full: any kind of word, and every error.
    #[cold]
    #[inline(never)]
    fn load_general(&mut self, dst: Slot, obj: Slot, i: usize) -> Result<(), GcError> {
        let (dpos, opos) = (self.pos(dst)?, self.pos(obj)?);
        let tag = self.rule.ref_tag;
        // One pinned section from reading `obj` to writing `dst`: no collection between the
        // field's load and the slot's write can miss the value (the field may be overwritten
        // meanwhile).
        self.pin(|pin| {
            pin.p().map_or_else(no_p, Ok)?;
            let ms = pin.managed_stack();
            let o = self.obj_of(Self::get(ms, opos)?)?;
            let (w, kind) = self.field(&o, i)?;
            if kind == WordKind::Raw {
                return Err(self.wrong(&o, "raw word: use read_word"));
            }
            // Acquire pairs with the Release of the store that wrote the word
            // (`Inner::store_field`, a global's swap): the object it refers to is seen
            // initialised (the crate essay, "Publication").
            let v = w.load(Ordering::Acquire);
            let v = match kind {
                WordKind::Ref if v != 0 => v | tag,
                // A weak field holds a cell: the value is the cell's object, or null.
                WordKind::Weak if v != 0 => match self.gc.deref_cell(pin.p(), v) {
                    0 => 0,
                    t => t | tag,
                },
                // An ephemeron's value: null unless its key is still there.
                WordKind::Ephemeron => self.gc.ephemeron_value(pin.p(), o.addr, o.desc, v),
                _ => v,
            };
            Self::put(ms, dpos, v)
        })
    }

    /// Stores the value in `src` into field (or element) `i` of the object in `obj`. A
    /// reference field takes null or a reference; a tagged field takes any value.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a, b, c]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.alloc(b, pair).unwrap();
    ///     m.store(a, 0, b).unwrap(); // a.0 = b, through the write barrier
    ///     m.load(c, a, 0).unwrap();
    ///     assert!(m.same(b, c).unwrap());
    ///     assert!(m.store(a, 2, b).is_err()); // a pair has two words
    /// });
    /// # });
    /// ```
    #[inline]
    pub fn store(&mut self, obj: Slot, i: usize, src: Slot) -> Result<(), GcError> {
        let (Some(oat), Some(sat)) = (self.at(obj), self.at(src)) else {
            return self.store_general(obj, i, src);
        };
        let (rule, gc) = (self.rule, &*self.gc);
        // The fast path, as in `load`: a reference or tagged word of an object of the type
        // last resolved, and a value that word takes.
        let done = safepoint_sched::pinned(self.goid, |pin| {
            let p = pin.p()?;
            let ms = pin.managed_stack();
            if !self.intact(ms) {
                return None;
            }
            let (addr, kinds, bit) = self.known_field(ms, oat, i)?;
            let v = ms.get_at(sat);
            let (kind, v) = if kinds.refs & bit != 0 {
                match v {
                    0 => (WordKind::Ref, 0),
                    v if rule.is_ref(v) => (WordKind::Ref, v & !rule.mask),
                    _ => return None,
                }
            } else if kinds.tagged & bit != 0 {
                (WordKind::Tagged, v)
            } else {
                return None;
            };
            // SAFETY: as in `load`.
            let w = unsafe { &body(addr, i + 1)[i] };
            // The barrier and the store in one pinned section, as in `store_general`.
            gc.store_field(p, kind, w, v);
            Some(())
        });
        match done {
            Some(Some(())) => Ok(()),
            _ => self.store_general(obj, i, src),
        }
    }

    /// [`store`](Self::store) in full: any kind of word, and every error.
    #[cold]
    #[inline(never)]
    fn store_general(&mut self, obj: Slot, i: usize, src: Slot) -> Result<(), GcError> {
        let (opos, spos) = (self.pos(obj)?, self.pos(src)?);
        let gc = &self.gc;
        let rule = self.rule;
        // The barrier and the store in one pinned section: no phase change between them.
        let slow = self.pin(|pin| {
            let p = pin.p().map_or_else(no_p, Ok)?;
            let ms = pin.managed_stack();
            let v = Self::get(ms, spos)?;
            let o = self.obj_of(Self::get(ms, opos)?)?;
            let (w, kind) = self.field(&o, i)?;
            let mut slow = false;
            let v = match kind {
                WordKind::Ref | WordKind::Weak if v == 0 => 0,
                WordKind::Ref if rule.is_ref(v) => v & !rule.mask,
                // A weak field takes the object's cell (made if it has none).
                WordKind::Weak if rule.is_ref(v) => {
                    let (cell, s) = gc.cell_of(p, v & !rule.mask)?;
                    slow = s;
                    cell
                }
                WordKind::Ref | WordKind::Weak => {
                    return Err(GcError::NotAReference { found: v });
                }
                WordKind::Tagged | WordKind::Ephemeron => v,
                WordKind::Raw => return Err(self.wrong(&o, "raw word: use write_word")),
            };
            if kind == WordKind::Weak {
                gc.before_key_store(p, o.addr, o.desc, i);
            }
            gc.store_field(p, kind, w, v);
            Ok(slow)
        })?;
        if slow {
            // The cell is in its field: a safepoint is legal here.
            gc.alloc_safepoint();
        }
        Ok(())
    }

    // ---- weak handles and cleanups (see the `weak` module) ----

    /// Puts into `dst` a weak handle to the object in `src`: its cell, made on the first
    /// call for that object and the same reference on every later one (so [`same`] compares
    /// two handles by their objects). The handle does not keep the object alive; read it
    /// with [`deref`](Mutator::deref). A handle is a managed object like any other: keep it
    /// in slots, fields or globals; a [`WordKind::Weak`] field stores and loads through it.
    ///
    /// [`same`]: Mutator::same
    ///
    /// # Errors
    /// [`GcError::NotAReference`] if `src` holds no reference; [`GcError::StaleSlot`],
    /// [`GcError::NoP`]; [`GcError::Alloc`] if the cell cannot be allocated.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [obj, w, w2, out]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     m.weak(w, obj).unwrap();
    ///     m.weak(w2, obj).unwrap();
    ///     assert!(m.same(w, w2).unwrap()); // one handle per object
    ///     m.collect();
    ///     assert!(m.deref(out, w).unwrap()); // `obj` still roots it
    ///     m.clear(obj).unwrap();
    ///     m.clear(out).unwrap();
    ///     m.collect();
    ///     assert!(!m.deref(out, w).unwrap()); // unreachable: the handle reads null
    ///     assert!(m.is_null(out).unwrap());
    /// });
    /// # });
    /// ```
    pub fn weak(&mut self, dst: Slot, src: Slot) -> Result<(), GcError> {
        let (dpos, spos) = (self.pos(dst)?, self.pos(src)?);
        let gc = &self.gc;
        let tag = self.rule.ref_tag;
        let slow = self.pin(|pin| {
            let p = pin.p().map_or_else(no_p, Ok)?;
            let ms = pin.managed_stack();
            let o = self.obj_of(Self::get(ms, spos)?)?;
            let (cell, slow) = gc.cell_of(p, o.addr)?;
            Self::put(ms, dpos, cell | tag)?;
            Ok(slow)
        })?;
        if slow {
            gc.alloc_safepoint();
        }
        Ok(())
    }

    /// Reads the weak handle in `w` into `dst`: its object while the object is reachable
    /// (as a strong value: `dst` now keeps it alive), null once a collection has found it
    /// unreachable; the same answer on every goroutine. Returns whether the object was there.
    ///
    /// # Errors
    /// [`GcError::WrongKind`] if `w` holds an object that is not a weak handle;
    /// [`GcError::NotAReference`] if it holds no reference; [`GcError::StaleSlot`],
    /// [`GcError::NoP`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [obj, w, out]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     m.weak(w, obj).unwrap();
    ///     assert!(m.deref(out, w).unwrap());
    ///     assert!(m.same(out, obj).unwrap());
    /// });
    /// # });
    /// ```
    pub fn deref(&mut self, dst: Slot, w: Slot) -> Result<bool, GcError> {
        let (dpos, wpos) = (self.pos(dst)?, self.pos(w)?);
        let gc = &self.gc;
        let tag = self.rule.ref_tag;
        self.pin(|pin| {
            let p = pin.p().map_or_else(no_p, Ok)?;
            let ms = pin.managed_stack();
            let o = self.obj_of(Self::get(ms, wpos)?)?;
            if !gc.is_cell(o.addr) {
                return Err(self.wrong(&o, "not a weak handle"));
            }
            let t = gc.deref_cell(Some(p), o.addr);
            Self::put(ms, dpos, if t == 0 { 0 } else { t | tag })?;
            Ok(t != 0)
        })
    }

    /// Whether `s` holds a weak handle (made by [`weak`](Mutator::weak)).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [obj, w]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     m.weak(w, obj).unwrap();
    ///     assert!(m.is_weak(w).unwrap());
    ///     assert!(!m.is_weak(obj).unwrap());
    /// });
    /// # });
    /// ```
    pub fn is_weak(&self, s: Slot) -> Result<bool, GcError> {
        let w = self.word(s)?;
        if !self.rule.is_ref(w) {
            return Ok(false);
        }
        let o = self.obj_of(w)?;
        Ok(self.gc.is_cell(o.addr))
    }

    /// Attaches a cleanup to the object in `obj`: `f` runs once, on the heap's cleanup
    /// goroutine, after a collection has found the object unreachable (Go's
    /// `runtime.AddCleanup`). An object may have several. `f` cannot reach the object (no
    /// managed reference lives in a Rust value), so it cannot bring it back; but a
    /// [`Global`] it captures that references the object keeps the object alive for good,
    /// and `f` never runs. A panic in `f` is reported through the message sink and does not
    /// stop the other cleanups. Cleanups still queued when the heap is dropped are dropped
    /// without running.
    ///
    /// # Errors
    /// [`GcError::NotAReference`] if `obj` holds no reference; [`GcError::StaleSlot`],
    /// [`GcError::NoP`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// let ran = Arc::new(AtomicBool::new(false));
    /// m.scope(|m, [obj]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     let r = ran.clone();
    ///     let c = m.add_cleanup(obj, move || r.store(true, Ordering::SeqCst)).unwrap();
    ///     assert!(c.cancel()); // cancelled while the object lives: it will never run
    /// });
    /// m.collect();
    /// assert!(!ran.load(Ordering::SeqCst));
    /// # });
    /// ```
    pub fn add_cleanup(
        &mut self,
        obj: Slot,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<crate::Cleanup, GcError> {
        let pos = self.pos(obj)?;
        let gc = &self.gc;
        let f: Box<dyn FnOnce() + Send> = Box::new(f);
        self.pin(|pin| {
            pin.p().map_or_else(no_p, Ok)?;
            let o = self.obj_of(Self::get(pin.managed_stack(), pos)?)?;
            Ok(gc.add_cleanup_at(o.addr, f))
        })
    }

    /// Hands `value` to the object in `obj`: it is dropped (on the heap's cleanup goroutine)
    /// once a collection has found the object unreachable. The typed form of
    /// [`add_cleanup`](Mutator::add_cleanup), for a Rust resource a managed object owns.
    ///
    /// # Errors
    /// As [`add_cleanup`](Mutator::add_cleanup).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use std::sync::Arc;
    /// let resource = Arc::new(());
    /// m.scope(|m, [obj]| {
    ///     m.alloc(obj, pair).unwrap();
    ///     // Dropped once the object is found unreachable.
    ///     m.attach(obj, resource.clone()).unwrap();
    /// });
    /// assert_eq!(Arc::strong_count(&resource), 2);
    /// # });
    /// ```
    pub fn attach<T: Send + 'static>(&mut self, obj: Slot, value: T) -> Result<(), GcError> {
        self.add_cleanup(obj, move || drop(value)).map(drop)
    }

    fn wrong(&self, o: &Obj<'_>, what: &'static str) -> GcError {
        GcError::WrongKind { type_name: o.desc.name().to_owned(), what }
    }

    /// Raw word `i` of the record in `obj`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let point = gc.types().register(TypeDesc::Record {
    ///     name: "point".into(),
    ///     words: vec![WordKind::Raw, WordKind::Raw],
    /// }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [p]| {
    ///     m.alloc(p, point).unwrap();
    ///     assert_eq!(m.read_word(p, 0).unwrap(), 0); // fresh objects are zeroed
    ///     m.write_word(p, 0, u64::MAX).unwrap();
    ///     assert_eq!(m.read_word(p, 0).unwrap(), u64::MAX);
    /// });
    /// # });
    /// ```
    pub fn read_word(&self, obj: Slot, i: usize) -> Result<u64, GcError> {
        let o = self.obj(obj)?;
        match self.field(&o, i)? {
            // Relaxed: as in `load`.
            (w, WordKind::Raw) => Ok(w.load(Ordering::Relaxed) as u64),
            _ => Err(self.wrong(&o, "not a raw word: use load")),
        }
    }

    /// Sets raw word `i` of the record in `obj`.
    ///
    /// # Errors
    /// [`GcError::WrongKind`] for a word that is not raw, or for a weak handle (its word, an
    /// address the collector reads back as a reference, is the collector's);
    /// [`GcError::OutOfBounds`]; [`GcError::StaleSlot`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let point = gc.types().register(TypeDesc::Record {
    ///     name: "point".into(),
    ///     words: vec![WordKind::Raw, WordKind::Raw],
    /// }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [p]| {
    ///     m.alloc(p, point).unwrap();
    ///     m.write_word(p, 1, 0xdead_beef).unwrap(); // raw: never taken for a reference
    ///     m.collect();
    ///     assert_eq!(m.read_word(p, 1).unwrap(), 0xdead_beef);
    /// });
    /// # });
    /// ```
    pub fn write_word(&mut self, obj: Slot, i: usize, v: u64) -> Result<(), GcError> {
        let o = self.obj(obj)?;
        if self.gc.is_cell(o.addr) {
            // Its word is an address the collector reads back as a reference.
            return Err(self.wrong(&o, "a weak handle's word is the collector's"));
        }
        match self.field(&o, i)? {
            // Relaxed: as in `load`.
            (w, WordKind::Raw) => {
                w.store(v as usize, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(self.wrong(&o, "not a raw word: use store")),
        }
    }

    /// Raw word `i` of the record in `obj` as a float.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let point = gc.types().register(TypeDesc::Record {
    ///     name: "point".into(),
    ///     words: vec![WordKind::Raw, WordKind::Raw],
    /// }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [p]| {
    ///     m.alloc(p, point).unwrap();
    ///     m.write_f64(p, 0, 1.5).unwrap();
    ///     assert_eq!(m.read_f64(p, 0).unwrap(), 1.5);
    /// });
    /// # });
    /// ```
    pub fn read_f64(&self, obj: Slot, i: usize) -> Result<f64, GcError> {
        self.read_word(obj, i).map(f64::from_bits)
    }

    /// Sets raw word `i` of the record in `obj` to a float.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let point = gc.types().register(TypeDesc::Record {
    ///     name: "point".into(),
    ///     words: vec![WordKind::Raw, WordKind::Raw],
    /// }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [p]| {
    ///     m.alloc(p, point).unwrap();
    ///     m.write_f64(p, 1, -0.25).unwrap();
    ///     assert_eq!(m.read_f64(p, 1).unwrap(), -0.25);
    /// });
    /// # });
    /// ```
    pub fn write_f64(&mut self, obj: Slot, i: usize, v: f64) -> Result<(), GcError> {
        self.write_word(obj, i, v.to_bits())
    }

    fn byte_cells(&self, o: &Obj<'_>) -> Result<&[AtomicU8], GcError> {
        if !matches!(o.desc, TypeDesc::ByteArray { .. }) {
            return Err(self.wrong(o, "not a byte array"));
        }
        // SAFETY: a byte array of `len` bytes at its reference, kept alive by the slot that
        // names it for as long as the returned borrow of `self` lasts (every operation that
        // could free it takes `&mut self`). Heap bytes are only accessed atomically.
        Ok(unsafe { std::slice::from_raw_parts(o.addr as *const AtomicU8, o.len) })
    }

    /// A view of the byte array in `s`, valid until the next `&mut self` operation.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"hello").unwrap();
    ///     assert_eq!(m.bytes(s).unwrap().to_vec(), b"hello");
    /// });
    /// # });
    /// ```
    pub fn bytes(&self, s: Slot) -> Result<Bytes<'_>, GcError> {
        let o = self.obj(s)?;
        Ok(Bytes { bytes: self.byte_cells(&o)? })
    }

    /// Writes `data` into the byte array in `s` from byte `offset`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [s]| {
    ///     m.alloc_bytes(s, text, b"hello").unwrap();
    ///     m.write_bytes(s, 1, b"ip").unwrap();
    ///     assert!(m.bytes(s).unwrap().eq_bytes(b"hiplo"));
    ///     assert!(m.write_bytes(s, 4, b"!!").is_err()); // past the end
    /// });
    /// # });
    /// ```
    pub fn write_bytes(&mut self, s: Slot, offset: usize, data: &[u8]) -> Result<(), GcError> {
        let o = self.obj(s)?;
        let cells = self.byte_cells(&o)?;
        let end = offset.checked_add(data.len()).filter(|&e| e <= cells.len());
        let Some(end) = end else {
            return Err(GcError::OutOfBounds {
                index: offset.saturating_add(data.len()),
                len: cells.len(),
            });
        };
        for (c, &b) in cells[offset..end].iter().zip(data) {
            // Relaxed: see `Bytes`.
            c.store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    // ---- globals and channels ----

    /// A new global root holding the value in `src`.
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// let global = rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a]| {
    ///         m.alloc(a, pair).unwrap();
    ///         m.new_global(a).unwrap() // a root outliving the scope
    ///     })
    /// });
    /// gc.collect();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a]| {
    ///         m.load_global(a, &global).unwrap();
    ///         assert_eq!(m.type_of(a).unwrap(), pair);
    ///     });
    /// });
    /// ```
    pub fn new_global(&mut self, src: Slot) -> Result<Global, GcError> {
        let v = self.word(src)?;
        Ok(Global::with_value(&self.gc, v))
    }

    /// Loads the value of global `g` into `dst`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::Global;
    /// let global = Global::new(&gc);
    /// m.scope(|m, [a, b]| {
    ///     m.load_global(a, &global).unwrap();
    ///     assert!(m.is_null(a).unwrap()); // a new global holds null
    ///     m.alloc(b, pair).unwrap();
    ///     m.store_global(&global, b).unwrap();
    ///     m.load_global(a, &global).unwrap();
    ///     assert!(m.same(a, b).unwrap());
    /// });
    /// # });
    /// ```
    pub fn load_global(&mut self, dst: Slot, g: &Global) -> Result<(), GcError> {
        g.check(&self.gc)?;
        let pos = self.pos(dst)?;
        // Pinned, as in `load`.
        self.pin(|pin| {
            pin.p().map_or_else(no_p, Ok)?;
            // Acquire: as in `load`.
            let v = g.word().load(Ordering::Acquire);
            Self::put(pin.managed_stack(), pos, v)
        })
    }

    /// Stores the value in `src` into global `g`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::Global;
    /// let global = Global::new(&gc);
    /// m.scope(|m, [a]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.store_global(&global, a).unwrap(); // a root now: it survives the scope
    /// });
    /// m.collect();
    /// m.scope(|m, [a]| {
    ///     m.load_global(a, &global).unwrap();
    ///     assert_eq!(m.type_of(a).unwrap(), pair);
    /// });
    /// # });
    /// ```
    pub fn store_global(&mut self, g: &Global, src: Slot) -> Result<(), GcError> {
        g.check(&self.gc)?;
        let v = self.word(src)?;
        let gc = &self.gc;
        self.pin(|pin| {
            let p = pin.p().map_or_else(no_p, Ok)?;
            // Swap: another goroutine may store to the same global; each store's barrier
            // shades the value it replaced. AcqRel: Release publishes `v`'s object, as in
            // `Inner::store_field`; Acquire sees the replaced value's, which the barrier shades.
            let old = g.word().swap(v, Ordering::AcqRel);
            let kind = WordKind::Tagged;
            gc.write_barrier(Some(p), gc.ref_in(kind, old), gc.ref_in(kind, v));
            Ok(())
        })
    }

    /// Sends the value in `src` on `ch`, waiting for room (a safepoint). The value stays
    /// alive while in flight.
    ///
    /// # Errors
    /// [`GcError::Closed`] if the channel is closed when the send starts; a channel closed
    /// while the send waits panics, as a Go send does. [`GcError::NoP`] inside a blocking
    /// call; [`GcError::WrongHeap`] for a channel of another collector.
    ///
    /// ```
    /// use safepoint_gc::RefChan;
    /// use safepoint_sched::go;
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let ch = RefChan::new(&g, 0);
    ///     let (g2, tx) = (g.clone(), ch.clone());
    ///     go(move || {
    ///         let mut m = Mutator::new(&g2).unwrap();
    ///         m.scope(|m, [a]| {
    ///             m.alloc(a, pair).unwrap();
    ///             m.send(&tx, a).unwrap(); // alive while in flight
    ///         });
    ///         tx.close();
    ///     });
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a]| {
    ///         assert!(m.recv(&ch, a).unwrap());
    ///         assert_eq!(m.type_of(a).unwrap(), pair);
    ///         assert!(!m.recv(&ch, a).unwrap()); // closed and drained
    ///     });
    /// });
    /// ```
    pub fn send(&mut self, ch: &RefChan, src: Slot) -> Result<(), GcError> {
        if !Arc::ptr_eq(&ch.chan.gc, &self.gc) {
            return Err(GcError::WrongHeap);
        }
        let pos = self.pos(src)?;
        if ch.chan.chan.is_closed() {
            return Err(GcError::Closed);
        }
        // A reference goes in a root slot of this P, pinned (see the `globals` module).
        let msg = self.pin(|pin| {
            let p = pin.p().map_or_else(no_p, Ok)?;
            let v = Self::get(pin.managed_stack(), pos)?;
            Ok(ch.chan.message(p, v))
        })?;
        ch.chan.chan.send(msg);
        Ok(())
    }

    /// Receives a value from `ch` into `dst`, waiting for one (a safepoint). `Ok(false)` (and
    /// null in `dst`) once the channel is closed and drained.
    ///
    /// # Errors
    /// [`GcError::NoP`] inside a blocking call; [`GcError::WrongHeap`] for a channel of
    /// another collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&gc, 1);
    /// m.scope(|m, [a, b]| {
    ///     m.alloc(a, pair).unwrap();
    ///     m.send(&ch, a).unwrap();
    ///     assert!(m.recv(&ch, b).unwrap());
    ///     assert!(m.same(a, b).unwrap());
    ///     ch.close();
    ///     assert!(!m.recv(&ch, b).unwrap()); // closed and empty
    /// });
    /// # });
    /// ```
    pub fn recv(&mut self, ch: &RefChan, dst: Slot) -> Result<bool, GcError> {
        if !Arc::ptr_eq(&ch.chan.gc, &self.gc) {
            return Err(GcError::WrongHeap);
        }
        self.need_p()?;
        let pos = self.pos(dst)?;
        match ch.chan.chan.recv() {
            Ok(msg) => self.pin(|pin| {
                let p = pin.p().map_or_else(no_p, Ok)?;
                // The value goes to `dst` and its root slot is released in one pinned
                // section: it is never only in a Rust variable at a safepoint. (On an error,
                // `msg` is dropped and releases its slot.)
                Self::put(pin.managed_stack(), pos, msg.take(p))?;
                Ok(true)
            }),
            Err(_) => {
                self.set_word(dst, 0)?;
                Ok(false)
            }
        }
    }

    // ---- the collector ----

    /// A preemption point: lets a stop-the-world or a time slice end here.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = Mutator::new(&g).unwrap();
    /// m.scope(|m, [a]| {
    ///     for _ in 0..1000 {
    ///         m.alloc(a, pair).unwrap();
    ///         m.poll(); // a loop back-edge: a safepoint for stops and scans
    ///     }
    /// });
    /// # });
    /// ```
    pub fn poll(&mut self) {
        safepoint_sched::poll();
    }

    /// Runs a full collection now.
    ///
    /// ```
    /// use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = Mutator::new(&g).unwrap();
    ///     m.scope(|m, [a]| {
    ///         m.alloc(a, pair).unwrap();
    ///         let before = m.gc().cycles();
    ///         m.collect(); // the slot is a root: the object survives
    ///         assert!(m.gc().cycles() > before);
    ///         assert!(m.is_ref(a).unwrap());
    ///     });
    /// });
    /// ```
    pub fn collect(&mut self) {
        self.gc().collect();
    }
}

/// How an object of type `desc` with header `header` and `full` bytes (header included, as
/// [`object_size`] gives) is allocated: the bytes to ask the cache for and the typed kind
/// (0: a header, by size class). A record of one of the first types registered lives in a
/// typed span without a header (see the heap module); anything else keeps its header, in a
/// slot of at least two words so that its reference (one word in) is inside its slot.
#[inline]
pub(crate) fn alloc_plan(desc: &TypeDesc, header: Header, full: usize) -> (usize, usize) {
    if let TypeDesc::Record { .. } = desc
        && let Some(kind) = crate::heap::typed_kind(header.type_id().get(), full - WORD)
    {
        return (full - WORD, kind);
    }
    (full.max(2 * WORD), 0)
}

impl Inner {
    /// Allocates an object of `size` bytes (as [`alloc_plan`] gives, with `kind`) with
    /// header `header` from P `p`'s cache: its reference, and whether the allocation took a
    /// slow path (time to look at the pacer). While marking, a slow path also pays an assist.
    ///
    /// Runs pinned on P `p` (the caller's `pinned` section).
    #[inline(always)]
    pub(crate) fn alloc_on(
        &self,
        p: usize,
        size: usize,
        header: Header,
        kind: usize,
    ) -> Result<(usize, bool), GcError> {
        // SAFETY: the caller is P `p`'s goroutine, pinned (see `PCache`).
        let cache = &mut unsafe { self.caches[p].get() }.cache;
        // The fast paths: a free slot in the cached word of the kind's span.
        if kind != 0 {
            if let Some(addr) = cache.try_take(kind) {
                return Ok((addr.as_ptr() as usize, false));
            }
        } else if let Some(addr) =
            crate::sizeclass::class_of(size).and_then(|class| cache.try_take(class))
        {
            let slot = addr.as_ptr() as usize;
            // SAFETY: a fresh, zeroed slot of at least two words (`alloc_plan`). Relaxed: as
            // in `alloc_slow_on`.
            unsafe { &*(slot as *const AtomicUsize) }.store(header.to_word(), Ordering::Relaxed);
            return Ok((slot + WORD, false));
        }
        self.alloc_slow_on(p, size, header, kind)
    }

    /// The slow path of [`alloc_on`](Self::alloc_on): a new word or span for the kind, a
    /// large object, or a typed record that gets a header instead.
    #[cold]
    #[inline(never)]
    fn alloc_slow_on(
        &self,
        p: usize,
        size: usize,
        header: Header,
        kind: usize,
    ) -> Result<(usize, bool), GcError> {
        // SAFETY: the caller is P `p`'s goroutine, pinned (see `PCache`).
        let st = unsafe { self.caches[p].get() };
        let before = st.cache.refills();
        let typed = if kind != 0 {
            match st.cache.alloc_typed(kind, size, header.to_word()) {
                Ok(p) => Some(p.as_ptr() as usize),
                // The typed arenas' reservation is used up (or the OS refused to commit an
                // arena of it): the object gets a header and a size-class slot instead.
                Err(crate::AllocError::OsRefused { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let addr = match typed {
            Some(addr) => addr,
            None => {
                let size = if kind != 0 { size + WORD } else { size };
                let slot = st.cache.alloc(size)?.as_ptr() as usize;
                // SAFETY: a fresh, zeroed slot of at least two words. Relaxed: the object
                // becomes visible to others only through a later store of its reference,
                // ordered by the collector's handshakes (and allocated black while marking, so
                // never scanned).
                unsafe { &*(slot as *const AtomicUsize) }
                    .store(header.to_word(), Ordering::Relaxed);
                slot + WORD
            }
        };
        let slow = st.cache.refills() != before;
        // Relaxed: see `Shared::barrier_on`.
        if slow && self.conc.barrier_on.load(Ordering::Relaxed) {
            let bytes = if size > crate::sizeclass::MAX_SMALL { size } else { 64 * size };
            self.assist(st, bytes);
        }
        Ok((addr, slow))
    }
}

const _: () = {
    const fn sync<T: Sync + Send>() {}
    sync::<Gc>();
    sync::<Global>();
    sync::<RefChan>();
};
