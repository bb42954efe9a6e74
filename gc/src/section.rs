//! Safe heap access at the trusted path's speed: branded sections ([`SectionMutator`],
//! [`Section`], [`Value`], [`Ref`]).
//!
//! The [`RawMutator`] is fast because a pinned section cannot reach a safepoint, so nothing is
//! freed or moved while it runs and a reference may sit in a Rust variable; it is `unsafe`
//! because nothing stops such a reference from outliving its section, or a word from being
//! read as the wrong kind. This module keeps the first property and makes the second a type
//! error or a cheap check:
//!
//! * **The brand.** [`SectionMutator::enter`] runs a closure `for<'s> FnOnce(&mut Section<'s>)`.
//!   Every reference ([`Ref<'s>`]) and value ([`Value<'s>`]) the section hands out carries the
//!   section's lifetime `'s`, *invariant* (a `PhantomData<fn(&'s ()) -> &'s ()>`, the trick of
//!   gc-arena's `'gc`), and the closure must accept every `'s`. So the compiler refuses a value
//!   returned from the closure, kept in a variable or a `Vec` declared outside it, stored in a
//!   `static`, or moved into another goroutine (`go` wants `'static` and `Send`; values are
//!   neither): each would need `'s` to be a lifetime chosen outside the closure
//!   (`tests/ui/section_*.rs`). Values cannot be made from integers (their fields are private,
//!   and no constructor takes a word): a [`Ref`] comes only from an allocation or a load (a
//!   field, a slot of a section frame, a global), each of which yields a live object.
//! * **Cheap checks.** A field access names the [`Shape`] the caller expects (as compiled code
//!   knows its static types): the access compares the object's header word with the shape's
//!   (one load, one compare; for arrays the type bits, and the length from the header), checks
//!   the index against the body, and reads the word's kind from the shape's bitmasks (a shift
//!   and a mask). No registry lookup, no page-map walk. [`Section::fields`] reads several
//!   words of one object with one look at its header. Stores go through the write barrier;
//!   [`Section::alloc_init`] stores a fresh object's words with the initialising barrier
//!   (only the new value shaded), as [`Pin::init_word`](crate::Pin::init_word) does.
//! * **Frames and safepoints.** A section cannot reach a safepoint (the scheduler refuses to
//!   park, yield or be preempted while pinned, and the collector's own entry points refuse
//!   too), so it is left at each one: the closure returns, and the [`SectionMutator`] (which
//!   a running section borrows, so none of its `&mut self` methods can be called inside)
//!   pushes frames ([`push_frame`](SectionMutator::push_frame), a call's safepoint), polls
//!   ([`poll`](SectionMutator::poll)), and pays an allocation's slow path
//!   ([`enter`](SectionMutator::enter) does that itself after a section whose allocation
//!   answered "slow"). Between sections, references live in slots of *section frames*: sealed
//!   handle frames of the managed stack, every slot a tagged root, written only through
//!   [`Section::set_slot`] with branded values, so the collector never finds a raw word there
//!   and needs no stack map (and no function registry) to scan them.
//! * **Misuse is an error.** A section entered inside another ([`GcError::NestedSection`]), a
//!   slot past the top frame ([`GcError::SlotOutOfFrame`]), a slot access with no section
//!   frame on top ([`GcError::NoFrame`]), a shape of another heap ([`GcError::WrongHeap`]), an
//!   object of another type than the shape's or a word of another kind
//!   ([`GcError::WrongKind`]), an index past the body ([`GcError::OutOfBounds`]), a section
//!   off the mutator's goroutine ([`GcError::WrongRuntime`]) or inside a blocking call
//!   ([`GcError::NoP`]).
//!
//! * **Weak words, bytes and channels.** Weak handles ([`Section::weak`],
//!   [`Section::deref`]), weak and ephemeron words (through [`Section::get`] and
//!   [`Section::set`], as the checked [`Mutator`]'s `load` and `store`), byte arrays'
//!   contents ([`Section::bytes`], read in place with no copy, [`Section::write_bytes`],
//!   [`Section::alloc_bytes`], [`Section::alloc_bytes_concat`]), a weak word's identity
//!   without a read that keeps its object ([`Section::weak_id`], what a weakly keyed table
//!   hashes and compares) and channels of values: inside a section only what needs no wait
//!   ([`Section::try_send`], [`Section::try_recv`]), between sections the waiting kind, from
//!   and into frame slots ([`SectionMutator::send`], [`SectionMutator::recv`], safepoints).
//!   A weak handle's word is the collector's: no shape of the handles' type can be made.
//!
//! * **Frames with the embedder's maps.** A compiled function whose compiler emits precise
//!   maps pushes a *function frame* of its registered function
//!   ([`SectionMutator::push_func_frame`]) instead of a section frame, and records its
//!   safepoint ([`Section::set_safepoint`]) before it leaves a section. Its slots are read
//!   and written as a section frame's, and it is sealed as one (only the section API writes
//!   it, so every slot holds a tagged value, and the marker never takes a raw word for a
//!   reference, whatever the map calls the slot). The collector scans the slots the current
//!   map calls live and *clears* the others (to null, or to the embedder's own nil:
//!   [`GcBuilder::dead_slot_word`](crate::GcBuilder::dead_slot_word), [`Section::cleared`]):
//!   a wrong map (a live slot called dead) costs the program a nil where it expected its
//!   object, never a freed object
//!   (`tests/section.rs`, `a_wrong_stack_map_reads_nil_never_a_freed_object`). Why that
//!   suffices: a slot is read only inside a section, after the safepoint at which a scan saw
//!   it; that scan either kept its object (live in the map) or cleared it (dead), and an
//!   object stored there after the scan is kept by the cycle's write barrier and black
//!   allocation, as any value a goroutine holds.
//!
//! * **An interpreter's hot path.** An interpreter calls between two instructions, inside
//!   the section ([`Section::push_func_frame_with`], or [`Section::push_frame_with`] for a
//!   section frame; each answers `false` when the push needs its safepoint, to be taken
//!   outside), reads and writes its registers through a view of the top frame that checks
//!   only the index ([`Section::regs`], which borrows the section, so nothing that pushes,
//!   pops or allocates runs while the view lives), and makes immediates of its own encoding
//!   from words ([`Section::imm`], which refuses a word with the reference tag).
//!
//! [`RawMutator`]: crate::RawMutator
//! [`Mutator`]: crate::Mutator

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use safepoint_sched::{TryRecvError, TrySendError};
use safepoint_stackmap::{FuncId, MAX_FRAME_SLOTS, ManagedStack};

use crate::collector::{Gc, GcError, Inner};
use crate::globals::{Global, Msg, RefChan};
use crate::mark::{body, header_in};
use crate::mutator::Bytes;
use crate::raw::{Pin, RawMutator, Shape, ShapeWords};
use crate::types::{Header, ID_BITS, TagRule, TypeId, WordKind};

/// The brand: invariant in `'s` (so no value of one section passes for another's, or for a
/// longer-lived one), neither `Send` nor `Sync` (a value names its goroutine's section).
type Brand<'s> = PhantomData<(fn(&'s ()) -> &'s (), *const ())>;

const ID_MASK: usize = (1 << ID_BITS) - 1;

/// Why a field access failed, as the hot paths carry it: a small `Copy` value with nothing
/// to drop, turned into a [`GcError`] (which may own a type name) only on the way out.
#[derive(Clone, Copy, Debug)]
enum Fault {
    WrongHeap,
    /// The object's header word, which is not the shape's.
    NotOfShape(usize),
    OutOfBounds {
        index: usize,
        len: usize,
    },
    Kind(&'static str),
}

const BYTES: &str = "a byte array has no words to read";
const NOT_A_VALUE: &str = "a raw word holds no value (get_raw, set_raw)";
const IMMEDIATE_INTO_WEAK: &str = "an immediate stored into a weak word";
const NOT_BYTES: &str = "not a byte array";
const NOT_WEAK: &str = "not a weak word";

/// A value of the heap's tagged encoding ([`TagRule`]) inside the section `'s`: null, an
/// immediate integer, a reference, or another immediate (a flonum, with a tag rule that
/// leaves room for one). Read it with [`Section::as_ref`], [`Section::as_int`],
/// [`Section::as_f64`] or [`Value::is_nil`]. It cannot outlive its section, and cannot be
/// made from a word:
///
/// ```compile_fail
/// fn forge<'s>() -> safepoint_gc::Value<'s> {
///     safepoint_gc::Value { bits: 0x1000, _brand: std::marker::PhantomData }
/// }
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Value<'s> {
    bits: usize,
    _brand: Brand<'s>,
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Value({:#x})", self.bits)
    }
}

impl<'s> Value<'s> {
    #[inline(always)]
    fn from_bits(bits: usize) -> Value<'s> {
        Value { bits, _brand: PhantomData }
    }

    /// Null.
    ///
    /// ```
    /// use safepoint_gc::Value;
    /// assert!(Value::nil().is_nil());
    /// ```
    #[inline]
    pub fn nil() -> Value<'s> {
        Value::from_bits(0)
    }

    /// Whether the value is null.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     assert!(s.get(p, &shape, 0).unwrap().is_nil()); // a fresh object's words are null
    ///     assert!(!p.value().is_nil());
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn is_nil(self) -> bool {
        self.bits == 0
    }

    /// The value's word in the heap's tagged encoding, to test its tag or compute with an
    /// immediate the way an interpreter does (a word never becomes a value again except as an
    /// immediate, through [`Section::imm`]).
    ///
    /// ```
    /// use safepoint_gc::Value;
    /// assert_eq!(Value::nil().word(), 0);
    /// ```
    #[inline(always)]
    pub fn word(self) -> usize {
        self.bits
    }
}

/// A reference to a live object inside the section `'s`: made only by an allocation, or by a
/// load of a [`Value`] that holds one ([`Section::as_ref`]). Nothing it refers to can be freed
/// before the section ends, and it cannot outlive the section.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ref<'s> {
    /// The reference in the heap's encoding (the address with the reference tag).
    bits: usize,
    _brand: Brand<'s>,
}

impl std::fmt::Debug for Ref<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ref({:#x})", self.bits)
    }
}

impl<'s> Ref<'s> {
    /// The reference as a value (to store it, or keep it in a slot).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     assert_eq!(s.as_ref(p.value()), Some(p));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn value(self) -> Value<'s> {
        Value::from_bits(self.bits)
    }
}

impl<'s> From<Ref<'s>> for Value<'s> {
    #[inline]
    fn from(r: Ref<'s>) -> Value<'s> {
        r.value()
    }
}

/// The shift and tag of immediate integers under `rule`: `(n << shift) | tag`.
pub(crate) fn int_shape(rule: TagRule) -> (u32, usize) {
    let shift = usize::BITS - rule.mask.leading_zeros();
    let tag = (1..=7usize)
        .chain([0])
        .find(|&t| t & !rule.mask == 0 && t != rule.ref_tag)
        .expect("a tag rule leaves some immediate tag");
    (shift, tag)
}

/// A goroutine's safe access to the heap through branded sections (see the module
/// documentation). One per goroutine, exclusive with a [`Mutator`](crate::Mutator) or a
/// [`RawMutator`] (it is built on the latter), bound to its goroutine (neither `Send` nor
/// `Sync`):
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// fn f(m: safepoint_gc::SectionMutator) { send(m) }
/// ```
pub struct SectionMutator {
    raw: RawMutator,
    /// A section is running (refuses a nested one).
    active: Cell<bool>,
    enc: Enc,
}

/// The heap's value encoding, as the sections' accessors use it.
struct Enc {
    rule: TagRule,
    /// Immediate integers are `(n << int_shift) | int_tag`.
    int_shift: u32,
    int_tag: usize,
}

impl std::fmt::Debug for SectionMutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SectionMutator(goroutine {})", self.raw.goid())
    }
}

/// Clears the "section running" flag when a section ends, by return or by panic.
struct Active<'a>(&'a Cell<bool>);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl SectionMutator {
    /// The running goroutine's section mutator for `gc`.
    ///
    /// # Errors
    /// [`GcError::WrongRuntime`] off a goroutine of `gc`'s runtime;
    /// [`GcError::MutatorActive`] if this goroutine already has a mutator of any kind.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, Mutator, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// assert!(matches!(SectionMutator::new(&gc), Err(GcError::WrongRuntime))); // no goroutine
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let m = SectionMutator::new(&g).unwrap();
    ///     assert!(matches!(Mutator::new(&g), Err(GcError::MutatorActive)));
    ///     drop(m);
    /// });
    /// ```
    pub fn new(gc: &Gc) -> Result<SectionMutator, GcError> {
        let raw = RawMutator::new(gc)?;
        let rule = gc.inner.config.tag_rule;
        let (int_shift, int_tag) = int_shape(rule);
        Ok(SectionMutator { raw, active: Cell::new(false), enc: Enc { rule, int_shift, int_tag } })
    }

    /// The collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let m = SectionMutator::new(&g).unwrap();
    /// assert!(m.gc().same(&g));
    /// # });
    /// ```
    pub fn gc(&self) -> Gc {
        self.raw.gc()
    }

    /// The shape of an object of type `ty` with `len` elements (0 for a record), as
    /// [`Shape::new`].
    ///
    /// # Errors
    /// As [`Shape::new`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let vec = gc.types().register(TypeDesc::TaggedArray { name: "vec".into() }).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let m = SectionMutator::new(&g).unwrap();
    /// assert_eq!(m.shape(vec, 3).unwrap().body_words(), 3);
    /// # });
    /// ```
    pub fn shape(&self, ty: TypeId, len: usize) -> Result<Shape, GcError> {
        self.raw.shape(ty, len)
    }

    /// Runs `f` in a pinned section of this goroutine (see the module documentation): the
    /// one place the heap is read and written. Everything `f` gets from the section is
    /// branded with the section's lifetime and cannot leave it; what must survive goes into a
    /// slot of a section frame, an object's field or a [`Global`] before `f` returns. If an
    /// allocation in the section took the allocator's slow path, the safepoint it owes (a
    /// cycle may start, the goroutine may stop) is paid here, after the section.
    ///
    /// # Errors
    /// [`GcError::NestedSection`] inside another section of this goroutine;
    /// [`GcError::WrongRuntime`] on another goroutine than the mutator's; [`GcError::NoP`]
    /// inside a blocking call.
    ///
    /// ```
    /// use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let shape = Shape::new(&gc, pair, 0).unwrap();
    /// let g = gc.clone();
    /// let n = rt.block_on(move || {
    ///     let mut m = SectionMutator::new(&g).unwrap();
    ///     m.push_frame(1).unwrap(); // a frame of one slot: a root between sections
    ///     m.enter(|s| {
    ///         let forty_two = s.int(42).unwrap();
    ///         let inner = s.alloc_init(&shape, &[Value::nil(), forty_two]).unwrap();
    ///         let outer = s.alloc_init(&shape, &[inner.value()]).unwrap();
    ///         s.set_slot(0, outer.value()).unwrap();
    ///         // Sections do not nest.
    ///         assert_eq!(m.enter(|_| ()), Err(GcError::NestedSection));
    ///     }).unwrap();
    ///     m.collect(); // a safepoint between sections: the slot keeps both objects
    ///     let n = m.enter(|s| {
    ///         let outer = s.as_ref(s.slot(0).unwrap()).unwrap();
    ///         let inner = s.as_ref(s.get(outer, &shape, 0).unwrap()).unwrap();
    ///         s.as_int(s.get(inner, &shape, 1).unwrap())
    ///     }).unwrap();
    ///     m.pop_frame().unwrap();
    ///     n
    /// });
    /// # use safepoint_gc::Value;
    /// assert_eq!(n, Some(42));
    /// ```
    #[inline]
    pub fn enter<R>(&self, f: impl for<'s> FnOnce(&mut Section<'s>) -> R) -> Result<R, GcError> {
        if self.active.replace(true) {
            return Err(GcError::NestedSection);
        }
        let active = Active(&self.active);
        let enc = &self.enc;
        // The result is written once, here (see `RawMutator::pin_into`).
        // Not an `Option`: assigning one drops its old value first, so the closure's result
        // would be built aside and copied in.
        let mut out = std::mem::MaybeUninit::<R>::uninit();
        let mut slow = false;
        let pinned = self.raw.pin_into(|pin| {
            let mut s = Section { pin, enc, slow: false, _brand: PhantomData };
            out.write(f(&mut s));
            slow = s.slow;
        });
        drop(active);
        if let Err(refused) = pinned {
            return Err(refused.error());
        }
        // SAFETY: `pin_into` answered `Ok`, so the closure ran to its end: `out` is written.
        let r = unsafe { out.assume_init() };
        if slow {
            // Outside the pinned section: a synchronous safepoint.
            self.raw.gc.alloc_safepoint();
        }
        Ok(r)
    }

    /// Pushes a section frame of `slots` slots (null) on the goroutine's managed stack: the
    /// frame a compiled function's call makes, whose slots [`Section::slot`] and
    /// [`Section::set_slot`] read and write and the collector scans as roots (tagged) until
    /// it is popped. A safepoint (the push polls for a pending stop, and may grow the stack).
    ///
    /// # Errors
    /// [`GcError::OutOfBounds`] for more than [`MAX_FRAME_SLOTS`] slots;
    /// [`GcError::NoP`] inside a blocking call; [`GcError::WrongRuntime`] on another
    /// goroutine.
    ///
    /// # Panics
    /// As a managed-stack push: the stack past its limit is a described panic of the
    /// goroutine.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(3).unwrap();
    /// assert_eq!(m.enter(|s| s.frame_slots()).unwrap(), Ok(3));
    /// m.pop_frame().unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn push_frame(&mut self, slots: usize) -> Result<(), GcError> {
        if slots > MAX_FRAME_SLOTS {
            return Err(GcError::OutOfBounds { index: slots, len: MAX_FRAME_SLOTS });
        }
        // One lookup of the running goroutine, no pin: the push may take its slow path here
        // (growth, or a pending request answered: the safepoint), which a pinned section
        // refuses. The check that the goroutine is not in a blocking call is the pin's.
        let pushed = safepoint_sched::with_running_managed_stack_of(self.raw.goid(), |ms| {
            // SAFETY: the frame's slots are written only by `Section::set_slot` (and
            // `push_frame_args`), with values of this heap's encoding, and popped by
            // `pop_frame`.
            unsafe { ms.push_sealed_handles(slots) };
        });
        pushed.map_err(stack_refused)
    }

    /// Pushes a section frame of `slots` slots whose first `args.len()` slots are copies of
    /// the slots `args` names in the current top section frame (the caller's), the rest null:
    /// a call passing arguments. A safepoint, as [`push_frame`](Self::push_frame); the
    /// arguments stay alive through it in the caller's frame.
    ///
    /// # Errors
    /// As [`push_frame`](Self::push_frame); [`GcError::OutOfBounds`] for more arguments
    /// than slots; [`GcError::NoFrame`] (with arguments) if the top frame is not a section
    /// frame; [`GcError::SlotOutOfFrame`] for an argument past the caller's slots. Nothing is
    /// pushed then.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(2).unwrap(); // the caller: slot 1 holds 5
    /// m.enter(|s| s.set_slot(1, s.int(5).unwrap())).unwrap().unwrap();
    /// m.push_frame_args(1, &[1]).unwrap(); // the callee's slot 0 = the caller's slot 1
    /// assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(5));
    /// assert_eq!(m.push_frame_args(1, &[4]), Err(GcError::SlotOutOfFrame { index: 4, slots: 1 }));
    /// # });
    /// ```
    #[inline]
    pub fn push_frame_args(&mut self, slots: usize, args: &[usize]) -> Result<(), GcError> {
        if slots > MAX_FRAME_SLOTS || args.len() > slots {
            return Err(GcError::OutOfBounds { index: args.len().max(slots), len: slots });
        }
        // As in `push_frame`: one lookup, no pin. The caller's frame is checked before the
        // push, and its slots copied after it: positions (not addresses) survive the buffer's
        // moves, and the arguments stay alive through the push's safepoint in the caller's
        // frame, a root (a scan meanwhile finds the new frame's slots null).
        let pushed = safepoint_sched::with_running_managed_stack_of(self.raw.goid(), |ms| {
            let caller = caller_frame(ms, args)?;
            // SAFETY: as in `push_frame`; the copies are values of the caller's frame.
            let base = unsafe { ms.push_sealed_handles(slots) };
            copy_args(ms, caller, base, args);
            Ok(())
        });
        match pushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(None)) => Err(no_frame()),
            Ok(Err(Some((index, slots)))) => Err(out_of_frame(index, slots)),
            Err(r) => Err(stack_refused(r)),
        }
    }

    /// Pushes a *function frame* of `f` (a function of the runtime's registry, with its
    /// per-safepoint maps) on the goroutine's managed stack, its slots null, at safepoint 0:
    /// the frame a compiled function's call makes when its compiler emits precise maps.
    /// [`Section::slot`], [`Section::set_slot`] and [`Section::pop_frame`] work on it as on a
    /// section frame, and [`Section::set_safepoint`] records where the function stands. The
    /// collector scans the slots the current safepoint's map calls live (every one as a
    /// tagged value, whatever the map calls it: only the section API writes the frame), and
    /// *clears* the slots it calls dead: if the map is wrong and a dead slot still mattered,
    /// the section reads nil there after the scan, never an object the collector freed. A
    /// safepoint (as [`push_frame`](Self::push_frame)).
    ///
    /// # Errors
    /// [`GcError::UnknownFunction`] if the runtime's registry does not hold `f` (the runtime
    /// was built without one, or `f` is another registry's); [`GcError::NoP`] inside a
    /// blocking call; [`GcError::WrongRuntime`] on another goroutine.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_gc::{Gc, GcError, SectionMutator};
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Arc::new(Registry::new());
    /// // Two slots; at safepoint 1 only slot 1 is live.
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 2).tagged_at(0, &[0, 1]).tagged_at(1, &[1]))
    ///     .unwrap();
    /// let rt = safepoint_sched::Runtime::builder().procs(1).registry(reg).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = SectionMutator::new(&g).unwrap();
    ///     m.push_func_frame(f).unwrap();
    ///     m.enter(|s| {
    ///         s.set_slot(0, s.int(1).unwrap()).unwrap();
    ///         s.set_slot(1, s.int(2).unwrap()).unwrap();
    ///         s.set_safepoint(1).unwrap(); // slot 0 is dead from here on
    ///     }).unwrap();
    ///     m.collect(); // the scan clears the dead slot
    ///     let (dead, live) = m
    ///         .enter(|s| (s.slot(0).unwrap().is_nil(), s.as_int(s.slot(1).unwrap())))
    ///         .unwrap();
    ///     assert!(dead);
    ///     assert_eq!(live, Some(2));
    ///     m.pop_frame().unwrap();
    /// });
    /// ```
    pub fn push_func_frame(&mut self, f: FuncId) -> Result<(), GcError> {
        if self.raw.gc.reg.get(f).is_none() {
            return Err(GcError::UnknownFunction { index: f.index() });
        }
        let fast = self.raw.with_pin(|pin| {
            // SAFETY: the frame's slots are written only by `Section::set_slot` (and
            // `push_frame_args`), with values of this heap's encoding, and popped by
            // `pop_frame`; `f` is a function of the registry the collector scans it by (just
            // checked). `try_push_sealed` never reaches a safepoint, so it may run pinned.
            unsafe { pin.stack().try_push_sealed(f) }
        })?;
        if !fast {
            // The slow path (growth, or a pending request answered here), unpinned.
            safepoint_sched::with_managed_stack_of(self.raw.goid(), |ms| {
                // SAFETY: as for the fast push above.
                unsafe { ms.push_sealed(f) };
            })
            .ok_or(GcError::WrongRuntime)?;
        }
        Ok(())
    }

    /// Pops the top section frame (the return of the call that pushed it).
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section frame;
    /// [`GcError::WrongRuntime`] on another goroutine.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.pop_frame().unwrap();
    /// assert_eq!(m.pop_frame(), Err(GcError::NoFrame)); // nothing left to pop
    /// # });
    /// ```
    #[inline]
    pub fn pop_frame(&mut self) -> Result<(), GcError> {
        // No P needed (as a `Mutator` scope's end pops): a pop only lowers the stack's top,
        // and a collector scanning the stack meanwhile reads roots either way.
        match safepoint_sched::with_managed_stack_of(self.raw.goid(), pop_section_frame) {
            Some(r) => r,
            None => Err(GcError::WrongRuntime),
        }
    }

    /// A safepoint poll, for a loop's back-edge between sections: answers a pending stop,
    /// stack scan or end of time slice.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// for _ in 0..1000 {
    ///     m.enter(|_s| { /* one iteration's heap work */ }).unwrap();
    ///     m.poll(); // the back-edge
    /// }
    /// # });
    /// ```
    #[inline]
    pub fn poll(&mut self) {
        safepoint_sched::poll();
    }

    /// A full collection ([`Gc::collect`]), at a safepoint between sections: what to do after
    /// an allocation failed with [`GcError::Alloc`] before trying once more.
    ///
    /// # Panics
    /// As [`Gc::collect`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// let c0 = g.cycles();
    /// m.collect();
    /// assert!(g.cycles() > c0);
    /// # });
    /// ```
    pub fn collect(&mut self) {
        self.raw.collect_for_memory();
    }

    /// Sends the value in slot `slot` of the top section frame on `ch`, waiting for room (a
    /// safepoint, as [`Mutator::send`](crate::Mutator::send)): the channel operation a
    /// section leaves for, after [`Section::try_send`] answered `false`. The value stays
    /// alive while in flight.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a channel of another collector; [`GcError::Closed`] if the
    /// channel is closed when the send starts (one closed while the send waits panics, as a
    /// Go send does); [`GcError::NoFrame`], [`GcError::SlotOutOfFrame`] as
    /// [`Section::slot`]; [`GcError::NoP`] inside a blocking call.
    ///
    /// ```
    /// use safepoint_gc::{Gc, RefChan, SectionMutator, Shape, TypeDesc, Value, WordKind};
    /// use safepoint_sched::go;
    /// let rt = safepoint_sched::Runtime::builder().procs(2).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let pair = gc.types().register(TypeDesc::Record {
    ///     name: "pair".into(),
    ///     words: vec![WordKind::Ref, WordKind::Tagged],
    /// }).unwrap();
    /// let shape = Shape::new(&gc, pair, 0).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let ch = RefChan::new(&g, 0); // unbuffered: every send waits for its receiver
    ///     let (g2, tx) = (g.clone(), ch.clone());
    ///     go(move || {
    ///         let mut m = SectionMutator::new(&g2).unwrap();
    ///         m.push_frame(1).unwrap();
    ///         m.enter(|s| {
    ///             let p = s.alloc_init(&shape, &[Value::nil(), s.int(5).unwrap()]).unwrap();
    ///             s.set_slot(0, p.value()).unwrap();
    ///         }).unwrap();
    ///         m.send(&tx, 0).unwrap(); // alive while in flight
    ///         tx.close();
    ///     });
    ///     let mut m = SectionMutator::new(&g).unwrap();
    ///     m.push_frame(1).unwrap();
    ///     assert!(m.recv(&ch, 0).unwrap());
    ///     let n = m.enter(|s| {
    ///         let p = s.as_ref(s.slot(0).unwrap()).unwrap();
    ///         s.as_int(s.get(p, &shape, 1).unwrap())
    ///     }).unwrap();
    ///     assert_eq!(n, Some(5));
    ///     assert!(!m.recv(&ch, 0).unwrap()); // closed and drained
    /// });
    /// ```
    pub fn send(&mut self, ch: &RefChan, slot: usize) -> Result<(), GcError> {
        if !Arc::ptr_eq(&ch.chan.gc, &self.raw.gc) {
            return Err(GcError::WrongHeap);
        }
        if ch.chan.chan.is_closed() {
            return Err(GcError::Closed);
        }
        // A reference goes in a root slot of this P, pinned (see the `globals` module); the
        // send itself may park, unpinned.
        let msg = self.raw.with_pin(|pin| -> Result<Msg, GcError> {
            let ms = pin.stack();
            let at = frame_slot(ms, slot)?;
            Ok(ch.chan.message(pin.p, ms.get_at(at)))
        })??;
        ch.chan.chan.send(msg);
        Ok(())
    }

    /// Receives a value from `ch` into slot `slot` of the top section frame, waiting for one
    /// (a safepoint): the channel operation a section leaves for, after
    /// [`Section::try_recv`] found nothing. `Ok(false)` (and nil in the slot) once the
    /// channel is closed and drained.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a channel of another collector; [`GcError::NoFrame`],
    /// [`GcError::SlotOutOfFrame`] as [`Section::slot`] (checked before the wait);
    /// [`GcError::NoP`] inside a blocking call.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// use safepoint_gc::RefChan;
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// let ch = RefChan::new(&g, 1);
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| s.try_send(&ch, s.int(3).unwrap())).unwrap().unwrap();
    /// assert_eq!(m.recv(&ch, 1), Err(GcError::SlotOutOfFrame { index: 1, slots: 1 }));
    /// assert!(m.recv(&ch, 0).unwrap());
    /// assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(3));
    /// # });
    /// ```
    pub fn recv(&mut self, ch: &RefChan, slot: usize) -> Result<bool, GcError> {
        if !Arc::ptr_eq(&ch.chan.gc, &self.raw.gc) {
            return Err(GcError::WrongHeap);
        }
        // The slot first (and a P: no waiting inside a blocking call).
        self.raw.with_pin(|pin| frame_slot(pin.stack(), slot))??;
        let msg = ch.chan.chan.recv().ok();
        self.raw.with_pin(|pin| {
            let ms = pin.stack();
            let at = frame_slot(ms, slot)?;
            // The value goes to the slot and its root slot is released in one pinned section:
            // it is never only in a Rust variable at a safepoint. (On an error, `msg` is
            // dropped and releases its root.)
            let (v, got) = match msg {
                Some(msg) => (msg.take(pin.p), true),
                None => (0, false),
            };
            // SAFETY: `at` is a slot of the top section frame (just checked), which this
            // mutator owns; `v` is null or a value of this heap's encoding that was a root
            // (in flight) until now.
            unsafe { ms.set_at(at, v) };
            Ok(got)
        })?
    }
}

/// The position of the top section frame's slot 0, if every slot `args` names is in it;
/// `Err(None)` if the top frame is not a section frame, `Err(Some((index, slots)))` for an
/// argument past its slots.
#[inline(always)]
fn caller_frame(ms: &ManagedStack, args: &[usize]) -> Result<usize, Option<(usize, usize)>> {
    if args.is_empty() {
        return Ok(0);
    }
    let Some((base, n)) = ms.sealed_top() else { return Err(None) };
    match args.iter().find(|&&i| i >= n) {
        Some(&index) => Err(Some((index, n))),
        None => Ok(base),
    }
}

/// The position of slot `i` of the top section frame.
#[inline(always)]
fn frame_slot(ms: &ManagedStack, i: usize) -> Result<usize, GcError> {
    let Some((base, n)) = ms.sealed_top() else { return Err(no_frame()) };
    if i >= n {
        return Err(out_of_frame(i, n));
    }
    Ok(base + i)
}

/// Copies the caller's slots `args` (its frame at `caller`) into the new frame at `base`.
#[inline(always)]
fn copy_args(ms: &ManagedStack, caller: usize, base: usize, args: &[usize]) {
    for (j, &i) in args.iter().enumerate() {
        // SAFETY: `base + j` is a slot of the section frame just pushed (`j < slots`), and
        // the value is one of the caller's section frame's, which hold only values the
        // section API wrote (null, immediates, live references: a root until now).
        unsafe { ms.set_at(base + j, ms.get_at(caller + i)) };
    }
}

/// Pops the top frame if it is a section frame.
#[inline(always)]
fn pop_section_frame(ms: &ManagedStack) -> Result<(), GcError> {
    if !ms.pop_sealed() {
        return Err(no_frame());
    }
    Ok(())
}

/// The error for a push refused by [`safepoint_sched::with_running_managed_stack_of`].
#[cold]
#[inline(never)]
fn stack_refused(r: safepoint_sched::StackRefused) -> GcError {
    match r {
        safepoint_sched::StackRefused::OtherGoroutine => GcError::WrongRuntime,
        safepoint_sched::StackRefused::Blocking => GcError::NoP,
    }
}

#[cold]
#[inline(never)]
fn no_frame() -> GcError {
    GcError::NoFrame
}

#[cold]
#[inline(never)]
fn out_of_frame(index: usize, slots: usize) -> GcError {
    GcError::SlotOutOfFrame { index, slots }
}

/// What the sections' out-of-line paths need of a section, by value (see
/// [`Section::record_kind`]).
#[derive(Clone, Copy)]
struct Cold<'a> {
    gc: &'a Inner,
    rule: TagRule,
    typed: crate::pageheap::TypedRange,
    validate: bool,
}

/// Word `i`'s kind from the registry: past the shape's first 64 words, or neither a
/// reference, tagged nor raw word.
#[cold]
#[inline(never)]
fn record_kind_in(gc: &Inner, shape: &Shape, i: usize) -> Result<WordKind, Fault> {
    let types = &gc.types;
    match types.get(types.bind(shape.header.type_id())) {
        Some(crate::TypeDesc::Record { words, .. }) => {
            words.get(i).copied().ok_or(Fault::OutOfBounds { index: i, len: words.len() })
        }
        _ => Err(Fault::Kind("not a record")),
    }
}

/// The error for `f`, met on an access with `shape`.
#[cold]
#[inline(never)]
fn raise_in(gc: &Inner, f: Fault, shape: &Shape) -> GcError {
    match f {
        Fault::WrongHeap => GcError::WrongHeap,
        Fault::OutOfBounds { index, len } => GcError::OutOfBounds { index, len },
        Fault::Kind(what) => wrong_kind_in(gc, shape, what),
        Fault::NotOfShape(hw) => not_of_shape_in(gc, hw),
    }
}

#[cold]
#[inline(never)]
fn wrong_kind_in(gc: &Inner, shape: &Shape, what: &'static str) -> GcError {
    let types = &gc.types;
    let type_name = types
        .get(types.bind(shape.header.type_id()))
        .map_or_else(|| "?".to_string(), |d| d.name().to_string());
    GcError::WrongKind { type_name, what }
}

#[cold]
#[inline(never)]
fn not_of_shape_in(gc: &Inner, hw: usize) -> GcError {
    let types = &gc.types;
    let found = Header::from_word(hw)
        .and_then(|h| types.get(types.bind(h.type_id())))
        .map_or_else(|| "?".to_string(), |d| d.name().to_string());
    GcError::WrongKind { type_name: found, what: "an object of another type than the shape's" }
}

/// What a weak or ephemeron word of the object `obj` (a reference) that holds `v` reads, as
/// a word of the heap's encoding (see [`Section::get`]), for the goroutine pinned on P `p`.
#[cold]
#[inline(never)]
fn get_weak_in(cx: Cold<'_>, p: usize, obj: usize, kind: WordKind, v: usize) -> usize {
    let (gc, rule) = (cx.gc, cx.rule);
    if kind == WordKind::Ephemeron {
        // SAFETY: as in `Section::word_of`: `obj` is a live object of this heap.
        let hw = unsafe { header_in(cx.typed, obj & !rule.mask) };
        let desc = Header::from_word(hw)
            .and_then(|h| gc.types.get(gc.types.bind(h.type_id())))
            .unwrap_or_else(|| {
                panic!("safepoint: object at {obj:#x} has a type its heap does not know")
            });
        return gc.ephemeron_value(Some(p), obj & !rule.mask, desc, v);
    }
    if v == 0 {
        return 0;
    }
    if cx.validate {
        crate::raw::check_cell_in(gc, rule, cx.typed, v | rule.ref_tag);
    }
    match gc.deref_cell(Some(p), v) {
        0 => 0,
        t => t | rule.ref_tag,
    }
}

/// The slots of the top section frame, borrowed from a running section ([`Section::regs`]):
/// an interpreter's register file, each access one bounds check. Writes take branded values
/// only, so the frame holds tagged values and nothing else, as through
/// [`Section::set_slot`].
#[derive(Clone, Copy)]
pub struct Regs<'a, 's> {
    slots: &'a [AtomicUsize],
    _brand: Brand<'s>,
}

impl std::fmt::Debug for Regs<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Regs({} slots)", self.slots.len())
    }
}

impl<'a, 's> Regs<'a, 's> {
    /// The number of slots.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(3).unwrap();
    /// assert_eq!(m.enter(|s| s.regs().unwrap().len()).unwrap(), 3);
    /// # });
    /// ```
    #[inline(always)]
    #[allow(clippy::len_without_is_empty)] // a frame's size, not a collection
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slot `i`.
    ///
    /// # Errors
    /// [`GcError::SlotOutOfFrame`] for `i` past the frame.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| {
    ///     let r = s.regs().unwrap();
    ///     assert!(r.get(0).unwrap().is_nil()); // a fresh frame's slots are nil
    ///     assert_eq!(r.get(1), Err(GcError::SlotOutOfFrame { index: 1, slots: 1 }));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn get(&self, i: usize) -> Result<Value<'s>, GcError> {
        match self.slots.get(i) {
            Some(w) => Ok(Value::from_bits(w.load(Ordering::Relaxed))),
            None => Err(out_of_frame(i, self.slots.len())),
        }
    }

    /// Writes slot `i`: `v` stays alive (a root) while it is there.
    ///
    /// # Errors
    /// [`GcError::SlotOutOfFrame`] for `i` past the frame.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| {
    ///     let r = s.regs().unwrap();
    ///     r.set(0, s.int(7).unwrap()).unwrap();
    ///     assert!(r.set(1, s.int(8).unwrap()).is_err()); // past the frame: nothing written
    /// }).unwrap();
    /// // Between sections the value stays in its slot.
    /// assert_eq!(m.enter(|s| s.as_int(s.regs().unwrap().get(0).unwrap())).unwrap(), Some(7));
    /// # });
    /// ```
    #[inline(always)]
    pub fn set(&self, i: usize, v: Value<'s>) -> Result<(), GcError> {
        match self.slots.get(i) {
            // Relaxed, as the managed stack's own slot stores (`ManagedStack::set_at`): the
            // owner alone writes them, and a scan reads them at a safepoint, which a section
            // never reaches (the stop orders the two).
            Some(w) => {
                w.store(v.bits, Ordering::Relaxed);
                Ok(())
            }
            None => Err(out_of_frame(i, self.slots.len())),
        }
    }
}

/// A running section of a [`SectionMutator`] (see the module documentation): the heap's
/// operations, on values branded with the section's lifetime `'s`.
pub struct Section<'s> {
    pin: Pin<'s>,
    enc: &'s Enc,
    /// An allocation took the slow path: the section's end owes a safepoint.
    slow: bool,
    _brand: Brand<'s>,
}

impl std::fmt::Debug for Section<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Section(P {})", self.pin.p)
    }
}

impl<'s> Section<'s> {
    // ---- values ----

    /// The immediate integer `n`.
    ///
    /// # Errors
    /// [`GcError::IntegerOutOfRange`] if `n` needs more bits than an immediate has (63 with
    /// the default tag rule).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let v = s.int(-7).unwrap();
    ///     assert_eq!(s.as_int(v), Some(-7));
    ///     assert!(matches!(s.int(i64::MAX), Err(GcError::IntegerOutOfRange { .. })));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn int(&self, n: i64) -> Result<Value<'s>, GcError> {
        let w = ((n as usize) << self.enc.int_shift) | self.enc.int_tag;
        if ((w as i64) >> self.enc.int_shift) != n || w == 0 {
            return Err(GcError::IntegerOutOfRange { value: n });
        }
        Ok(Value::from_bits(w))
    }

    /// The integer `v` holds, if it is an immediate integer.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Value};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     assert_eq!(s.as_int(s.int(5).unwrap()), Some(5));
    ///     assert_eq!(s.as_int(Value::nil()), None);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn as_int(&self, v: Value<'s>) -> Option<i64> {
        (v.bits != 0 && v.bits & self.enc.rule.mask == self.enc.int_tag)
            .then(|| (v.bits as i64) >> self.enc.int_shift)
    }

    /// The reference `v` holds, if it holds one.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     assert_eq!(s.as_ref(p.value()), Some(p));
    ///     assert_eq!(s.as_ref(s.int(1).unwrap()), None);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn as_ref(&self, v: Value<'s>) -> Option<Ref<'s>> {
        self.enc.rule.is_ref(v.bits).then_some(Ref { bits: v.bits, _brand: PhantomData })
    }

    /// The immediate `w`, a word of the heap's tagged encoding that is not a reference (an
    /// integer, a flonum, or another immediate of the embedder's encoding: its own nil or
    /// booleans); `None` for a word the tag rule calls a reference (a reference comes only
    /// from an allocation or a load). For an embedder whose encoding of immediates is its own
    /// (its integers' tag, its constants), with the tag rule the collector knows.
    ///
    /// ```
    /// use safepoint_gc::{Gc, SectionMutator, TagRule};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// // Integers `n << 2` (tag 00), references tag 01, nil the word 2.
    /// let gc = Gc::builder().tag_rule(TagRule { mask: 3, ref_tag: 1 }).build(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let m = SectionMutator::new(&g).unwrap();
    ///     m.enter(|s| {
    ///         let seven = s.imm(7 << 2).unwrap();
    ///         assert_eq!(seven.word() >> 2, 7);
    ///         assert!(s.as_ref(s.imm(2).unwrap()).is_none());
    ///         assert!(s.imm(0x1001).is_none()); // a reference's tag: not from a word
    ///     }).unwrap();
    /// });
    /// ```
    #[inline(always)]
    pub fn imm(&self, w: usize) -> Option<Value<'s>> {
        (!self.enc.rule.is_ref(w)).then_some(Value::from_bits(w))
    }

    /// The value a frame slot reads after a collection cleared it because the frame's current
    /// stack map called it dead: null, or the embedder's own word for it
    /// ([`GcBuilder::dead_slot_word`](crate::GcBuilder::dead_slot_word), its nil, say). A
    /// wrong map (a slot still in use called dead) shows as this value, never as a freed
    /// object.
    ///
    /// ```
    /// use safepoint_gc::{Gc, SectionMutator, TagRule};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let rule = TagRule { mask: 3, ref_tag: 1 }; // nil is the word 2
    /// let gc = Gc::builder().tag_rule(rule).dead_slot_word(2).build(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let m = SectionMutator::new(&g).unwrap();
    ///     m.enter(|s| assert_eq!(s.cleared().word(), 2)).unwrap();
    /// });
    /// ```
    #[inline]
    pub fn cleared(&self) -> Value<'s> {
        Value::from_bits(self.pin.gc.config.dead_slot_word)
    }

    /// Whether the heap's tag rule leaves room for immediate doubles ([`crate::flonum`]): its
    /// mask covers the low two bits and its reference tag is not `11` there.
    fn flonums(&self) -> bool {
        self.enc.rule.mask & crate::flonum::TAG_MASK == crate::flonum::TAG_MASK
            && self.enc.rule.ref_tag & crate::flonum::TAG_MASK != crate::flonum::TAG
    }

    /// The double `x` as an immediate ([`crate::flonum`]), if the heap's tag rule has room
    /// for flonums (a mask covering the low two bits, references not tagged `11`) and `x` is
    /// encodable; `None` otherwise (box it in an object).
    ///
    /// ```
    /// use safepoint_gc::{Gc, SectionMutator, TagRule};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let rule = TagRule { mask: 3, ref_tag: 1 };
    /// let gc = Gc::builder().tag_rule(rule).build(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let m = SectionMutator::new(&g).unwrap();
    ///     m.enter(|s| {
    ///         let v = s.float(1.5).unwrap();
    ///         assert_eq!(s.as_f64(v), Some(1.5));
    ///         assert_eq!(s.as_int(v), None);
    ///     }).unwrap();
    /// });
    /// ```
    #[inline]
    pub fn float(&self, x: f64) -> Option<Value<'s>> {
        if !self.flonums() {
            return None;
        }
        crate::flonum::encode(x).map(Value::from_bits)
    }

    /// The double `v` holds, if it is an immediate double (see [`float`](Self::float)).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     // The default tag rule (low bit) has no room for flonums.
    ///     assert_eq!(s.float(1.5), None);
    ///     assert_eq!(s.as_f64(s.int(3).unwrap()), None);
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn as_f64(&self, v: Value<'s>) -> Option<f64> {
        (self.flonums() && crate::flonum::is_flonum(v.bits)).then(|| crate::flonum::decode(v.bits))
    }

    // ---- frames ----

    /// The top section frame's slot 0 (a pointer) and slot count, checked: the one check of
    /// a slot access. The pointer is valid for that many words while the section runs and
    /// pushes and pops nothing (nothing moves the buffer inside a pinned section: no
    /// safepoint is reached there, and the in-section pushes never grow it).
    #[inline(always)]
    fn frame(&self) -> Result<(*const AtomicUsize, usize), GcError> {
        match self.pin.stack().sealed_top_slots() {
            Some(f) => Ok(f),
            None => Err(no_frame()),
        }
    }

    /// The number of slots of the top section frame.
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section frame.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// assert_eq!(m.enter(|s| s.frame_slots()).unwrap(), Err(GcError::NoFrame));
    /// m.push_frame(2).unwrap();
    /// assert_eq!(m.enter(|s| s.frame_slots()).unwrap(), Ok(2));
    /// # });
    /// ```
    #[inline]
    pub fn frame_slots(&self) -> Result<usize, GcError> {
        Ok(self.frame()?.1)
    }

    /// Slot `i` of the top section frame.
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section frame;
    /// [`GcError::SlotOutOfFrame`] for `i` past its slots.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| {
    ///     assert!(s.slot(0).unwrap().is_nil()); // a fresh frame's slots are null
    ///     assert_eq!(s.slot(1), Err(GcError::SlotOutOfFrame { index: 1, slots: 1 }));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn slot(&self, i: usize) -> Result<Value<'s>, GcError> {
        let (base, slots) = self.frame()?;
        if i >= slots {
            return Err(out_of_frame(i, slots));
        }
        // SAFETY: slot `i < slots` of the top section frame, used at once (see `frame`).
        let w = unsafe { &*base.add(i) };
        // Relaxed, as the managed stack's own slot loads (`ManagedStack::get_at`).
        Ok(Value::from_bits(w.load(Ordering::Relaxed)))
    }

    /// Slots `0..N` of the top section frame, with one check of the frame: how compiled code
    /// loads its registers at the start of a section.
    ///
    /// # Errors
    /// As [`slot`](Self::slot), for slot `N - 1`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(2).unwrap();
    /// m.enter(|s| {
    ///     let [a, b] = s.slots().unwrap();
    ///     assert!(a.is_nil() && b.is_nil());
    ///     assert!(s.slots::<3>().is_err()); // past the frame
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn slots<const N: usize>(&self) -> Result<[Value<'s>; N], GcError> {
        let (base, slots) = self.frame()?;
        if N > slots {
            return Err(out_of_frame(N - 1, slots));
        }
        // A plain loop, not `array::from_fn`, whose closure is left a call.
        let mut out = [Value::nil(); N];
        for (i, v) in out.iter_mut().enumerate() {
            // SAFETY: slot `i < N <= slots` of the top section frame, read at once (see
            // `frame`); Relaxed, as in `slot`.
            *v = Value::from_bits(unsafe { &*base.add(i) }.load(Ordering::Relaxed));
        }
        Ok(out)
    }

    /// The top section frame's slots as a register file ([`Regs`]): reads and writes of
    /// them with one bounds check each, for an interpreter whose every instruction touches a
    /// few. The view borrows the section, so nothing that may push, pop or allocate (every
    /// `&mut self` method) runs while it lives: take it again after one.
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section frame.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(2).unwrap();
    /// m.enter(|s| {
    ///     let r = s.regs().unwrap();
    ///     r.set(1, s.int(4).unwrap()).unwrap();
    ///     assert_eq!(s.as_int(r.get(1).unwrap()), Some(4));
    ///     assert_eq!(r.len(), 2);
    ///     assert_eq!(r.get(2), Err(GcError::SlotOutOfFrame { index: 2, slots: 2 }));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn regs(&self) -> Result<Regs<'_, 's>, GcError> {
        let (base, slots) = self.frame()?;
        // SAFETY: the top frame is a section frame of `slots` slots (just checked) whose slot
        // 0 is `base`. The slice lives while the section is borrowed: no push, pop or
        // allocation runs meanwhile (they take the section mutably), and nothing else moves
        // or frees the buffer inside a pinned section (no safepoint is reached), so the words
        // stay this frame's slots.
        let slots = unsafe { std::slice::from_raw_parts(base, slots) };
        Ok(Regs { slots, _brand: PhantomData })
    }

    /// Writes slot `i` of the top section frame: `v` stays alive (a root) while it is there.
    ///
    /// # Errors
    /// As [`slot`](Self::slot).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| s.set_slot(0, s.int(9).unwrap())).unwrap().unwrap();
    /// let n = m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap();
    /// assert_eq!(n, Some(9));
    /// # });
    /// ```
    #[inline(always)]
    pub fn set_slot(&mut self, i: usize, v: Value<'s>) -> Result<(), GcError> {
        let (base, slots) = self.frame()?;
        if i >= slots {
            return Err(out_of_frame(i, slots));
        }
        // SAFETY: slot `i < slots` of a section frame (a sealed frame on top, just checked),
        // used at once (see `frame`), whose owner this mutator is; `v` is a value of this
        // heap's encoding that the section made or loaded (null, an immediate, or a live
        // object: branded values come from nowhere else).
        let w = unsafe { &*base.add(i) };
        // Relaxed, as the managed stack's own slot stores (`ManagedStack::set_at`): the owner
        // alone writes them, and a scan reads them at a safepoint, which a section never
        // reaches (the stop orders the two).
        w.store(v.bits, Ordering::Relaxed);
        Ok(())
    }

    /// Pushes a section frame of `slots` slots whose first slots are `args` (the rest null),
    /// inside the section, if that needs no safepoint: a call's fast path, as compiled code
    /// takes it between two instructions. `Ok(false)` when the push needs its slow path (the
    /// stack must grow, or a stop or preemption is pending): nothing is pushed, and the
    /// caller keeps the arguments in its own frame, leaves the section and calls
    /// [`SectionMutator::push_frame_args`], the safepoint.
    ///
    /// # Errors
    /// [`GcError::OutOfBounds`] for more arguments than slots, or more slots than
    /// [`MAX_FRAME_SLOTS`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap(); // the caller (the stack has room from here on)
    /// let pushed = m.enter(|s| {
    ///     let seven = s.int(7).unwrap();
    ///     if !s.push_frame_with(2, &[seven]).unwrap() {
    ///         s.set_slot(0, seven).unwrap(); // the slow path: keep it, push outside
    ///         return false;
    ///     }
    ///     true
    /// }).unwrap();
    /// if !pushed {
    ///     m.push_frame_args(2, &[0]).unwrap();
    /// }
    /// assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(7));
    /// # });
    /// ```
    #[inline(always)]
    pub fn push_frame_with(&mut self, slots: usize, args: &[Value<'s>]) -> Result<bool, GcError> {
        if slots > MAX_FRAME_SLOTS || args.len() > slots {
            return Err(GcError::OutOfBounds { index: args.len().max(slots), len: slots });
        }
        let ms = self.pin.stack();
        // SAFETY: as in `SectionMutator::push_frame`: the frame is written only with values of
        // this heap's encoding (the branded `args`, live until the section ends and roots in
        // the frame from then on), and popped by `pop_frame`. `try_push_sealed_handles` never
        // reaches a safepoint.
        let Some(base) = (unsafe { ms.try_push_sealed_handles(slots) }) else {
            return Ok(false);
        };
        for (j, v) in args.iter().enumerate() {
            // SAFETY: slot `j < slots` of the section frame just pushed; `v` as above.
            unsafe { ms.set_at(base + j, v.bits) };
        }
        Ok(true)
    }

    /// Pushes a function frame of `f` (as [`SectionMutator::push_func_frame`]: its slots
    /// scanned by `f`'s maps, the dead ones cleared) whose first slots are `args` and the rest
    /// null, at safepoint 0, inside the section, if that needs no safepoint: the call of a
    /// function with precise maps, between two instructions. `Ok(false)` when the push needs
    /// its slow path (the stack must grow, or a stop or preemption is pending): nothing is
    /// pushed, and the caller keeps the arguments in its own frame, leaves the section and
    /// calls [`SectionMutator::push_func_frame`], the safepoint (then copies them in a
    /// section).
    ///
    /// # Errors
    /// [`GcError::UnknownFunction`] if the runtime's registry does not hold `f`;
    /// [`GcError::OutOfBounds`] for more arguments than `f` has slots. Nothing is pushed
    /// then.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_gc::{Gc, GcError, SectionMutator};
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).tagged_at(0, &[0, 1])).unwrap();
    /// let rt = safepoint_sched::Runtime::builder().procs(1).registry(reg).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = SectionMutator::new(&g).unwrap();
    ///     m.push_func_frame(f).unwrap(); // the caller (the stack has room from here on)
    ///     let n = m.enter(|s| {
    ///         let five = s.int(5).unwrap();
    ///         assert!(s.push_func_frame_with(f, &[five]).unwrap());
    ///         assert!(s.slot(1).unwrap().is_nil());
    ///         assert!(s.push_func_frame_with(f, &[five; 3]).is_err()); // 3 args, 2 slots
    ///         s.as_int(s.slot(0).unwrap())
    ///     }).unwrap();
    ///     assert_eq!(n, Some(5));
    /// });
    /// ```
    #[inline(always)]
    pub fn push_func_frame_with(&mut self, f: FuncId, args: &[Value<'s>]) -> Result<bool, GcError> {
        if self.pin.gc.reg.get(f).is_none() {
            return Err(GcError::UnknownFunction { index: f.index() });
        }
        let slots = f.frame_slots();
        if args.len() > slots {
            return Err(GcError::OutOfBounds { index: args.len(), len: slots });
        }
        let ms = self.pin.stack();
        // The new frame's slot 0 is the old top (its header goes above its slots).
        let base = ms.used_words();
        // SAFETY: as in `SectionMutator::push_func_frame`: the frame is written only with
        // values of this heap's encoding (the branded `args`, live until the section ends and
        // roots in the frame from then on), and popped by `pop_frame`; `f` is a function of
        // the registry the collector scans it by (just checked). `try_push_sealed` never
        // reaches a safepoint.
        if !unsafe { ms.try_push_sealed(f) } {
            return Ok(false);
        }
        for (j, v) in args.iter().enumerate() {
            // SAFETY: slot `j < slots` of the sealed frame just pushed; `v` as above.
            unsafe { ms.set_at(base + j, v.bits) };
        }
        Ok(true)
    }

    /// Records that the top frame, a function frame ([`SectionMutator::push_func_frame`]),
    /// now stands at safepoint `sp` of its function: from the next safepoint the goroutine
    /// reaches on, the collector scans the slots `sp`'s map calls live and clears the others.
    /// Call it before leaving the section for a safepoint (a call, a poll, an allocation's
    /// slow path, a channel operation). A section frame has one safepoint, 0.
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section's; [`GcError::OutOfBounds`]
    /// for `sp` past the function's safepoints (nothing changes then).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safepoint_gc::{Gc, GcError, SectionMutator};
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Arc::new(Registry::new());
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 3)).unwrap();
    /// let rt = safepoint_sched::Runtime::builder().procs(1).registry(reg).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let g = gc.clone();
    /// rt.block_on(move || {
    ///     let mut m = SectionMutator::new(&g).unwrap();
    ///     m.push_func_frame(f).unwrap();
    ///     m.enter(|s| {
    ///         assert_eq!(s.set_safepoint(2), Ok(()));
    ///         assert_eq!(s.set_safepoint(3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
    ///     }).unwrap();
    /// });
    /// ```
    #[inline]
    pub fn set_safepoint(&mut self, sp: u32) -> Result<(), GcError> {
        self.frame()?;
        match self.pin.stack().try_set_safepoint(sp) {
            Ok(()) => Ok(()),
            Err(count) => Err(GcError::OutOfBounds { index: sp as usize, len: count as usize }),
        }
    }

    /// Pops the top section frame inside the section, as a compiled function's return does
    /// before it writes its result into its caller's frame. (Values read from the popped
    /// frame stay valid until the section ends.)
    ///
    /// # Errors
    /// [`GcError::NoFrame`] if the top frame is not a section frame.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap(); // the caller's frame
    /// m.push_frame(1).unwrap(); // the callee's
    /// m.enter(|s| {
    ///     let result = s.int(3).unwrap();
    ///     s.pop_frame().unwrap();          // return...
    ///     s.set_slot(0, result).unwrap();  // ...into the caller's slot 0
    /// }).unwrap();
    /// assert_eq!(m.enter(|s| s.as_int(s.slot(0).unwrap())).unwrap(), Some(3));
    /// # });
    /// ```
    #[inline(always)]
    pub fn pop_frame(&mut self) -> Result<(), GcError> {
        pop_section_frame(self.pin.stack())
    }

    // ---- objects ----

    /// Allocates an object of `shape`, its body zeroed (null words).
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a shape of another collector; [`GcError::Alloc`] at the
    /// heap's hard limit (leave the section, [`collect`](SectionMutator::collect), and try
    /// once more).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// let other = Gc::new(&safepoint_sched::Runtime::builder().procs(1).build().unwrap()).unwrap();
    /// let t = other.types().register(TypeDesc::Record {
    ///     name: "t".into(),
    ///     words: vec![WordKind::Raw],
    /// }).unwrap();
    /// let foreign = Shape::new(&other, t, 0).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     assert_eq!(s.get_raw(p, &shape, 2), Ok(0));
    ///     assert_eq!(s.alloc(&foreign), Err(GcError::WrongHeap));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn alloc(&mut self, shape: &Shape) -> Result<Ref<'s>, GcError> {
        let (r, slow) = self.pin.alloc(*shape)?;
        self.slow |= slow;
        Ok(Ref { bits: r, _brand: PhantomData })
    }

    /// Allocates an object of `shape` and initialises its first `init.len()` words (the rest
    /// stay null): the store of a fresh object's words, which needs only the new value shaded
    /// while marking (the word held null).
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc); [`GcError::OutOfBounds`] if `init` is longer than the
    /// body; [`GcError::WrongKind`] for a word that is not a reference or tagged word, or an
    /// immediate given to a reference word (then nothing is allocated).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, Value, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let leaf = s.alloc(&shape).unwrap();
    ///     let n = s.alloc_init(&shape, &[leaf.value(), s.int(1).unwrap()]).unwrap();
    ///     assert_eq!(s.get(n, &shape, 0), Ok(leaf.value()));
    ///     let one = s.int(1).unwrap();
    ///     // An immediate into a reference word:
    ///     assert!(matches!(s.alloc_init(&shape, &[one]), Err(GcError::WrongKind { .. })));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn alloc_init(&mut self, shape: &Shape, init: &[Value<'s>]) -> Result<Ref<'s>, GcError> {
        if init.len() > shape.body_words() {
            return Err(GcError::OutOfBounds { index: init.len(), len: shape.body_words() });
        }
        // The common case, a record whose initialised words are all reference or tagged
        // words (among its first 64): each word's kind is a bit of the shape's masks, looked
        // at once. Anything else takes the general path below.
        if let ShapeWords::Record { refs, tagged, .. } = shape.words
            && init.len() <= 64
        {
            let n = init.len();
            let all = if n == 64 { !0 } else { (1u64 << n) - 1 };
            if (refs | tagged) & all == all {
                return self.alloc_init_values(shape, init, refs);
            }
        }
        // Check every word first, so that a refused store allocates nothing.
        for (i, v) in init.iter().enumerate() {
            let checked = self.kind_at(shape, i).and_then(|k| match k {
                WordKind::Weak if v.bits != 0 && !self.enc.rule.is_ref(v.bits) => {
                    Err(Fault::Kind(IMMEDIATE_INTO_WEAK))
                }
                WordKind::Weak => Ok(0),
                _ => self.encode(k, *v),
            });
            if let Err(f) = checked {
                return Err(self.raise(f, shape));
            }
        }
        let obj = self.alloc(shape)?;
        let addr = obj.bits & !self.enc.rule.mask;
        // SAFETY: a fresh object of `shape`, whose body has at least `init.len()` words.
        let words = unsafe { body(addr, init.len()) };
        for (i, v) in init.iter().enumerate() {
            // Checked above: neither fails here (a weak word's cell may fail to allocate).
            let kind = self.kind_at(shape, i).unwrap_or(WordKind::Raw);
            let w = if kind == WordKind::Weak {
                let (cell, slow) = self.cell_for(*v, shape)?;
                self.slow |= slow;
                cell
            } else {
                self.encode(kind, *v).unwrap_or(0)
            };
            // A word of an object allocated in this section, never stored: it holds null.
            self.pin.gc.init_field(self.pin.p, kind, &words[i], w);
        }
        Ok(obj)
    }

    /// [`alloc_init`](Self::alloc_init) of a record whose first `init.len()` words are
    /// reference words (bit `i` of `refs` set) or tagged words (the others).
    #[inline(always)]
    fn alloc_init_values(
        &mut self,
        shape: &Shape,
        init: &[Value<'s>],
        refs: u64,
    ) -> Result<Ref<'s>, GcError> {
        let rule = self.enc.rule;
        // Check every word first, so that a refused store allocates nothing: a reference word
        // takes null or a reference, a tagged word any value.
        for (i, v) in init.iter().enumerate() {
            if refs >> i & 1 != 0 && v.bits != 0 && !rule.is_ref(v.bits) {
                let f = Fault::Kind("an immediate stored into a reference word");
                return Err(self.raise(f, shape));
            }
        }
        let obj = self.alloc(shape)?;
        // SAFETY: a fresh object of `shape`, whose body has at least `init.len()` words.
        let words = unsafe { body(obj.bits & !rule.mask, init.len()) };
        for (i, v) in init.iter().enumerate() {
            // A word of an object allocated in this section, never stored: it holds null. A
            // reference word holds the plain address (null stays 0).
            if refs >> i & 1 != 0 {
                self.pin.gc.init_field(self.pin.p, WordKind::Ref, &words[i], v.bits & !rule.mask);
            } else {
                self.pin.gc.init_field(self.pin.p, WordKind::Tagged, &words[i], v.bits);
            }
        }
        Ok(obj)
    }

    /// The kind of word `i` of objects of `shape` (its length for arrays checked by the
    /// caller).
    #[inline(always)]
    fn kind_at(&self, shape: &Shape, i: usize) -> Result<WordKind, Fault> {
        match shape.words {
            ShapeWords::Record { refs, tagged, raw } if i < 64 => {
                let bit = 1u64 << i;
                if refs & bit != 0 {
                    Ok(WordKind::Ref)
                } else if tagged & bit != 0 {
                    Ok(WordKind::Tagged)
                } else if raw & bit != 0 {
                    Ok(WordKind::Raw)
                } else {
                    self.record_kind(shape, i)
                }
            }
            ShapeWords::Record { .. } => self.record_kind(shape, i),
            ShapeWords::RefArray => Ok(WordKind::Ref),
            ShapeWords::TaggedArray => Ok(WordKind::Tagged),
            ShapeWords::Bytes => Err(Fault::Kind(BYTES)),
        }
    }

    /// Word `i`'s kind from the registry: past the shape's first 64 words, or neither a
    /// reference, tagged nor raw word.
    ///
    /// (This and the other cold paths' methods hand the out-of-line functions the collector,
    /// not the section: a section whose address reaches a call must live in memory, and would
    /// be written there at every section's start.)
    #[inline(always)]
    fn record_kind(&self, shape: &Shape, i: usize) -> Result<WordKind, Fault> {
        record_kind_in(self.pin.gc, shape, i)
    }

    /// The error for `f`, met on an access with `shape`.
    #[inline(always)]
    fn raise(&self, f: Fault, shape: &Shape) -> GcError {
        raise_in(self.pin.gc, f, shape)
    }

    #[inline(always)]
    fn wrong_kind(&self, shape: &Shape, what: &'static str) -> GcError {
        wrong_kind_in(self.pin.gc, shape, what)
    }

    /// `v` as a word of kind `kind`: a reference word holds a plain address.
    #[inline(always)]
    fn encode(&self, kind: WordKind, v: Value<'s>) -> Result<usize, Fault> {
        match kind {
            WordKind::Tagged | WordKind::Ephemeron => Ok(v.bits),
            WordKind::Ref if v.bits == 0 => Ok(0),
            WordKind::Ref if self.enc.rule.is_ref(v.bits) => Ok(v.bits & !self.enc.rule.mask),
            WordKind::Ref => Err(Fault::Kind("an immediate stored into a reference word")),
            _ => Err(Fault::Kind(NOT_A_VALUE)),
        }
    }

    /// Word `i` of `obj`, checked against `shape`: the header, the index, and the kind.
    #[inline(always)]
    fn word_of(
        &self,
        obj: Ref<'s>,
        shape: &Shape,
        i: usize,
    ) -> Result<(WordKind, &AtomicUsize), Fault> {
        let gc = self.pin.gc;
        if shape.heap != gc.id {
            return Err(Fault::WrongHeap);
        }
        if self.pin.validate {
            self.pin.check(obj.bits, None);
        }
        let addr = obj.bits & !self.enc.rule.mask;
        // SAFETY: `obj` is a live object of this heap: a `Ref` comes only from an allocation
        // or a load in this section, and nothing is freed while it runs.
        let hw = unsafe { header_in(gc.typed, addr) };
        let sh = shape.header.to_word();
        let len = match shape.words {
            ShapeWords::Record { .. } if hw == sh => shape.body_words(),
            ShapeWords::RefArray | ShapeWords::TaggedArray if (hw ^ sh) & ID_MASK == 0 => {
                Header::from_word(hw).map_or(0, Header::len)
            }
            ShapeWords::Bytes => return Err(Fault::Kind(BYTES)),
            _ => return Err(Fault::NotOfShape(hw)),
        };
        if i >= len {
            return Err(Fault::OutOfBounds { index: i, len });
        }
        let kind = self.kind_at(shape, i)?;
        // SAFETY: word `i` of a live object's body (`i` is below its body words, by its header).
        Ok((kind, unsafe { &body(addr, i + 1)[i] }))
    }

    #[inline(always)]
    fn not_of_shape(&self, hw: usize) -> GcError {
        not_of_shape_in(self.pin.gc, hw)
    }

    /// Whether `obj` is an object of `shape`'s type (of any length, for an array): the
    /// dynamic type test before a field access.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// let vec = gc.types().register(TypeDesc::RefArray { name: "vec".into() }).unwrap();
    /// let (v2, v5) = (Shape::new(&gc, vec, 2).unwrap(), Shape::new(&gc, vec, 5).unwrap());
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let a = s.alloc(&v2).unwrap();
    ///     assert!(s.is(a, &v5)); // the same type, another length
    ///     assert!(!s.is(a, &shape));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn is(&self, obj: Ref<'s>, shape: &Shape) -> bool {
        if shape.heap != self.pin.gc.id {
            return false;
        }
        // SAFETY: as in `word_of`.
        let hw = unsafe { header_in(self.pin.gc.typed, obj.bits & !self.enc.rule.mask) };
        match shape.words {
            ShapeWords::Record { .. } => hw == shape.header.to_word(),
            _ => (hw ^ shape.header.to_word()) & ID_MASK == 0,
        }
    }

    /// The type of `obj`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// let t = m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     s.type_of(p)
    /// }).unwrap();
    /// assert_eq!(t, pair);
    /// # });
    /// ```
    #[inline]
    pub fn type_of(&self, obj: Ref<'s>) -> TypeId {
        // SAFETY: as in `word_of`.
        let hw = unsafe { header_in(self.pin.gc.typed, obj.bits & !self.enc.rule.mask) };
        let h = Header::from_word(hw).unwrap_or_else(|| {
            panic!("safepoint: object at {:#x} has a corrupt header {hw:#x}", obj.bits)
        });
        self.pin.gc.types.bind(h.type_id())
    }

    /// The length of the array `obj` (its elements; 0 for a record).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let vec = gc.types().register(TypeDesc::TaggedArray { name: "vec".into() }).unwrap();
    /// let v4 = Shape::new(&gc, vec, 4).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// let n = m.enter(|s| {
    ///     let a = s.alloc(&v4).unwrap();
    ///     s.len(a)
    /// }).unwrap();
    /// assert_eq!(n, 4);
    /// # });
    /// ```
    #[inline]
    pub fn len(&self, obj: Ref<'s>) -> usize {
        // SAFETY: as in `word_of`.
        let hw = unsafe { header_in(self.pin.gc.typed, obj.bits & !self.enc.rule.mask) };
        Header::from_word(hw).map_or(0, Header::len)
    }

    /// Word `i` of `obj`, an object of `shape`'s type: a reference or tagged word's value; a
    /// weak word's object (nil if the word is null or the object was found unreachable, as
    /// [`deref`](Self::deref)); an ephemeron word's value (nil once the record's key is
    /// gone).
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a shape of another collector; [`GcError::WrongKind`] for an
    /// object of another type, or a raw word; [`GcError::OutOfBounds`] for `i` past the body.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     assert!(s.get(p, &shape, 1).unwrap().is_nil());
    ///     assert!(matches!(s.get(p, &shape, 2), Err(GcError::WrongKind { .. }))); // raw
    ///     assert_eq!(s.get(p, &shape, 3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn get(&self, obj: Ref<'s>, shape: &Shape, i: usize) -> Result<Value<'s>, GcError> {
        // The common case first: a reference or tagged word among a record's first 64, of an
        // object whose header is the shape's (the same checks as `word_of`, in one line).
        if let Some((addr, refs)) = self.record_words(obj, shape, i, 1) {
            // SAFETY: word `i` of a live object's body (`record_words` checked it).
            return Ok(unsafe { self.load_value(addr, refs, i) });
        }
        let (kind, w) = match self.word_of(obj, shape, i) {
            Ok(kw) => kw,
            Err(f) => return Err(self.raise(f, shape)),
        };
        // Acquire: as in `Pin::word` (a reference read here is seen initialised).
        let v = w.load(Ordering::Acquire);
        match kind {
            WordKind::Ref if v == 0 => Ok(Value::nil()),
            WordKind::Ref => Ok(Value::from_bits(v | self.enc.rule.ref_tag)),
            WordKind::Tagged => Ok(Value::from_bits(v)),
            WordKind::Weak | WordKind::Ephemeron => Ok(self.get_weak(obj, kind, v)),
            WordKind::Raw => Err(self.raise(Fault::Kind(NOT_A_VALUE), shape)),
        }
    }

    /// Words `first..first + N` of `obj`, checked against `shape` as [`get`](Self::get)
    /// checks one, with one look at the header for all of them: how compiled code reads
    /// the fields it needs after one type test.
    ///
    /// # Errors
    /// As [`get`](Self::get), for the first word refused.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, Value, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let leaf = s.alloc(&shape).unwrap();
    ///     let p = s.alloc_init(&shape, &[leaf.value(), s.int(4).unwrap()]).unwrap();
    ///     let [l, n] = s.fields(p, &shape, 0).unwrap();
    ///     assert_eq!((l, s.as_int(n)), (leaf.value(), Some(4)));
    ///     assert!(matches!(s.fields::<2>(p, &shape, 1), Err(GcError::WrongKind { .. }))); // raw
    ///     assert_eq!(s.fields::<1>(p, &shape, 3), Err(GcError::OutOfBounds { index: 3, len: 3 }));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn fields<const N: usize>(
        &self,
        obj: Ref<'s>,
        shape: &Shape,
        first: usize,
    ) -> Result<[Value<'s>; N], GcError> {
        if let Some((addr, refs)) = self.record_words(obj, shape, first, N) {
            // A plain loop, not `array::from_fn`, whose closure is left a call.
            let mut out = [Value::nil(); N];
            for (j, v) in out.iter_mut().enumerate() {
                // SAFETY: word `first + j` of a live object's body (`record_words` checked
                // words `first..first + N`).
                *v = unsafe { self.load_value(addr, refs, first + j) };
            }
            return Ok(out);
        }
        let mut out = [Value::nil(); N];
        for (j, v) in out.iter_mut().enumerate() {
            *v = self.get(obj, shape, first + j)?;
        }
        Ok(out)
    }

    /// The object's address and its shape's reference-word mask, if words `first..first + n`
    /// of `obj` are reference or tagged words among the first 64 of a record of `shape`, and
    /// `obj`'s header is the shape's (outside the debugging modes, which take the general
    /// path and its checks): the fast path of [`get`](Self::get) and
    /// [`fields`](Self::fields), one header load for all the words.
    #[inline(always)]
    fn record_words(
        &self,
        obj: Ref<'s>,
        shape: &Shape,
        first: usize,
        n: usize,
    ) -> Option<(usize, u64)> {
        let ShapeWords::Record { refs, tagged, .. } = shape.words else { return None };
        if shape.heap != self.pin.gc.id || self.pin.validate || n == 0 || n > 64 {
            return None;
        }
        let end = first.checked_add(n)?;
        if end > shape.body_words().min(64) {
            return None;
        }
        let want = (if n == 64 { !0u64 } else { (1u64 << n) - 1 }) << first;
        if (refs | tagged) & want != want {
            return None;
        }
        let addr = obj.bits & !self.enc.rule.mask;
        // SAFETY: `obj` is a live object of this heap: a `Ref` comes only from an allocation
        // or a load in this section, and nothing is freed while it runs.
        let hw = unsafe { header_in(self.pin.typed, addr) };
        (hw == shape.header.to_word()).then_some((addr, refs))
    }

    /// Word `i` of the object at `addr`, a reference word if bit `i` of `refs` is set, a
    /// tagged word otherwise, as a value.
    ///
    /// # Safety
    /// Word `i` is in the body of a live object at `addr` (as [`record_words`] checks).
    ///
    /// [`record_words`]: Self::record_words
    #[inline(always)]
    unsafe fn load_value(&self, addr: usize, refs: u64, i: usize) -> Value<'s> {
        // SAFETY: per the contract; heap words are atomics.
        let w = unsafe { &body(addr, i + 1)[i] };
        // Acquire: as in `Pin::word` (a reference read here is seen initialised).
        let v = w.load(Ordering::Acquire);
        // A reference word holds the plain address: the value is the tagged reference.
        Value::from_bits(if refs >> i & 1 != 0 && v != 0 { v | self.enc.rule.ref_tag } else { v })
    }

    /// What a weak or ephemeron word that holds `v` reads (see [`get`](Self::get)).
    #[inline(always)]
    fn get_weak(&self, obj: Ref<'s>, kind: WordKind, v: usize) -> Value<'s> {
        let pin = &self.pin;
        let cx = Cold { gc: pin.gc, rule: self.enc.rule, typed: pin.typed, validate: pin.validate };
        Value::from_bits(get_weak_in(cx, pin.p, obj.bits, kind, v))
    }

    /// The type of `obj`, as the registry describes it (for the rare accesses that need
    /// more than a shape carries: ephemeron records).
    #[cold]
    #[inline(never)]
    fn desc_of(&self, obj: Ref<'s>) -> &'s crate::TypeDesc {
        let ty = self.type_of(obj);
        self.pin.gc.types.get(ty).unwrap_or_else(|| {
            panic!("safepoint: object at {:#x} has a type its heap does not know", obj.bits)
        })
    }

    /// The word a weak word stores for `v`: null, or the cell of `v`'s object (made if it has
    /// none), and whether making it took an allocation's slow path. (Inlined: its caller's
    /// section must not reach a call by address, see `record_kind`.)
    #[inline(always)]
    fn cell_for(&self, v: Value<'s>, shape: &Shape) -> Result<(usize, bool), GcError> {
        let rule = self.enc.rule;
        if v.bits == 0 {
            return Ok((0, false));
        }
        if !rule.is_ref(v.bits) {
            return Err(self.raise(Fault::Kind(IMMEDIATE_INTO_WEAK), shape));
        }
        self.pin.gc.cell_of(self.pin.p, v.bits & !rule.mask)
    }

    /// [`set`](Self::set) of a weak word: stores the cell of `v`'s object; a new key of an
    /// ephemeron record first clears the values its old, dead key left.
    #[cold]
    #[inline(never)]
    fn set_weak(
        &mut self,
        obj: Ref<'s>,
        shape: &Shape,
        i: usize,
        v: Value<'s>,
    ) -> Result<(), GcError> {
        let (cell, slow) = self.cell_for(v, shape)?;
        self.slow |= slow;
        let (gc, p) = (self.pin.gc, self.pin.p);
        let w = match self.word_of(obj, shape, i) {
            Ok((_, w)) => w,
            Err(f) => return Err(self.raise(f, shape)),
        };
        gc.before_key_store(p, obj.bits & !self.enc.rule.mask, self.desc_of(obj), i);
        gc.store_field(p, WordKind::Weak, w, cell);
        Ok(())
    }

    /// Stores `v` into word `i` of `obj`, through the write barrier. A weak word takes nil
    /// or a reference, and stores the object's weak handle ([`weak`](Self::weak), made if it
    /// has none: an allocation); a new key stored into an ephemeron record whose old key is
    /// gone first clears the values that died with it. An ephemeron word takes any value.
    ///
    /// # Errors
    /// As [`get`](Self::get), and [`GcError::WrongKind`] for an immediate stored into a
    /// reference or weak word; [`GcError::Alloc`] if a weak handle cannot be allocated.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let (a, b) = (s.alloc(&shape).unwrap(), s.alloc(&shape).unwrap());
    ///     s.set(a, &shape, 0, b.value()).unwrap();
    ///     s.set(a, &shape, 1, s.int(3).unwrap()).unwrap();
    ///     assert_eq!(s.get(a, &shape, 0), Ok(b.value()));
    ///     assert!(s.set(a, &shape, 0, s.int(3).unwrap()).is_err()); // not a reference
    /// }).unwrap();
    /// # });
    /// ```
    #[inline(always)]
    pub fn set(
        &mut self,
        obj: Ref<'s>,
        shape: &Shape,
        i: usize,
        v: Value<'s>,
    ) -> Result<(), GcError> {
        let (kind, w) = match self.word_of(obj, shape, i) {
            Ok(kw) => kw,
            Err(f) => return Err(self.raise(f, shape)),
        };
        let word = match self.encode(kind, v) {
            Ok(word) => word,
            Err(_) if kind == WordKind::Weak => return self.set_weak(obj, shape, i, v),
            Err(f) => return Err(self.raise(f, shape)),
        };
        self.pin.gc.store_field(self.pin.p, kind, w, word);
        Ok(())
    }

    /// Raw word `i` of `obj` (never scanned: a plain number).
    ///
    /// # Errors
    /// As [`get`](Self::get), for a word that is not raw.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     s.set_raw(p, &shape, 2, 0xdead_beef).unwrap();
    ///     assert_eq!(s.get_raw(p, &shape, 2), Ok(0xdead_beef));
    ///     assert!(s.get_raw(p, &shape, 0).is_err()); // a reference word
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn get_raw(&self, obj: Ref<'s>, shape: &Shape, i: usize) -> Result<u64, GcError> {
        match self.word_of(obj, shape, i) {
            // Relaxed: raw data, as in `Mutator::read_word`.
            Ok((WordKind::Raw, w)) => Ok(w.load(Ordering::Relaxed) as u64),
            Ok(_) => Err(self.raise(Fault::Kind("not a raw word"), shape)),
            Err(f) => Err(self.raise(f, shape)),
        }
    }

    /// Stores the number `v` into raw word `i` of `obj` (no barrier: never scanned).
    ///
    /// # Errors
    /// As [`get_raw`](Self::get_raw).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     s.set_raw(p, &shape, 2, 7).unwrap();
    ///     assert!(s.set_raw(p, &shape, 1, 7).is_err()); // a tagged word
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn set_raw(
        &mut self,
        obj: Ref<'s>,
        shape: &Shape,
        i: usize,
        v: u64,
    ) -> Result<(), GcError> {
        match self.word_of(obj, shape, i) {
            // Relaxed: raw data, as in `Mutator::write_word`.
            Ok((WordKind::Raw, w)) => {
                w.store(v as usize, Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => Err(self.raise(Fault::Kind("not a raw word"), shape)),
            Err(f) => Err(self.raise(f, shape)),
        }
    }

    // ---- globals ----

    /// The value in global `g`.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a global of another collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Global, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let global = Global::new(&gc);
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// assert!(m.enter(|s| s.global(&global).unwrap().is_nil()).unwrap());
    /// # });
    /// ```
    #[inline]
    pub fn global(&self, g: &Global) -> Result<Value<'s>, GcError> {
        // A global holds only values of its heap's encoding (its API checks what it stores).
        Ok(Value::from_bits(self.pin.global(g)?))
    }

    /// Stores `v` into global `g`, through the write barrier: how a value outlives the
    /// section somewhere other than a frame (for another goroutine, say).
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a global of another collector.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, Global, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// let global = Global::new(&gc);
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     s.set_global(&global, p.value()).unwrap();
    /// }).unwrap();
    /// m.collect(); // the global keeps the object
    /// assert!(m.enter(|s| s.as_ref(s.global(&global).unwrap()).is_some()).unwrap());
    /// # });
    /// ```
    pub fn set_global(&mut self, g: &Global, v: Value<'s>) -> Result<(), GcError> {
        self.pin.set_global(g, v.bits)
    }

    /// A new global root holding `v`.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// let global = m.enter(|s| s.new_global(s.int(4).unwrap())).unwrap();
    /// assert_eq!(m.enter(|s| s.as_int(s.global(&global).unwrap())).unwrap(), Some(4));
    /// # });
    /// ```
    pub fn new_global(&self, v: Value<'s>) -> Global {
        self.pin.new_global(v.bits).expect("a branded value is null, an immediate or live")
    }

    // ---- weak handles ----

    /// The weak handle of `obj`: its cell, made on the first call for that object and the
    /// same reference on every later one (as [`Mutator::weak`](crate::Mutator::weak)). The
    /// handle does not keep `obj` alive; read it with [`deref`](Self::deref). A handle is an
    /// object like any other (keep it in slots, fields, globals); a weak word of a record
    /// ([`WordKind::Weak`]) stores and loads through one ([`set`](Self::set),
    /// [`get`](Self::get)).
    ///
    /// # Errors
    /// [`GcError::Alloc`] if the cell cannot be allocated.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let mut m = SectionMutator::new(&g).unwrap();
    /// m.push_frame(1).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     let w = s.weak(p).unwrap();
    ///     assert_eq!(s.weak(p), Ok(w)); // one handle per object
    ///     assert_eq!(s.deref(w), Ok(p.value()));
    ///     s.set_slot(0, w.value()).unwrap(); // keep the handle, not the object
    /// }).unwrap();
    /// m.collect();
    /// let gone = m.enter(|s| {
    ///     let w = s.as_ref(s.slot(0).unwrap()).unwrap();
    ///     s.deref(w).unwrap().is_nil()
    /// }).unwrap();
    /// assert!(gone); // found unreachable: the handle reads nil
    /// # });
    /// ```
    pub fn weak(&mut self, obj: Ref<'s>) -> Result<Ref<'s>, GcError> {
        let (cell, slow) = self.pin.gc.cell_of(self.pin.p, obj.bits & !self.enc.rule.mask)?;
        self.slow |= slow;
        Ok(Ref { bits: cell | self.enc.rule.ref_tag, _brand: PhantomData })
    }

    /// Reads the weak handle `w`: its object while the object is reachable, nil once a
    /// collection has found it unreachable (the same answer on every goroutine). While
    /// marking runs, the object returned is shaded, so it may be kept like any loaded value.
    ///
    /// # Errors
    /// [`GcError::WrongKind`] if `w` is not a weak handle.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     let w = s.weak(p).unwrap();
    ///     assert_eq!(s.deref(w), Ok(p.value()));
    ///     assert!(matches!(s.deref(p), Err(GcError::WrongKind { .. }))); // not a handle
    /// }).unwrap();
    /// # });
    /// ```
    pub fn deref(&self, w: Ref<'s>) -> Result<Value<'s>, GcError> {
        let rule = self.enc.rule;
        let addr = w.bits & !rule.mask;
        if !self.pin.gc.is_cell(addr) {
            let type_name = self.desc_of(w).name().to_string();
            return Err(GcError::WrongKind { type_name, what: "not a weak handle" });
        }
        Ok(match self.pin.gc.deref_cell(Some(self.pin.p), addr) {
            0 => Value::nil(),
            t => Value::from_bits(t | rule.ref_tag),
        })
    }

    /// Whether `r` is a weak handle (made by [`weak`](Self::weak), or loaded).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     let w = s.weak(p).unwrap();
    ///     assert!(s.is_weak(w) && !s.is_weak(p));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn is_weak(&self, r: Ref<'s>) -> bool {
        self.pin.gc.is_cell(r.bits & !self.enc.rule.mask)
    }

    /// The identity of the object that weak word `i` of `obj` (an object of `shape`'s type)
    /// names, read without making a value of it: the word a reference to that object has
    /// ([`Value::word`] of it), or 0 if the word is null or its object has been swept. How a
    /// table keyed weakly finds a key by identity (hashes it, compares it with a key the
    /// caller holds) without [`get`](Self::get), which shades the object while marking runs
    /// and so keeps every key it compares alive for that cycle.
    ///
    /// The answer is a number, never a reference: it cannot become a [`Value`] again (no
    /// constructor takes a word, and [`imm`](Self::imm) refuses the reference tag). An object
    /// found unreachable still answers its word until its sweep clears the word, so compare
    /// only with references you hold: a nonzero answer equal to a live reference's word is
    /// that object, since the sweep clears the word before the object's memory can hold
    /// another.
    ///
    /// # Errors
    /// As [`get`](Self::get); [`GcError::WrongKind`] for a word that is not weak.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let entry = gc.types().register(TypeDesc::Record {
    ///     name: "entry".into(),
    ///     words: vec![WordKind::Weak, WordKind::Ephemeron],
    /// }).unwrap();
    /// let shape = Shape::new(&gc, entry, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let key = s.alloc(&shape).unwrap();
    ///     let e = s.alloc(&shape).unwrap();
    ///     assert_eq!(s.weak_id(e, &shape, 0), Ok(0)); // null
    ///     s.set(e, &shape, 0, key.value()).unwrap();
    ///     assert_eq!(s.weak_id(e, &shape, 0), Ok(key.value().word()));
    ///     assert!(matches!(s.weak_id(e, &shape, 1), Err(GcError::WrongKind { .. })));
    /// }).unwrap();
    /// # });
    /// ```
    pub fn weak_id(&self, obj: Ref<'s>, shape: &Shape, i: usize) -> Result<usize, GcError> {
        let (kind, w) = match self.word_of(obj, shape, i) {
            Ok(kw) => kw,
            Err(f) => return Err(self.raise(f, shape)),
        };
        if kind != WordKind::Weak {
            return Err(self.raise(Fault::Kind(NOT_WEAK), shape));
        }
        // Acquire: as in `get` (the cell is seen initialised).
        let cell = w.load(Ordering::Acquire);
        if cell == 0 {
            return Ok(0);
        }
        if self.pin.validate {
            self.pin.check_cell(cell | self.enc.rule.ref_tag);
        }
        // SAFETY: a nonzero weak word holds a weak cell (stored by `set` or `alloc_init`),
        // one raw body word; the record keeps its cell alive, and nothing is freed while the
        // section runs. Acquire pairs with the sweep's Release clear of the cell (its object
        // freed), as in `deref_cell`.
        let target = unsafe { body(cell, 1) }[0].load(Ordering::Acquire);
        Ok(if target == 0 { 0 } else { target | self.enc.rule.ref_tag })
    }

    /// Attaches a cleanup to `obj`, as [`Mutator::add_cleanup`](crate::Mutator::add_cleanup):
    /// `f` runs on the collector's cleanup goroutine after a cycle finds `obj` unreachable,
    /// unless the returned [`Cleanup`](crate::Cleanup) is cancelled first. How an object owns
    /// a Rust-side resource with no raw word: the embedder keeps the resource in a table of
    /// its own, the object holds its index as an immediate, and the cleanup frees the entry
    /// (a word overwritten by mistake then names another entry or none, never memory).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc, WordKind};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let pair = gc.types().register(TypeDesc::Record {
    /// #     name: "pair".into(),
    /// #     words: vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw],
    /// # }).unwrap();
    /// # let shape = Shape::new(&gc, pair, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// let m = SectionMutator::new(&g).unwrap();
    /// let c = m.enter(|s| {
    ///     let p = s.alloc(&shape).unwrap();
    ///     s.add_cleanup(p, || println!("p is gone"))
    /// }).unwrap();
    /// assert!(c.cancel()); // it had not run
    /// # });
    /// ```
    pub fn add_cleanup(
        &mut self,
        obj: Ref<'s>,
        f: impl FnOnce() + Send + 'static,
    ) -> crate::Cleanup {
        // SAFETY: `obj` references a live object of this heap: a `Ref<'s>` comes only from an
        // allocation or a load of this section.
        unsafe { self.pin.add_cleanup(obj.bits, f) }
    }

    // ---- byte arrays ----

    /// The byte array `obj`, checked against `shape` (a shape of its type, of any length).
    #[inline]
    fn byte_cells(&self, obj: Ref<'s>, shape: &Shape) -> Result<&'s [AtomicU8], GcError> {
        let gc = self.pin.gc;
        if shape.heap != gc.id {
            return Err(GcError::WrongHeap);
        }
        if shape.words != ShapeWords::Bytes {
            return Err(self.wrong_kind(shape, NOT_BYTES));
        }
        if self.pin.validate {
            self.pin.check(obj.bits, None);
        }
        let addr = obj.bits & !self.enc.rule.mask;
        // SAFETY: `obj` is a live object of this heap (as in `word_of`).
        let hw = unsafe { header_in(gc.typed, addr) };
        if (hw ^ shape.header.to_word()) & ID_MASK != 0 {
            return Err(self.not_of_shape(hw));
        }
        let len = Header::from_word(hw).map_or(0, Header::len);
        // SAFETY: a byte array of `len` bytes (its header, just read) at its reference, live
        // until the section ends (nothing is freed while it runs: the slice is branded `'s`).
        // Heap bytes are only accessed atomically.
        Ok(unsafe { std::slice::from_raw_parts(addr as *const AtomicU8, len) })
    }

    /// The contents of the byte array `obj`, an object of `shape`'s type (of any length),
    /// as a view that lasts until the section ends. Reads are atomic byte loads: another
    /// goroutine may write the array meanwhile, never a data race.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a shape of another collector; [`GcError::WrongKind`] for a
    /// shape that is not a byte array's, or an object of another type.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap(); // any length will do
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let t = s.alloc_bytes(&shape, b"hello").unwrap();
    ///     let b = s.bytes(t, &shape).unwrap();
    ///     assert_eq!(b.len(), 5);
    ///     assert!(b.eq_bytes(b"hello"));
    /// }).unwrap();
    /// # });
    /// ```
    #[inline]
    pub fn bytes(&self, obj: Ref<'s>, shape: &Shape) -> Result<Bytes<'s>, GcError> {
        Ok(Bytes { bytes: self.byte_cells(obj, shape)? })
    }

    /// Writes `data` into the byte array `obj` (an object of `shape`'s type) from byte
    /// `offset`.
    ///
    /// # Errors
    /// As [`bytes`](Self::bytes); [`GcError::OutOfBounds`] past the array's end (nothing is
    /// written then).
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let t = s.alloc_bytes(&shape, b"hello").unwrap();
    ///     s.write_bytes(t, &shape, 1, b"ip").unwrap();
    ///     assert_eq!(s.bytes(t, &shape).unwrap().to_vec(), b"hiplo");
    ///     assert_eq!(s.write_bytes(t, &shape, 4, b"!!"), Err(GcError::OutOfBounds { index: 6, len: 5 }));
    /// }).unwrap();
    /// # });
    /// ```
    pub fn write_bytes(
        &mut self,
        obj: Ref<'s>,
        shape: &Shape,
        offset: usize,
        data: &[u8],
    ) -> Result<(), GcError> {
        let cells = self.byte_cells(obj, shape)?;
        let Some(end) = offset.checked_add(data.len()).filter(|&e| e <= cells.len()) else {
            let index = offset.saturating_add(data.len());
            return Err(GcError::OutOfBounds { index, len: cells.len() });
        };
        for (c, &b) in cells[offset..end].iter().zip(data) {
            // Relaxed: see `Bytes`.
            c.store(b, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Allocates a byte array of `shape`'s type (a shape of any length: the array gets
    /// `data.len()` bytes) holding `data`: a string's allocation, with no registry lookup.
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc); [`GcError::WrongKind`] for a shape that is not a byte
    /// array's; [`GcError::Type`] for data longer than an array may be.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let t = s.alloc_bytes(&shape, "größer".as_bytes()).unwrap();
    ///     assert_eq!(s.len(t), 8);
    ///     assert_eq!(s.bytes(t, &shape).unwrap().to_string_lossy(), "größer");
    /// }).unwrap();
    /// # });
    /// ```
    pub fn alloc_bytes(&mut self, shape: &Shape, data: &[u8]) -> Result<Ref<'s>, GcError> {
        if shape.heap != self.pin.gc.id {
            return Err(GcError::WrongHeap);
        }
        if shape.words != ShapeWords::Bytes {
            return Err(self.wrong_kind(shape, NOT_BYTES));
        }
        let sized = shape.with_len(data.len())?;
        let obj = self.alloc(&sized)?;
        let cells = self.byte_cells(obj, &sized)?;
        for (c, &b) in cells.iter().zip(data) {
            // Relaxed: the array is not yet published (the store that publishes it, a
            // field's, a global's or a slot's at a safepoint, orders these).
            c.store(b, Ordering::Relaxed);
        }
        Ok(obj)
    }

    /// Allocates a byte array of `shape`'s type (a shape of any length) holding `parts` one
    /// after another: a concatenation that copies each part once, from a byte array of the
    /// heap ([`BytesPart::Heap`], a view [`bytes`](Self::bytes) gave) or from Rust memory
    /// ([`BytesPart::Slice`]), with no buffer between.
    ///
    /// # Errors
    /// As [`alloc_bytes`](Self::alloc_bytes), for the parts' total length.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator, Shape, TypeDesc};
    /// use safepoint_gc::BytesPart;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let a = s.alloc_bytes(&shape, b"safe").unwrap();
    ///     let b = s.bytes(a, &shape).unwrap();
    ///     let c = s.alloc_bytes_concat(&shape, &[BytesPart::Heap(b), BytesPart::Slice(b"point")]);
    ///     assert!(s.bytes(c.unwrap(), &shape).unwrap().eq_bytes(b"safepoint"));
    /// }).unwrap();
    /// # });
    /// ```
    pub fn alloc_bytes_concat(
        &mut self,
        shape: &Shape,
        parts: &[BytesPart<'_, 's>],
    ) -> Result<Ref<'s>, GcError> {
        if shape.heap != self.pin.gc.id {
            return Err(GcError::WrongHeap);
        }
        if shape.words != ShapeWords::Bytes {
            return Err(self.wrong_kind(shape, NOT_BYTES));
        }
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        let sized = shape.with_len(len)?;
        let obj = self.alloc(&sized)?;
        let mut cells = self.byte_cells(obj, &sized)?.iter();
        for part in parts {
            // The part first in each `zip`: a `zip` asks its first iterator first, so the
            // cells are not advanced past the part's end.
            // Relaxed: as in `alloc_bytes` (the array is not yet published); a heap part's
            // loads as in `Bytes`.
            match part {
                BytesPart::Heap(b) => {
                    for (x, c) in b.bytes.iter().zip(cells.by_ref()) {
                        c.store(x.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                }
                BytesPart::Slice(d) => {
                    for (&x, c) in d.iter().zip(cells.by_ref()) {
                        c.store(x, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(obj)
    }

    // ---- channels ----

    /// Sends `v` on `ch` if that needs no wait (a receiver is waiting, or the buffer has
    /// room): `Ok(false)` otherwise, and nothing is sent; then keep `v` in a frame slot,
    /// leave the section and call [`SectionMutator::send`], which waits (a safepoint). A
    /// value in flight stays alive.
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a channel of another collector; [`GcError::Closed`] if the
    /// channel is closed.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&g, 1);
    /// m.enter(|s| {
    ///     let one = s.int(1).unwrap();
    ///     assert_eq!(s.try_send(&ch, one), Ok(true));
    ///     assert_eq!(s.try_send(&ch, one), Ok(false)); // full: nothing sent
    ///     assert_eq!(s.try_recv(&ch), Ok(Some(one)));
    ///     ch.close();
    ///     assert_eq!(s.try_send(&ch, one), Err(GcError::Closed));
    /// }).unwrap();
    /// # });
    /// ```
    pub fn try_send(&mut self, ch: &RefChan, v: Value<'s>) -> Result<bool, GcError> {
        let p = self.pin.p;
        if !std::ptr::eq(Arc::as_ptr(&ch.chan.gc), self.pin.gc) {
            return Err(GcError::WrongHeap);
        }
        // A reference goes in a root slot of this P (see the `globals` module); a message
        // that is not sent gives it back here, pinned.
        match ch.chan.chan.try_send(ch.chan.message(p, v.bits)) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(msg)) => {
                msg.take(p);
                Ok(false)
            }
            Err(TrySendError::Closed(msg)) => {
                msg.take(p);
                Err(GcError::Closed)
            }
        }
    }

    /// Receives a value from `ch` if one is there now (buffered, or from a waiting sender):
    /// `Ok(None)` if none is; then leave the section and call [`SectionMutator::recv`], which
    /// waits (a safepoint).
    ///
    /// # Errors
    /// [`GcError::WrongHeap`] for a channel of another collector; [`GcError::Closed`] once
    /// the channel is closed and drained.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, GcError, SectionMutator};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// use safepoint_gc::RefChan;
    /// let ch = RefChan::new(&g, 2);
    /// m.enter(|s| {
    ///     assert_eq!(s.try_recv(&ch), Ok(None)); // empty
    ///     let seven = s.int(7).unwrap();
    ///     s.try_send(&ch, seven).unwrap();
    ///     ch.close();
    ///     assert_eq!(s.try_recv(&ch), Ok(Some(seven))); // drained first
    ///     assert_eq!(s.try_recv(&ch), Err(GcError::Closed));
    /// }).unwrap();
    /// # });
    /// ```
    pub fn try_recv(&mut self, ch: &RefChan) -> Result<Option<Value<'s>>, GcError> {
        if !std::ptr::eq(Arc::as_ptr(&ch.chan.gc), self.pin.gc) {
            return Err(GcError::WrongHeap);
        }
        match ch.chan.chan.try_recv() {
            // The value's root slot is released here, pinned (shading it while marking): from
            // now on the section's value keeps it, as a loaded one.
            Ok(msg) => Ok(Some(Value::from_bits(msg.take(self.pin.p)))),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Closed) => Err(GcError::Closed),
        }
    }
}

/// One part of a concatenation ([`Section::alloc_bytes_concat`]): a byte array of the
/// section's heap, or bytes of Rust memory.
#[derive(Clone, Copy, Debug)]
pub enum BytesPart<'a, 's> {
    /// The contents of a byte array, as [`Section::bytes`] gave them.
    Heap(Bytes<'s>),
    /// Bytes of Rust memory.
    Slice(&'a [u8]),
}

impl BytesPart<'_, '_> {
    /// The part's length in bytes.
    ///
    /// ```
    /// use safepoint_gc::BytesPart;
    /// assert_eq!(BytesPart::Slice(b"four").len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        match self {
            BytesPart::Heap(b) => b.len(),
            BytesPart::Slice(d) => d.len(),
        }
    }

    /// Whether the part is empty.
    ///
    /// ```
    /// use safepoint_gc::BytesPart;
    /// assert!(BytesPart::Slice(b"").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reading a byte array's contents in place, with no copy: what comparing and hashing
/// strings needs. A view lives as long as the section that gave it (nothing is freed while a
/// section runs); its loads are atomic, as every method of [`Bytes`].
impl<'a> Bytes<'a> {
    /// The bytes one by one, read in place (no copy): hash them, or compare two arrays with
    /// [`Iterator::cmp`] or [`Iterator::eq`].
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let a = s.alloc_bytes(&shape, b"abc").unwrap();
    ///     let b = s.alloc_bytes(&shape, b"abd").unwrap();
    ///     let (a, b) = (s.bytes(a, &shape).unwrap(), s.bytes(b, &shape).unwrap());
    ///     assert!(a.iter().cmp(b.iter()).is_lt());
    ///     assert_eq!(a.iter().map(u32::from).sum::<u32>(), 97 + 98 + 99);
    /// }).unwrap();
    /// # });
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u8> + 'a {
        // Relaxed: see the type's documentation.
        self.bytes.iter().map(|b| b.load(Ordering::Relaxed))
    }

    /// Copies the contents into the front of `dst` (as many bytes as fit); the number copied.
    ///
    /// ```
    /// # use safepoint_gc::{Gc, SectionMutator, Shape, TypeDesc};
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// # let gc = Gc::new(&rt).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// let shape = Shape::new(&gc, text, 0).unwrap();
    /// # let g = gc.clone();
    /// # rt.block_on(move || {
    /// # let mut m = SectionMutator::new(&g).unwrap();
    /// m.enter(|s| {
    ///     let a = s.alloc_bytes(&shape, b"hello").unwrap();
    ///     let mut buf = [0u8; 3];
    ///     assert_eq!(s.bytes(a, &shape).unwrap().copy_to(&mut buf), 3);
    ///     assert_eq!(&buf, b"hel");
    /// }).unwrap();
    /// # });
    /// ```
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.bytes.len());
        for (d, b) in dst[..n].iter_mut().zip(self.bytes) {
            // Relaxed: see the type's documentation.
            *d = b.load(Ordering::Relaxed);
        }
        n
    }
}
