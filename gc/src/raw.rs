//! Trusted heap access for compiled code: [`RawMutator`] and its pinned sections ([`Pin`]).
//!
//! The [`Mutator`](crate::Mutator) checks every operation, because it cannot know what the
//! code around it does. An interpreter whose own frames are described by the stack maps its
//! compiler emitted needs the opposite: values in its registers (managed-stack slots) read and
//! written with plain loads and stores, objects allocated and their fields read and written
//! without a scope or type check per access, and the checks done once, by its compiler and
//! its own type tests. This module is that path.
//!
//! ## The contract
//!
//! * An interpreter runs its instructions inside [`RawMutator::enter`]: a pinned section
//!   ([`safepoint_sched::pinned`]) in which the goroutine keeps its P and nothing can stop it:
//!   no collection phase changes, no stack is scanned, no object is freed between two of its
//!   steps. So a reference it holds in a Rust variable there stays valid until the section
//!   ends; at the end, every reference it still needs must be in a slot that its frame's
//!   current safepoint map names (or in an object field or a [`Global`]).
//! * It leaves the section at every *safepoint*: a poll that finds a request
//!   ([`ManagedStack::poll`](safepoint_stackmap::ManagedStack::poll)), a push that needs the
//!   slow path ([`ManagedStack::try_push`](safepoint_stackmap::ManagedStack::try_push) said
//!   no), an allocation whose answer says "slow" (then [`RawMutator::after_slow_alloc`]), or
//!   anything that blocks. Before leaving, it records the frame's safepoint
//!   ([`ManagedStack::set_safepoint`](safepoint_stackmap::ManagedStack::set_safepoint)).
//! * Objects are read and written through the `unsafe` methods of [`Pin`], whose contract is
//!   that the object is live (it came from a slot, a field or a global, or was allocated in
//!   this section) and the word index is in its body. Values stored in tagged fields and
//!   slots are values of this heap's encoding ([`TagRule`]).
//! * Stores go through the write barrier ([`Pin::set_word`]), except where the section
//!   knows better: a fresh object's words need no shade of their old value
//!   ([`Pin::init_word`]), and a link between two objects allocated in the same section needs
//!   no barrier at all ([`Pin::init_link`]), because allocation cannot change colour inside a
//!   section.
//!
//! In the debugging modes (`gcpoison`, `gccheckmark`) every object access is also checked
//! against the heap (a real object, a known type, the index in range), so a compiler or
//! interpreter bug is a described panic there rather than a silent corruption. The
//! collector's marker checks every reference it is handed in every mode, so a bad value in a
//! slot kills the process with a description, never a scan of garbage.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use safepoint_sched::Pinned;
use safepoint_stackmap::ManagedStack;

use crate::collector::{Gc, GcError, Inner};
use crate::globals::Global;
use crate::mark::{body, header_in};
use crate::mutator::ACTIVE;
use crate::types::{Header, TagRule, TypeDesc, TypeId, WORD, WordKind, body_words, object_size};

/// The size and header of objects of one type and length, computed once
/// ([`RawMutator::shape`]) so that an allocation looks nothing up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    size: usize,
    pub(crate) header: Header,
    /// The typed kind its objects are allocated in (no header), or 0 (a header).
    kind: usize,
    /// Body words.
    body: usize,
    /// The collector it was made for (its unique id): a shape says how one heap lays out
    /// one registry's type, and means nothing to another.
    pub(crate) heap: u64,
    /// What its words are, for the checks of [`Section`](crate::Section) accesses.
    pub(crate) words: ShapeWords,
}

/// The word kinds of a [`Shape`]'s objects, in a form a field access checks with a shift and
/// a mask: records' first 64 words by bitmask (later words are looked up in the registry),
/// arrays by their element kind (`raw`: bit `i` set if word `i` is a `Raw` word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShapeWords {
    /// A record: bit `i` of `refs` (`tagged`) set if word `i` is a `Ref` (`Tagged`) word.
    Record { refs: u64, tagged: u64, raw: u64 },
    /// An array of `Ref` words.
    RefArray,
    /// An array of `Tagged` words.
    TaggedArray,
    /// An array of bytes (no words to read as values).
    Bytes,
}

impl Shape {
    /// The shape of an object of type `ty` with `len` elements (0 for a record) in `gc`'s
    /// heap.
    ///
    /// # Errors
    /// [`GcError::Type`] for an unknown type, a length given to a record or one too long;
    /// [`GcError::WrongKind`] for the weak handles' type ([`WEAK_TYPE_NAME`]), whose objects
    /// only the collector makes.
    ///
    /// [`WEAK_TYPE_NAME`]: crate::WEAK_TYPE_NAME
    ///
    /// ```
    /// use safepoint_gc::{Gc, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let vec = gc.types().register(TypeDesc::RefArray { name: "vec".into() }).unwrap();
    /// let s = Shape::new(&gc, vec, 5).unwrap(); // made once, used for every allocation
    /// assert_eq!(s.body_words(), 5);
    /// ```
    pub fn new(gc: &Gc, ty: TypeId, len: usize) -> Result<Shape, GcError> {
        Shape::of(&gc.inner, ty, len)
    }

    fn of(gc: &Inner, ty: TypeId, len: usize) -> Result<Shape, GcError> {
        let header = gc.types.header(ty, len)?;
        let desc = gc.types.get(ty).expect("header() checked the type");
        crate::weak::not_the_cells_type(desc)?;
        let full = object_size(desc, len)?;
        let (size, kind) = crate::mutator::alloc_plan(desc, header, full);
        let words = match desc {
            TypeDesc::Record { words, .. } => {
                let (mut refs, mut tagged, mut raw) = (0u64, 0u64, 0u64);
                for (i, k) in words.iter().take(64).enumerate() {
                    match k {
                        WordKind::Ref => refs |= 1 << i,
                        WordKind::Tagged => tagged |= 1 << i,
                        WordKind::Raw => raw |= 1 << i,
                        WordKind::Weak | WordKind::Ephemeron => {}
                    }
                }
                ShapeWords::Record { refs, tagged, raw }
            }
            TypeDesc::RefArray { .. } => ShapeWords::RefArray,
            TypeDesc::TaggedArray { .. } => ShapeWords::TaggedArray,
            TypeDesc::ByteArray { .. } => ShapeWords::Bytes,
        };
        Ok(Shape { size, header, kind, body: full / WORD - 1, heap: gc.id, words })
    }

    /// The shape of an array of this shape's type with `len` elements (bytes, for a byte
    /// array): no registry lookup.
    pub(crate) fn with_len(&self, len: usize) -> Result<Shape, GcError> {
        let body = match self.words {
            ShapeWords::Record { .. } => {
                return Err(crate::TypeError::RecordWithLength { len }.into());
            }
            // `len <= MAX_ARRAY_LEN < 2^40` once `new_array` accepts it: nothing overflows.
            ShapeWords::Bytes => len.div_ceil(WORD),
            ShapeWords::RefArray | ShapeWords::TaggedArray => len,
        };
        let header = Header::new_array(self.header.type_id(), len)?;
        let full = (body + 1) * WORD;
        // As `alloc_plan` for an array: a header, in a slot of at least two words.
        Ok(Shape { size: full.max(2 * WORD), header, kind: 0, body, ..*self })
    }

    /// Body words (the header excluded).
    ///
    /// ```
    /// use safepoint_gc::{Gc, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Ref],
    /// }).unwrap();
    /// assert_eq!(Shape::new(&gc, pair, 0).unwrap().body_words(), 2);
    /// assert!(Shape::new(&gc, pair, 3).is_err()); // a record has no length
    /// ```
    pub fn body_words(&self) -> usize {
        self.body
    }
}

/// A goroutine's trusted access to the heap, for compiled code that keeps its references in
/// frames described by its own stack maps (see the module documentation for the contract).
/// One per goroutine, exclusive with a [`Mutator`](crate::Mutator); bound to the goroutine
/// (neither `Send` nor `Sync`).
pub struct RawMutator {
    pub(crate) gc: Arc<Inner>,
    goid: u64,
    pub(crate) validate: bool,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for RawMutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawMutator(goroutine {})", self.goid)
    }
}

impl Drop for RawMutator {
    fn drop(&mut self) {
        if safepoint_sched::goroutine_id() == Some(self.goid) {
            ACTIVE.with(|a| a.set(false));
        }
    }
}

impl RawMutator {
    /// The running goroutine's raw mutator for `gc`.
    ///
    /// # Errors
    /// [`GcError::WrongRuntime`] off a goroutine of `gc`'s runtime;
    /// [`GcError::MutatorActive`] if this goroutine already has a mutator of either kind.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, Mutator, RawMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// assert!(matches!(RawMutator::new(&gc), Err(GcError::WrongRuntime))); // not on a goroutine
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let raw = RawMutator::new(&g).unwrap();
    ///     // One mutator of either kind per goroutine.
    ///     assert!(matches!(Mutator::new(&g), Err(GcError::MutatorActive)));
    ///     drop(raw);
    /// });
    /// ```
    pub fn new(gc: &Gc) -> Result<RawMutator, GcError> {
        if !gc.inner.rt.is_current() {
            return Err(GcError::WrongRuntime);
        }
        let goid = safepoint_sched::goroutine_id().ok_or(GcError::WrongRuntime)?;
        if ACTIVE.with(|a| a.replace(true)) {
            return Err(GcError::MutatorActive);
        }
        Ok(RawMutator {
            validate: gc.inner.config.poison || gc.inner.config.checkmark,
            gc: gc.inner.clone(),
            goid,
            _not_send: PhantomData,
        })
    }

    /// The collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// assert!(raw.gc().same(&gc));
    /// # });
    /// ```
    pub fn gc(&self) -> Gc {
        Gc { inner: self.gc.clone() }
    }

    /// The heap's value encoding.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// use safepoint_gc::TagRule;
    /// assert_eq!(raw.tag_rule(), TagRule::default()); // what the heap was built with
    /// # });
    /// ```
    pub fn tag_rule(&self) -> TagRule {
        self.gc.config.tag_rule
    }

    /// The shape of an object of type `ty` with `len` elements (0 for a record), as
    /// [`Shape::new`].
    ///
    /// # Errors
    /// [`GcError::Type`] for an unknown type, a length given to a record or one too long.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// assert_eq!(shape.body_words(), 2);
    /// assert!(raw.shape(cell, 1).is_err()); // a record has no length
    /// # });
    /// ```
    pub fn shape(&self, ty: TypeId, len: usize) -> Result<Shape, GcError> {
        Shape::of(&self.gc, ty, len)
    }

    /// Runs `f` pinned on this goroutine's P (see the module documentation): the one place
    /// compiled code touches the heap.
    ///
    /// # Errors
    /// [`GcError::WrongRuntime`] if called on another goroutine than the mutator's;
    /// [`GcError::NoP`] inside a blocking call (the goroutine has no P to allocate on).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// use safepoint_stackmap::{FuncDesc, Registry};
    ///
    /// // A function with one slot, live at safepoint 1.
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 2).refs_at(1, &[0])).unwrap();
    /// let rt = safepoint_sched::Runtime::builder().procs(1).registry(reg).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let cell = gc.types().register(TypeDesc::Record {
    ///     name: "cell".into(),
    ///     words: vec![WordKind::Raw, WordKind::Ref],
    /// }).unwrap();
    /// let g = gc.clone();
    /// let v = rt.block_on(move || {
    ///     let mut raw = RawMutator::new(&g).unwrap();
    ///     let shape = raw.shape(cell, 0).unwrap();
    ///     safepoint_sched::with_managed_stack(|ms| ms.push(f));
    ///     let slow = raw.enter(|p| {
    ///         let (c, slow) = p.alloc(shape).unwrap();
    ///         // SAFETY: `c` was allocated in this section; word 0 is in its body.
    ///         unsafe { p.init_word(c, 0, WordKind::Raw, 99) };
    ///         let ms = p.stack();
    ///         // SAFETY: `c` is a live object of this heap; slot 0 is a reference slot.
    ///         unsafe { ms.set(0, c) }; // kept in the frame's slot...
    ///         ms.set_safepoint(1);     // ...which the map of safepoint 1 names
    ///         slow
    ///     }).unwrap();
    ///     if slow {
    ///         raw.after_slow_alloc();
    ///     }
    ///     g.collect(); // the frame's map keeps the cell alive
    ///     // SAFETY: the slot holds a live cell (a root at safepoint 1).
    ///     let v = raw.enter(|p| unsafe { p.word(p.stack().get(0), 0) }).unwrap();
    ///     safepoint_sched::with_managed_stack(|ms| ms.pop());
    ///     v
    /// });
    /// assert_eq!(v, 99);
    /// ```
    #[inline]
    pub fn enter<R>(&mut self, f: impl FnOnce(&mut Pin<'_>) -> R) -> Result<R, GcError> {
        self.with_pin(|mut p| f(&mut p))
    }

    /// [`enter`](Self::enter) for the crate's safe layers, which take the section's [`Pin`]
    /// by value (and keep it from reaching a safepoint themselves).
    #[inline(always)]
    pub(crate) fn with_pin<R>(&self, f: impl FnOnce(Pin<'_>) -> R) -> Result<R, GcError> {
        // Not an `Option`: assigning one drops its old value first, so `f`'s result would be
        // built aside and copied in.
        let mut out = std::mem::MaybeUninit::<R>::uninit();
        match self.pin_into(|pin| {
            out.write(f(pin));
        }) {
            // SAFETY: `pin_into` answered `Ok`: the closure ran to its end and wrote `out`.
            Ok(()) => Ok(unsafe { out.assume_init() }),
            Err(refused) => Err(refused.error()),
        }
    }

    /// Runs `f` pinned (as [`with_pin`](Self::with_pin)), or says why it could not. `f`
    /// leaves its result in a variable of the caller's: a section's result (often a
    /// `Result` holding a [`GcError`], some 40 bytes) is then written once, where it is
    /// used, instead of being copied through each layer's `Option` and `Result` (copies
    /// that stalled the processor's store forwarding on every call of the per-call twins).
    #[inline(always)]
    pub(crate) fn pin_into(&self, f: impl FnOnce(Pin<'_>)) -> Result<(), PinRefused> {
        let gc = &*self.gc;
        let validate = self.validate;
        let r = safepoint_sched::pinned(self.goid, |pinned| match pinned.p() {
            Some(p) => {
                f(Pin { gc, p, pinned, validate, rule: gc.config.tag_rule, typed: gc.typed });
                true
            }
            None => false,
        });
        match r {
            Some(true) => Ok(()),
            Some(false) => Err(PinRefused::NoP),
            None => Err(PinRefused::WrongRuntime),
        }
    }

    /// The goroutine this mutator belongs to.
    pub(crate) fn goid(&self) -> u64 {
        self.goid
    }

    /// What an allocation that answered "slow" owes, outside the pinned section: starting a
    /// cycle when the heap reached its trigger, waiting while marking is far behind, and
    /// answering a pending stop, stack scan or end of time slice. A synchronous safepoint:
    /// the caller's frames must be described by their current maps.
    ///
    /// [`Pin::alloc`] never reaches a safepoint itself (a section may hold references in
    /// Rust variables), so this is where a goroutine that only allocates lets a cycle start
    /// and its P go: owed soon after each slow answer (at the latest at the next safepoint
    /// the code reaches anyway), or the heap grows past its goal unchecked.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// for _ in 0..10_000 {
    ///     let slow = raw.enter(|p| p.alloc(shape).unwrap().1).unwrap();
    ///     if slow {
    ///         raw.after_slow_alloc(); // a safepoint: a cycle may start here
    ///     }
    /// }
    /// # });
    /// ```
    pub fn after_slow_alloc(&mut self) {
        self.gc.alloc_safepoint();
    }

    /// Collects and finishes sweeping, for an allocation that failed with out-of-memory and
    /// will be tried once more: [`Gc::collect`] (which also gives free pages back to the OS).
    /// A safepoint, as [`after_slow_alloc`](Self::after_slow_alloc). Inside a blocking call
    /// the cycle runs on the collector's driver, as `Gc::collect` does there.
    ///
    /// # Panics
    /// As [`Gc::collect`]: inside a `no_preempt` section.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let c0 = gc.cycles();
    /// raw.collect_for_memory();
    /// assert!(gc.cycles() > c0);
    /// # });
    /// ```
    pub fn collect_for_memory(&mut self) {
        self.gc().collect();
    }
}

/// Why [`RawMutator::pin_into`] could not pin: one byte, made a [`GcError`] only on the
/// (cold) error path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PinRefused {
    /// Inside a blocking call: the goroutine has no P.
    NoP,
    /// Not the mutator's goroutine.
    WrongRuntime,
}

impl PinRefused {
    /// The error the public API returns for it.
    #[cold]
    #[inline(never)]
    pub(crate) fn error(self) -> GcError {
        match self {
            PinRefused::NoP => GcError::NoP,
            PinRefused::WrongRuntime => GcError::WrongRuntime,
        }
    }
}

/// A pinned section of a [`RawMutator`]: the goroutine's P, its managed stack, and the
/// heap operations (see the module documentation).
pub struct Pin<'a> {
    pub(crate) gc: &'a Inner,
    pub(crate) p: usize,
    pinned: &'a Pinned,
    pub(crate) validate: bool,
    /// The heap's tag rule and typed arenas, copied from `gc` for the section: every field
    /// access reads them, and a copy here is one load nearer.
    rule: TagRule,
    pub(crate) typed: crate::pageheap::TypedRange,
}

impl std::fmt::Debug for Pin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pin(P {})", self.p)
    }
}

impl<'a> Pin<'a> {
    /// The goroutine's managed stack, for the whole section. Its buffer stays put while the
    /// section runs: a push that would grow it (or `shrink`, `release`) is a described panic
    /// here, so pushes inside a section use the `try_` forms and leave the section for their
    /// slow path.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let depth = raw.enter(|p| p.stack().depth()).unwrap();
    /// assert_eq!(depth, 0); // no managed frame pushed yet
    /// # });
    /// ```
    #[inline]
    pub fn stack(&self) -> &'a ManagedStack {
        self.pinned.managed_stack()
    }

    /// The heap's value encoding.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let ok = raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     p.tag_rule().is_ref(obj) // what alloc returns is a reference in the heap's encoding
    /// }).unwrap();
    /// assert!(ok);
    /// # });
    /// ```
    #[inline(always)]
    pub fn tag_rule(&self) -> TagRule {
        self.rule
    }

    /// The shape of an object of type `ty` with `len` elements, as [`Shape::new`].
    ///
    /// # Errors
    /// As [`RawMutator::shape`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let n = raw.enter(|p| p.shape(cell, 0).unwrap().body_words()).unwrap();
    /// assert_eq!(n, 2);
    /// # });
    /// ```
    pub fn shape(&self, ty: TypeId, len: usize) -> Result<Shape, GcError> {
        Shape::of(self.gc, ty, len)
    }

    /// Allocates an object of `shape` (its body zeroed) and returns the reference (the
    /// address with the reference tag) and whether the allocation took a slow path: then the
    /// caller owes [`RawMutator::after_slow_alloc`] at its next safepoint, soon. The object is
    /// reachable only through what the caller does with the value before the section ends.
    ///
    /// # Errors
    /// [`GcError::Alloc`] when the heap is at its hard limit (collect with
    /// [`RawMutator::collect_for_memory`] outside the section and try once more);
    /// [`GcError::WrongHeap`] for a shape made for another collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (a, _slow) = p.alloc(shape).unwrap();
    ///     let (b, _) = p.alloc(shape).unwrap();
    ///     assert_ne!(a, b);
    ///     // SAFETY: both were allocated in this section; words 0 and 1 are in their bodies.
    ///     unsafe {
    ///         assert_eq!(p.word(a, 0), 0); // zeroed
    ///         p.init_link(a, 1, WordKind::Ref, b);
    ///     }
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn alloc(&mut self, shape: Shape) -> Result<(usize, bool), GcError> {
        if shape.heap != self.gc.id {
            return Err(GcError::WrongHeap);
        }
        let (addr, slow) = self.gc.alloc_on(self.p, shape.size, shape.header, shape.kind)?;
        Ok((addr | self.tag_rule().ref_tag, slow))
    }

    /// The object's address from a reference value, checked in the debugging modes.
    #[inline(always)]
    fn addr(&self, obj: usize) -> usize {
        let rule = self.tag_rule();
        if self.validate {
            self.check(obj, None);
        }
        obj & !rule.mask
    }

    /// The debugging modes' check that `obj` is a reference to a live object of this heap
    /// (and `index`, if any, a word of its body): a described panic otherwise. The work is
    /// out of line and takes the heap, not the section: a `Pin` whose address reached a call
    /// would have to be written to memory at every section's start.
    #[inline(always)]
    pub(crate) fn check(&self, obj: usize, index: Option<usize>) {
        check_in(self.gc, self.rule, self.typed, obj, index);
    }

    /// The header of the object `obj` references.
    ///
    /// # Safety
    /// `obj` is a reference (this heap's encoding) to a live object: one read from a slot, a
    /// field or a global, or allocated in this section.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: allocated in this section.
    ///     let h = unsafe { p.header(obj) };
    ///     assert_eq!(h.type_id(), cell);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub unsafe fn header(&self, obj: usize) -> Header {
        let addr = self.addr(obj);
        // SAFETY: per the contract, a live object.
        Header::from_word(unsafe { header_in(self.typed, addr) })
            .unwrap_or_else(|| panic!("safepoint: object at {addr:#x} has no header"))
    }

    /// Body word `i` of the object `obj` references, as stored (a tagged value, a raw word,
    /// or a plain address for a reference field).
    ///
    /// # Safety
    /// As [`header`](Self::header), and `i` is below the object's body words.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: allocated in this section; word 0 is in its body, never stored before.
    ///     unsafe {
    ///         p.init_word(obj, 0, WordKind::Raw, 7);
    ///         assert_eq!(p.word(obj, 0), 7);
    ///     }
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub unsafe fn word(&self, obj: usize, i: usize) -> usize {
        if self.validate {
            self.check(obj, Some(i));
        }
        let addr = obj & !self.tag_rule().mask;
        // SAFETY: per the contract, word `i` of a live object's body. Acquire: as in
        // `Mutator::load` (a reference read here is seen initialised).
        unsafe { body(addr, i + 1)[i].load(Ordering::Acquire) }
    }

    /// Stores `v` into body word `i` of the object `obj` references, a field of kind `kind`,
    /// through the write barrier (a raw word has none).
    ///
    /// # Safety
    /// As [`word`](Self::word); word `i` is of kind `kind`, and `v` is a value such a word
    /// may hold: for a tagged word, null, an immediate or a reference to a live object; for a
    /// reference word, 0 or the plain address of a live object; for a weak word, 0 or the
    /// plain address of a weak handle ([`weak`](Self::weak)), and not a new key into an
    /// ephemeron record whose old key is gone (its values died with it: store 0 into its
    /// ephemeron words first); for an ephemeron word, as for a tagged word.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (a, _) = p.alloc(shape).unwrap();
    ///     let (b, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: both live (allocated in this section); word 1 of `a` is its Ref word.
    ///     unsafe {
    ///         p.set_word(a, 1, WordKind::Ref, b); // through the write barrier
    ///         p.set_word(a, 1, WordKind::Ref, 0);
    ///         assert_eq!(p.word(a, 1), 0);
    ///     }
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub unsafe fn set_word(&mut self, obj: usize, i: usize, kind: WordKind, v: usize) {
        // SAFETY: the caller's contract is `field`'s.
        let w = unsafe { self.field(obj, i, kind, v) };
        if kind == WordKind::Raw {
            // Relaxed: as in `word`.
            w.store(v, Ordering::Relaxed);
        } else {
            self.gc.store_field(self.p, kind, w, v);
        }
    }

    /// Body word `i` of `obj`, about to be given `v` (a field of kind `kind`): both checked
    /// against the heap in the debugging modes.
    ///
    /// # Safety
    /// As [`set_word`](Self::set_word).
    #[inline(always)]
    unsafe fn field(&self, obj: usize, i: usize, kind: WordKind, v: usize) -> &AtomicUsize {
        if self.validate {
            self.check(obj, Some(i));
            if let Some(r) = crate::mark::ref_of(kind, self.tag_rule(), v) {
                self.check(r | self.tag_rule().ref_tag, None);
            }
        }
        let addr = obj & !self.tag_rule().mask;
        // SAFETY: per the contract, word `i` of a live object's body; heap words are atomics.
        unsafe { &body(addr, i + 1)[i] }
    }

    /// Initializes body word `i` of an object allocated in this section and not yet stored
    /// anywhere, as a compiler does for a fresh object's fields: like
    /// [`set_word`](Self::set_word), but the barrier shades only `v` (the word is known to
    /// hold null), so the store is all the word costs.
    ///
    /// # Safety
    /// As [`set_word`](Self::set_word), and `obj` was returned by [`alloc`](Self::alloc) in
    /// this section, and word `i` has not been stored since. (Stored since, the old value
    /// would go unshaded while marking: a reachable object could be freed.)
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: fresh from `alloc` in this section; word 0 not stored since.
    ///     unsafe { p.init_word(obj, 0, WordKind::Raw, 42) };
    ///     // SAFETY: as above.
    ///     assert_eq!(unsafe { p.word(obj, 0) }, 42);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub unsafe fn init_word(&mut self, obj: usize, i: usize, kind: WordKind, v: usize) {
        // SAFETY: the caller's contract includes `field`'s.
        let w = unsafe { self.field(obj, i, kind, v) };
        if self.validate {
            check_unstored("init_word", obj, i, w);
        }
        self.gc.init_field(self.p, kind, w, v);
    }

    /// Initializes body word `i` of an object allocated in this section with `v`, a reference
    /// to another object allocated in this section (or null): a plain store, no barrier at
    /// all. This is how compiled code links the nodes of a structure it builds between two
    /// safepoints.
    ///
    /// Why no barrier is needed: a P starts and stops allocating black only in the
    /// collector's handshakes, which it passes at safepoints, never inside a section. So
    /// while the collector marks, both objects were allocated black (marked, and a shade of
    /// `v` would do nothing). Otherwise both are white and marking cannot begin before this
    /// P has passed its next safepoint: the store makes no black object point at a white
    /// one, and the marker will find `v` through `obj` like any other white object.
    ///
    /// # Safety
    /// As [`init_word`](Self::init_word), and `v` is null or refers to an object allocated in
    /// this section (an older one could be white while `obj` is black: the collector would
    /// not see it through `obj`, and could free it). In the checking modes, a `v` that is not
    /// marked while this section allocates black is a described panic.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (head, _) = p.alloc(shape).unwrap();
    ///     let (next, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: both allocated in this section; word 1 of `head` not stored since.
    ///     unsafe { p.init_link(head, 1, WordKind::Ref, next) };
    ///     // SAFETY: as above. (A Ref word holds the plain address.)
    ///     let linked = unsafe { p.word(head, 1) };
    ///     assert_eq!(linked, next & !p.tag_rule().mask);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub unsafe fn init_link(&mut self, obj: usize, i: usize, kind: WordKind, v: usize) {
        // SAFETY: the caller's contract includes `field`'s.
        let w = unsafe { self.field(obj, i, kind, v) };
        if self.validate {
            self.check_link(obj, i, kind, w, v);
        }
        // Relaxed: as in `word`.
        w.store(v, Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn check_link(&self, obj: usize, i: usize, kind: WordKind, w: &AtomicUsize, v: usize) {
        check_unstored("init_link", obj, i, w);
        let Some(r) = crate::mark::ref_of(kind, self.tag_rule(), v) else { return };
        // SAFETY: the caller is P `p`'s goroutine, pinned (see `PCache`).
        let black = unsafe { self.gc.caches[self.p].get() }.cache.is_black();
        let marked = || {
            let span = self.gc.heap.find_span(r).expect("checked by `field`");
            span.ref_index(r).is_some_and(|idx| span.is_marked(idx))
        };
        if black && !marked() {
            panic!(
                "safepoint: init_link stored {v:#x} into word {i} of {obj:#x}, but {v:#x} was not \
                 allocated in this section (it is unmarked while this section allocates black)"
            );
        }
    }

    /// The bytes of the byte array `obj` references (its length from its header).
    ///
    /// # Safety
    /// As [`header`](Self::header), for a byte array; the slice is used only inside this
    /// section.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// use safepoint_gc::{Gc, RawMutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut raw = RawMutator::new(&g).unwrap();
    ///     let shape = raw.shape(text, 3).unwrap();
    ///     raw.enter(|p| {
    ///         let (s, _) = p.alloc(shape).unwrap();
    ///         // SAFETY: a byte array allocated in this section; the slice stays inside it.
    ///         let b = unsafe { p.bytes(s) };
    ///         assert_eq!(b.len(), 3);
    ///         b[0].store(b'x', Ordering::Relaxed);
    ///         assert_eq!(b[0].load(Ordering::Relaxed), b'x');
    ///     }).unwrap();
    /// });
    /// ```
    #[inline]
    pub unsafe fn bytes(&self, obj: usize) -> &[AtomicU8] {
        // SAFETY: per the contract.
        let len = unsafe { self.header(obj) }.len();
        let addr = obj & !self.tag_rule().mask;
        // SAFETY: a byte array of `len` bytes at its reference, live for the section (nothing
        // is freed while pinned). Heap bytes are only accessed atomically.
        unsafe { std::slice::from_raw_parts(addr as *const AtomicU8, len) }
    }

    /// [`bytes`](Self::bytes) given the header that [`header`](Self::header) read for `obj`:
    /// an interpreter that checks an object's type before it reads its bytes reads the
    /// header once.
    ///
    /// # Safety
    /// As [`bytes`](Self::bytes), and `h` is `obj`'s header.
    ///
    /// ```
    /// use safepoint_gc::{Gc, RawMutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut raw = RawMutator::new(&g).unwrap();
    ///     let shape = raw.shape(text, 5).unwrap();
    ///     raw.enter(|p| {
    ///         let (s, _) = p.alloc(shape).unwrap();
    ///         // SAFETY: a byte array allocated in this section; `h` is its header.
    ///         let h = unsafe { p.header(s) };
    ///         assert_eq!(h.type_id(), text);
    ///         // SAFETY: as above; the slice stays inside the section.
    ///         assert_eq!(unsafe { p.bytes_of(s, h) }.len(), 5);
    ///     }).unwrap();
    /// });
    /// ```
    #[inline(always)]
    pub unsafe fn bytes_of(&self, obj: usize, h: Header) -> &[AtomicU8] {
        let addr = obj & !self.tag_rule().mask;
        #[cfg(debug_assertions)]
        {
            // SAFETY: per the contract, a live object.
            let word = unsafe { header_in(self.typed, addr) };
            debug_assert_eq!(Some(h), Header::from_word(word), "bytes_of: not {obj:#x}'s header");
        }
        // SAFETY: as in `bytes`: a byte array of `h.len()` bytes (its header, the contract).
        unsafe { std::slice::from_raw_parts(addr as *const AtomicU8, h.len()) }
    }

    /// A new global root holding `v` (null, an immediate or a live reference), for a value
    /// that must outlive the section somewhere else than a slot (in flight to another
    /// goroutine, in a Rust structure).
    ///
    /// # Errors
    /// [`GcError::NotAReference`] if `v` has the reference tag but is not the reference of an
    /// object of this heap that the sweep will keep (never one, freed, or found unreachable by
    /// the last marking): kept in a global, it would be a root the marker cannot scan.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let global = raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     p.new_global(obj).unwrap() // a root that outlives the section
    /// }).unwrap();
    /// gc.collect();
    /// let v = raw.enter(|p| p.global(&global).unwrap()).unwrap();
    /// assert_ne!(v, 0);
    /// # });
    /// ```
    pub fn new_global(&self, v: usize) -> Result<Global, GcError> {
        self.check_value(v)?;
        Ok(Global::with_value_on(&self.gc_arc(), Some(self.p), v))
    }

    /// The check of a value that a safe method is about to make a root: null, an immediate,
    /// or the reference of an object no sweep of this cycle will free (exact here: no cycle
    /// can advance while the section runs). A page-map walk: for globals, which take a lock
    /// or a swap anyway, not for fields.
    fn check_value(&self, v: usize) -> Result<(), GcError> {
        let rule = self.tag_rule();
        if rule.is_ref(v) && !self.gc.heap.holds_live(v & !rule.mask) {
            return Err(GcError::NotAReference { found: v });
        }
        Ok(())
    }

    /// The value in global `g`.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a global of another collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// use safepoint_gc::Global;
    /// let global = Global::new(&gc);
    /// assert_eq!(raw.enter(|p| p.global(&global).unwrap()).unwrap(), 0); // null
    /// # });
    /// ```
    #[inline]
    pub fn global(&self, g: &Global) -> Result<usize, GcError> {
        if !std::ptr::eq(Arc::as_ptr(&g.gc), self.gc) {
            return Err(GcError::WrongHeap);
        }
        // Acquire: as in `word`.
        Ok(g.word().load(Ordering::Acquire))
    }

    /// Stores `v` (as for [`new_global`](Self::new_global)) into global `g`, through the
    /// write barrier.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a global of another collector;
    /// [`GcError::NotAReference`] for a `v` that [`new_global`](Self::new_global) refuses
    /// (the global is left as it was).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// use safepoint_gc::Global;
    /// let global = Global::new(&gc);
    /// raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     p.set_global(&global, obj).unwrap();
    ///     assert_eq!(p.global(&global).unwrap(), obj);
    ///     assert!(p.set_global(&global, obj + 8).is_err()); // not an object's reference
    /// }).unwrap();
    /// # });
    /// ```
    pub fn set_global(&mut self, g: &Global, v: usize) -> Result<(), GcError> {
        if !std::ptr::eq(Arc::as_ptr(&g.gc), self.gc) {
            return Err(GcError::WrongHeap);
        }
        self.check_value(v)?;
        // A swap, AcqRel, as in `Mutator::store_global`.
        let old = g.word().swap(v, Ordering::AcqRel);
        let kind = WordKind::Tagged;
        self.gc.write_barrier(Some(self.p), self.gc.ref_in(kind, old), self.gc.ref_in(kind, v));
        Ok(())
    }

    /// The weak handle (cell) of the object `obj` references, made on the first call for
    /// that object (see [`Mutator::weak`](crate::Mutator::weak)), as a reference value, and
    /// whether making it took an allocation slow path (then the caller owes
    /// [`RawMutator::after_slow_alloc`], as after [`alloc`](Self::alloc)).
    ///
    /// # Safety
    /// As [`header`](Self::header).
    ///
    /// # Errors
    /// [`GcError::Alloc`] if the cell cannot be allocated.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: `obj` was allocated in this section; `w` is its live weak handle.
    ///     unsafe {
    ///         let (w, _slow) = p.weak(obj).unwrap();
    ///         assert_eq!(p.weak(obj).unwrap().0, w); // one handle per object
    ///         assert_eq!(p.deref(w), obj);
    ///     }
    /// }).unwrap();
    /// # });
    /// ```
    pub unsafe fn weak(&mut self, obj: usize) -> Result<(usize, bool), GcError> {
        let addr = self.addr(obj);
        let (cell, slow) = self.gc.cell_of(self.p, addr)?;
        Ok((cell | self.tag_rule().ref_tag, slow))
    }

    /// Reads the weak handle `w`: the reference of its object while the object is
    /// reachable, 0 (null) once a collection has found it unreachable (see
    /// [`Mutator::deref`](crate::Mutator::deref)). While marking runs, the object returned is
    /// shaded, so it may be kept in a slot like any reference read from a field.
    ///
    /// # Safety
    /// `w` is a reference to a live weak handle (one [`weak`](Self::weak) returned, read
    /// from a slot, a field or a global).
    ///
    /// # Panics
    /// In the debugging modes, if `w` is not a weak handle.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let global = raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: allocated in this section.
    ///     let (w, _) = unsafe { p.weak(obj) }.unwrap();
    ///     p.new_global(w).unwrap() // keep the handle, not the object
    /// }).unwrap();
    /// gc.collect();
    /// // SAFETY: the global holds a live weak handle.
    /// let v = raw.enter(|p| unsafe { p.deref(p.global(&global).unwrap()) }).unwrap();
    /// assert_eq!(v, 0); // the object was unreachable: the handle reads null
    /// # });
    /// ```
    #[inline]
    pub unsafe fn deref(&mut self, w: usize) -> usize {
        if self.validate {
            self.check_cell(w);
        }
        let rule = self.tag_rule();
        match self.gc.deref_cell(Some(self.p), w & !rule.mask) {
            0 => 0,
            t => t | rule.ref_tag,
        }
    }

    /// Weak word `i` of the object `obj` references (a weak field, as compiled code reads
    /// one): the reference of the object its handle names, or 0 (null) if the word is null or
    /// the object has been found unreachable; shaded while marking, as [`deref`](Self::deref)
    /// does. One call for the field's load and the handle's read, as [`word`](Self::word) is
    /// for a reference field.
    ///
    /// # Safety
    /// As [`word`](Self::word), and word `i` is a weak word.
    ///
    /// # Panics
    /// In the debugging modes, if the word holds something else than a weak handle.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let holder = gc.types().register(TypeDesc::Record {
    ///     name: "holder".into(),
    ///     words: vec![WordKind::Weak],
    /// }).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let (hs, cs) = (raw.shape(holder, 0).unwrap(), raw.shape(cell, 0).unwrap());
    /// let global = raw.enter(|p| {
    ///     let (h, _) = p.alloc(hs).unwrap();
    ///     let (obj, _) = p.alloc(cs).unwrap();
    ///     // SAFETY: both allocated in this section; word 0 of `h` is a weak word.
    ///     unsafe {
    ///         assert_eq!(p.weak_word(h, 0), 0); // a null weak word reads null
    ///         let (w, _) = p.weak(obj).unwrap();
    ///         p.set_word(h, 0, WordKind::Weak, w & !p.tag_rule().mask);
    ///         assert_eq!(p.weak_word(h, 0), obj); // the object, while it is reachable
    ///     }
    ///     p.new_global(h).unwrap() // keep the holder, not the object
    /// }).unwrap();
    /// gc.collect();
    /// // SAFETY: the global holds the holder, whose word 0 is weak.
    /// let v = raw.enter(|p| unsafe { p.weak_word(p.global(&global).unwrap(), 0) }).unwrap();
    /// assert_eq!(v, 0); // the object was unreachable
    /// # });
    /// ```
    #[inline]
    pub unsafe fn weak_word(&mut self, obj: usize, i: usize) -> usize {
        if self.validate {
            // SAFETY: the caller's contract.
            return unsafe { self.weak_word_checked(obj, i) };
        }
        let rule = self.tag_rule();
        // SAFETY: per the contract, word `i` of a live object's body. Acquire: as in `word`
        // (the handle it names is seen initialised).
        let cell = unsafe { body(obj & !rule.mask, i + 1)[i].load(Ordering::Acquire) };
        if cell == 0 {
            return 0;
        }
        match self.gc.deref_cell(Some(self.p), cell) {
            0 => 0,
            t => t | rule.ref_tag,
        }
    }

    /// [`weak_word`](Self::weak_word) in the debugging modes: the object and the handle
    /// checked first.
    ///
    /// # Safety
    /// As [`weak_word`](Self::weak_word).
    #[cold]
    #[inline(never)]
    unsafe fn weak_word_checked(&mut self, obj: usize, i: usize) -> usize {
        self.check(obj, Some(i));
        let rule = self.tag_rule();
        // SAFETY: as in `weak_word`.
        let cell = unsafe { body(obj & !rule.mask, i + 1)[i].load(Ordering::Acquire) };
        if cell == 0 {
            return 0;
        }
        self.check_cell(cell | rule.ref_tag);
        match self.gc.deref_cell(Some(self.p), cell) {
            0 => 0,
            t => t | rule.ref_tag,
        }
    }

    /// The debugging modes' check that `w` is a reference to a weak handle (out of line, as
    /// [`check`](Self::check)).
    #[inline(always)]
    pub(crate) fn check_cell(&self, w: usize) {
        check_cell_in(self.gc, self.rule, self.typed, w);
    }

    /// Ephemeron word `i` of the record `obj` references: its value, or 0 (null) once the
    /// record's key is gone (a plain [`word`](Self::word) would return a dead value). While
    /// marking runs, the value returned is shaded.
    ///
    /// # Safety
    /// As [`word`](Self::word), and word `i` is an ephemeron word.
    ///
    /// ```
    /// use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let entry = gc.types().register(TypeDesc::Record {
    ///     name: "entry".into(),
    ///     words: vec![WordKind::Weak, WordKind::Ephemeron],
    /// }).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut raw = RawMutator::new(&g).unwrap();
    ///     let shape = raw.shape(entry, 0).unwrap();
    ///     raw.enter(|p| {
    ///         let (key, _) = p.alloc(shape).unwrap();
    ///         let (e, _) = p.alloc(shape).unwrap();
    ///         // SAFETY: all allocated in this section; word 0 of `e` is its Weak word and word 1
    ///         // its Ephemeron word, neither stored before.
    ///         unsafe {
    ///             let (w, _) = p.weak(key).unwrap();
    ///             p.init_word(e, 0, WordKind::Weak, w);
    ///             p.init_word(e, 1, WordKind::Ephemeron, 5 << 1); // an immediate value
    ///             assert_eq!(p.ephemeron_value(e, 1), 5 << 1); // the key lives: the value reads
    ///         }
    ///     }).unwrap();
    /// });
    /// ```
    pub unsafe fn ephemeron_value(&mut self, obj: usize, i: usize) -> usize {
        // SAFETY: the caller's contract is `word`'s.
        let v = unsafe { self.word(obj, i) };
        let addr = obj & !self.tag_rule().mask;
        // SAFETY: a live object (the contract).
        let word = unsafe { header_in(self.typed, addr) };
        let Some(desc) = Header::from_word(word).and_then(|h| self.gc.types.get(h.type_id()))
        else {
            panic!("safepoint: object at {addr:#x} has a corrupt header {word:#x}");
        };
        self.gc.ephemeron_value(Some(self.p), addr, desc, v)
    }

    /// Attaches a cleanup to the object `obj` references (see
    /// [`Mutator::add_cleanup`](crate::Mutator::add_cleanup)).
    ///
    /// # Safety
    /// As [`header`](Self::header).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, RawMutator, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let cell = gc.types().register(TypeDesc::Record {
    /// #     name: "cell".into(),
    /// #     words: vec![WordKind::Raw, WordKind::Ref],
    /// # }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut raw = RawMutator::new(&g).unwrap();
    /// # let shape = raw.shape(cell, 0).unwrap();
    /// let c = raw.enter(|p| {
    ///     let (obj, _) = p.alloc(shape).unwrap();
    ///     // SAFETY: allocated in this section.
    ///     unsafe { p.add_cleanup(obj, Box::new(|| ())) }
    /// }).unwrap();
    /// assert!(c.cancel());
    /// # });
    /// ```
    pub unsafe fn add_cleanup(
        &mut self,
        obj: usize,
        f: impl FnOnce() + Send + 'static,
    ) -> crate::Cleanup {
        let addr = self.addr(obj);
        self.gc_arc().add_cleanup_at(addr, Box::new(f))
    }

    fn gc_arc(&self) -> Arc<Inner> {
        self.gc.conc.me.get().and_then(std::sync::Weak::upgrade).expect("the collector is alive")
    }
}

const _: () = {
    const fn sync<T: Sync + Send>() {}
    sync::<Shape>();
};

/// [`Pin::check`]'s work.
#[cold]
#[inline(never)]
pub(crate) fn check_in(
    gc: &Inner,
    rule: TagRule,
    typed: crate::pageheap::TypedRange,
    obj: usize,
    index: Option<usize>,
) {
    let addr = obj & !rule.mask;
    if !rule.is_ref(obj) || !gc.heap.is_ref(addr) {
        panic!("safepoint: {obj:#x} is not a reference to a managed object (freed, or never one)");
    }
    // SAFETY: `addr` is an allocated object (just checked).
    let word = unsafe { header_in(typed, addr) };
    let desc = Header::from_word(word).and_then(|h| gc.types.get(h.type_id()).map(|d| (d, h)));
    let Some((desc, h)) = desc else {
        panic!("safepoint: object at {addr:#x} has a corrupt header {word:#x}");
    };
    let words = body_words(desc, h.len()).unwrap_or(0);
    if let Some(i) = index
        && i >= words
    {
        panic!("safepoint: word {i} of a {} object of {words} words (past its end)", desc.name());
    }
}

/// [`Pin::check_cell`]'s work: `w` is a reference to a weak handle of this heap.
#[cold]
#[inline(never)]
pub(crate) fn check_cell_in(
    gc: &Inner,
    rule: TagRule,
    typed: crate::pageheap::TypedRange,
    w: usize,
) {
    check_in(gc, rule, typed, w, None);
    if !gc.is_cell(w & !rule.mask) {
        panic!("safepoint: {w:#x} is not a weak handle");
    }
}

/// The checking modes' test that `op` (`init_word` or `init_link`) initializes word `i` of
/// `obj` before anything was stored there: a stored word's old value would go unshaded.
#[cold]
#[inline(never)]
fn check_unstored(op: &str, obj: usize, i: usize, w: &AtomicUsize) {
    // Relaxed: the word is in an object of this section, written only by this goroutine.
    if w.load(Ordering::Relaxed) != 0 {
        panic!("safepoint: {op} on word {i} of {obj:#x}, which was already stored");
    }
}
