//! Function tables: what an embedder registers once per function, how it is validated, and the
//! append-only table the walker reads without locks.
//!
//! A [`FuncDesc`] is built by the embedder's compiler and handed to [`Registry::register`],
//! which checks everything, converts the bitmaps to the walker's form (plain words, trailing zero
//! words trimmed, identical bitmaps stored once) and appends one [`FuncInfo`]. The answer is a
//! [`FuncId`]: the index of the function plus its frame size and safepoint count, so that a
//! frame push needs no table lookup.
//!
//! # The table
//!
//! Entries live in chunks of doubling size (64, 128, 256, ... entries) whose addresses never
//! change once allocated; a fixed array of chunk pointers indexes them. A writer (serialised by
//! a mutex: registration is rare and may allocate) writes the entry into its slot, then publishes
//! it by storing the new length with `Release`. A reader loads the length with `Acquire`, so
//! every entry below it, and every chunk pointer it needs, is visible to it. Nothing is ever
//! removed or moved until the registry is dropped, so a `&FuncInfo` lives as long as the
//! `&Registry` it came from.
//!
//! The walker does not use the chunks: it takes a view of a flat *hot* array of
//! `(maps pointer, safepoint count, frame size)` per function, one dependent load from a frame
//! header to its safepoint maps. When the hot array is full the writer copies it into one twice
//! as large and publishes that; the old one is retired, not freed, until the registry drops (a
//! walker may still be reading it), which costs less than the current array in total. This is
//! cheaper on the walker's path than an epoch-protected structure: no pinning, two `Acquire`
//! loads per walk (plain `mov`s on x86_64), no atomic per frame.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bitvec::prelude::*;

/// The largest frame a function may declare, in slots (8 MiB of slots).
pub const MAX_FRAME_SLOTS: usize = 1 << 20;

/// The most safepoints a function may declare.
pub const MAX_SAFEPOINTS: usize = 1 << 24;

/// The most functions one registry holds. Indices are below this, so the top two bits of a
/// frame's 32-bit function field are free to mark a handle frame and a sealed function frame.
pub const MAX_FUNCS: usize = 1 << 30;

/// Entries in chunk 0; chunk `k` holds `CHUNK0 << k`.
const CHUNK0_SHIFT: u32 = 6;
const CHUNK0: usize = 1 << CHUNK0_SHIFT;
/// Enough chunks for `MAX_FUNCS` entries: `CHUNK0 * (2^NUM_CHUNKS - 1) >= MAX_FUNCS`.
const NUM_CHUNKS: usize = 25;
const _: () = assert!(CHUNK0 * ((1 << NUM_CHUNKS) - 1) >= MAX_FUNCS);

/// A registered function, as the frame push sees it: its index in the registry, its frame size
/// and its safepoint count. Only a [`Registry`] makes one.
///
/// Carrying the two sizes means [`crate::ManagedStack::push`] needs no table lookup. Using a
/// `FuncId` with a registry other than the one that made it is a logic error: the walker finds
/// the frame does not match that registry's entry and reports the stack as corrupted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FuncId {
    pub(crate) index: u32,
    pub(crate) slots: u32,
    pub(crate) safepoints: u32,
}

impl FuncId {
    /// The function's index in its registry (dense, from 0, in registration order).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let a = reg.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
    /// let b = reg.register(FuncDesc::new("b", 1, 0, 1)).unwrap();
    /// assert_eq!((a.index(), b.index()), (0, 1));
    /// assert_eq!(reg.by_index(1).unwrap().name(), "b");
    /// ```
    pub fn index(self) -> u32 {
        self.index
    }
    /// Frame size in slots (not counting the two header words).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let f = Registry::new().register(FuncDesc::new("f", 6, 2, 1)).unwrap();
    /// assert_eq!(f.frame_slots(), 6); // carried in the id: no lookup
    /// ```
    pub fn frame_slots(self) -> usize {
        self.slots as usize
    }
    /// Number of safepoints; valid safepoint indices are `0..safepoints()`.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let f = Registry::new().register(FuncDesc::new("f", 1, 0, 4)).unwrap();
    /// assert_eq!(f.safepoints(), 4);
    /// ```
    pub fn safepoints(self) -> usize {
        self.safepoints as usize
    }
}

/// Which of a safepoint's two bitmaps an error or a query is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BitmapKind {
    /// Slots holding a reference.
    Refs,
    /// Slots holding a tagged value (a reference only when its tag says so).
    Tagged,
}

impl fmt::Display for BitmapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BitmapKind::Refs => "reference",
            BitmapKind::Tagged => "tagged",
        })
    }
}

/// What one builder call recorded; validated only at registration.
#[derive(Clone, Debug)]
enum MapSpec {
    /// A bitmap of `len` bits with these bits set.
    Bits {
        len: usize,
        ones: Vec<usize>,
    },
    Slots(Vec<usize>),
}

/// The description of one function, built by the embedder and consumed by
/// [`Registry::register`].
///
/// The builder records; it checks nothing. Registration checks everything and says precisely
/// what is wrong. A safepoint with no bitmap given has no live slots of that kind.
///
/// ```
/// # #[cfg(not(miri))] { // bitvec 1 breaks Miri's Stacked Borrows rules (see `refs`)
/// use safepoint_stackmap::{FuncDesc, Registry};
/// use bitvec::prelude::*;
///
/// let reg = Registry::new();
/// // fib(n): 3 slots (n, a, b), one argument, safepoints 0 (entry) and 1 (the recursive call).
/// let fib = reg
///     .register(
///         FuncDesc::new("fib", 3, 1, 2)
///             .refs(0, bits![1, 0, 0])
///             .refs_at(1, &[0, 1])
///             .line(1, 12),
///     )
///     .unwrap();
/// assert_eq!(fib.frame_slots(), 3);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FuncDesc {
    name: String,
    frame_slots: usize,
    args: usize,
    safepoints: usize,
    maps: Vec<(usize, BitmapKind, MapSpec)>,
    lines: Vec<(usize, u32)>,
}

impl FuncDesc {
    /// A function called `name` (unique within its registry) whose frame has `frame_slots`
    /// slots, the first `args` of which are its arguments, with safepoints `0..safepoints`.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// // `add(a, b)`: four slots, two of them its arguments, three safepoints.
    /// let f = Registry::new().register(FuncDesc::new("add", 4, 2, 3)).unwrap();
    /// assert_eq!((f.frame_slots(), f.safepoints()), (4, 3));
    /// ```
    pub fn new(
        name: impl Into<String>,
        frame_slots: usize,
        args: usize,
        safepoints: usize,
    ) -> Self {
        FuncDesc {
            name: name.into(),
            frame_slots,
            args,
            safepoints,
            maps: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// The slots holding live references at `safepoint`: a bitmap of exactly `frame_slots`
    /// bits, bit `i` for slot `i`.
    ///
    /// bitvec is used here, at the edge, and nowhere inside: bitvec 1 makes zero-sized
    /// references that Miri's Stacked Borrows rejects, so the stored form is plain words and
    /// Miri runs every test except those of this conversion.
    ///
    /// ```
    /// # if cfg!(miri) { return; } // bitvec 1's zero-sized references, which Miri rejects
    /// use safepoint_stackmap::bitvec::prelude::*;
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 0, 1).refs(0, bits![0, 1, 0, 1])).unwrap();
    /// assert_eq!(reg.get(f).unwrap().live_slots(0, BitmapKind::Refs), Some(vec![1, 3]));
    /// ```
    pub fn refs<T: BitStore, O: BitOrder>(
        mut self,
        safepoint: usize,
        bits: &BitSlice<T, O>,
    ) -> Self {
        let spec = MapSpec::Bits { len: bits.len(), ones: bits.iter_ones().collect() };
        self.maps.push((safepoint, BitmapKind::Refs, spec));
        self
    }

    /// The slots holding live tagged values at `safepoint`, as for [`FuncDesc::refs`].
    ///
    /// ```
    /// # if cfg!(miri) { return; } // bitvec 1's zero-sized references, which Miri rejects
    /// use safepoint_stackmap::bitvec::prelude::*;
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 3, 0, 1).tagged(0, bits![1, 0, 0])).unwrap();
    /// assert_eq!(reg.get(f).unwrap().live_slots(0, BitmapKind::Tagged), Some(vec![0]));
    /// ```
    pub fn tagged<T: BitStore, O: BitOrder>(
        mut self,
        safepoint: usize,
        bits: &BitSlice<T, O>,
    ) -> Self {
        let spec = MapSpec::Bits { len: bits.len(), ones: bits.iter_ones().collect() };
        self.maps.push((safepoint, BitmapKind::Tagged, spec));
        self
    }

    /// The slots holding live references at `safepoint`, as a list of slot indices.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 0, 2).refs_at(1, &[2, 0])).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.live_slots(0, BitmapKind::Refs), Some(vec![])); // none given: nothing live
    /// assert_eq!(info.live_slots(1, BitmapKind::Refs), Some(vec![0, 2]));
    /// ```
    pub fn refs_at(mut self, safepoint: usize, slots: &[usize]) -> Self {
        self.maps.push((safepoint, BitmapKind::Refs, MapSpec::Slots(slots.to_vec())));
        self
    }

    /// The slots holding live tagged values at `safepoint`, as a list of slot indices.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).tagged_at(0, &[1])).unwrap();
    /// assert_eq!(reg.get(f).unwrap().live_slots(0, BitmapKind::Tagged), Some(vec![1]));
    /// // A slot cannot be both.
    /// let both = FuncDesc::new("g", 2, 0, 1).refs_at(0, &[1]).tagged_at(0, &[1]);
    /// assert!(reg.register(both).is_err());
    /// ```
    pub fn tagged_at(mut self, safepoint: usize, slots: &[usize]) -> Self {
        self.maps.push((safepoint, BitmapKind::Tagged, MapSpec::Slots(slots.to_vec())));
        self
    }

    /// The source line of `safepoint`, for tracebacks.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 2).line(1, 42)).unwrap();
    /// assert_eq!(reg.get(f).unwrap().line(1), Some(42));
    /// assert_eq!(reg.get(f).unwrap().line(0), None);
    /// ```
    pub fn line(mut self, safepoint: usize, line: u32) -> Self {
        self.lines.push((safepoint, line));
        self
    }

    /// The name this description was made with.
    ///
    /// ```
    /// use safepoint_stackmap::FuncDesc;
    /// assert_eq!(FuncDesc::new("main", 1, 0, 1).name(), "main");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why a registration was refused. Nothing of a refused function is stored.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name is empty.
    EmptyName,
    /// A function of that name is already registered.
    DuplicateName {
        /// The name.
        name: String,
        /// The function registered first.
        existing: FuncId,
    },
    /// The frame has more than [`MAX_FRAME_SLOTS`] slots.
    FrameTooLarge {
        /// The function.
        name: String,
        /// The frame size asked for.
        slots: usize,
        /// [`MAX_FRAME_SLOTS`].
        max: usize,
    },
    /// More arguments than frame slots.
    TooManyArgs {
        /// The function.
        name: String,
        /// The argument count.
        args: usize,
        /// The frame size.
        slots: usize,
    },
    /// No safepoints: a pushed frame always stands at one (safepoint 0 at entry).
    NoSafepoints {
        /// The function.
        name: String,
    },
    /// More than [`MAX_SAFEPOINTS`] safepoints.
    TooManySafepoints {
        /// The function.
        name: String,
        /// The count asked for.
        count: usize,
        /// [`MAX_SAFEPOINTS`].
        max: usize,
    },
    /// A bitmap or a line was given for a safepoint index not below the safepoint count.
    SafepointOutOfRange {
        /// The function.
        name: String,
        /// The index given.
        safepoint: usize,
        /// The safepoint count.
        count: usize,
        /// What was given for it: "reference bitmap", "tagged bitmap" or "line".
        what: &'static str,
    },
    /// A bitmap whose length is not the frame size.
    WrongBitmapLength {
        /// The function.
        name: String,
        /// The safepoint.
        safepoint: usize,
        /// Which bitmap.
        kind: BitmapKind,
        /// Its length.
        len: usize,
        /// The frame size.
        expected: usize,
    },
    /// A slot index (from [`FuncDesc::refs_at`] or [`FuncDesc::tagged_at`]) past the frame.
    SlotOutOfRange {
        /// The function.
        name: String,
        /// The safepoint.
        safepoint: usize,
        /// Which bitmap.
        kind: BitmapKind,
        /// The slot index given.
        slot: usize,
        /// The frame size.
        slots: usize,
    },
    /// The same bitmap of the same safepoint was given twice.
    DuplicateBitmap {
        /// The function.
        name: String,
        /// The safepoint.
        safepoint: usize,
        /// Which bitmap.
        kind: BitmapKind,
    },
    /// A line was given twice for the same safepoint.
    DuplicateLine {
        /// The function.
        name: String,
        /// The safepoint.
        safepoint: usize,
    },
    /// A slot is marked both as a reference and as a tagged value at the same safepoint. The
    /// kinds exclude each other: a tagged slot is a reference only when its tag says so.
    RefTaggedOverlap {
        /// The function.
        name: String,
        /// The safepoint.
        safepoint: usize,
        /// The first slot in both bitmaps.
        slot: usize,
    },
    /// The registry holds [`MAX_FUNCS`] functions already.
    RegistryFull {
        /// [`MAX_FUNCS`].
        max: usize,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RegisterError::*;
        match self {
            EmptyName => write!(f, "function name is empty"),
            DuplicateName { name, existing } => {
                write!(f, "function {name:?} is already registered (index {})", existing.index)
            }
            FrameTooLarge { name, slots, max } => write!(
                f,
                "function {name:?}: frame of {slots} slots is larger than the maximum of {max}"
            ),
            TooManyArgs { name, args, slots } => write!(
                f,
                "function {name:?}: {args} arguments do not fit in a frame of {slots} slots"
            ),
            NoSafepoints { name } => write!(
                f,
                "function {name:?}: has no safepoints (at least safepoint 0, the entry, is needed)"
            ),
            TooManySafepoints { name, count, max } => {
                write!(f, "function {name:?}: {count} safepoints is more than the maximum of {max}")
            }
            SafepointOutOfRange { name, safepoint, count, what } => write!(
                f,
                "function {name:?}: {what} given for safepoint {safepoint}, \
                 but it has safepoints 0..{count}"
            ),
            WrongBitmapLength { name, safepoint, kind, len, expected } => write!(
                f,
                "function {name:?}: {kind} bitmap of safepoint {safepoint} has {len} bits, \
                 but the frame has {expected} slots"
            ),
            SlotOutOfRange { name, safepoint, kind, slot, slots } => write!(
                f,
                "function {name:?}: {kind} slot {slot} at safepoint {safepoint} is past \
                 the frame of {slots} slots"
            ),
            DuplicateBitmap { name, safepoint, kind } => {
                write!(f, "function {name:?}: {kind} bitmap of safepoint {safepoint} given twice")
            }
            DuplicateLine { name, safepoint } => {
                write!(f, "function {name:?}: line of safepoint {safepoint} given twice")
            }
            RefTaggedOverlap { name, safepoint, slot } => write!(
                f,
                "function {name:?}: slot {slot} at safepoint {safepoint} is marked both \
                 reference and tagged"
            ),
            RegistryFull { max } => write!(f, "registry is full ({max} functions)"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// The live slots of one safepoint, in the walker's form: bitmap words (bit `i` of word `w` is
/// slot `64 * w + i`), trailing zero words dropped, shared between every safepoint and function
/// with the same bits. The first word of each is also kept inline, so that for frames of up to
/// 64 slots (nearly all) the walker reads only this entry and never follows the pointers.
#[derive(Debug)]
pub(crate) struct SafepointMap {
    refs0: usize,
    tagged0: usize,
    pub(crate) refs: Arc<[usize]>,
    pub(crate) tagged: Arc<[usize]>,
}

impl SafepointMap {
    fn new(refs: Arc<[usize]>, tagged: Arc<[usize]>) -> Self {
        SafepointMap {
            refs0: refs.first().copied().unwrap_or(0),
            tagged0: tagged.first().copied().unwrap_or(0),
            refs,
            tagged,
        }
    }

    /// Calls `f` with every live reference slot, in increasing order.
    #[inline(always)]
    pub(crate) fn each_ref(&self, f: impl FnMut(usize)) {
        for_each_bit_split(self.refs0, &self.refs, f)
    }

    /// Calls `f` with every live tagged slot, in increasing order.
    #[inline(always)]
    pub(crate) fn each_tagged(&self, f: impl FnMut(usize)) {
        for_each_bit_split(self.tagged0, &self.tagged, f)
    }

    /// Calls `f` with every slot below `n` that is neither a live reference nor a live
    /// tagged slot (a dead one), in increasing order.
    pub(crate) fn each_dead(&self, n: usize, mut f: impl FnMut(usize)) {
        let bits = usize::BITS as usize;
        for w in 0..n.div_ceil(bits) {
            let live =
                self.refs.get(w).copied().unwrap_or(0) | self.tagged.get(w).copied().unwrap_or(0);
            let mut dead = !live;
            if n - w * bits < bits {
                dead &= (1 << (n - w * bits)) - 1;
            }
            while dead != 0 {
                let b = dead.trailing_zeros() as usize;
                dead &= dead - 1;
                f(w * bits + b);
            }
        }
    }
}

/// [`for_each_bit`] of `all`, whose first word is `first`, read from the caller's copy.
#[inline(always)]
fn for_each_bit_split(first: usize, all: &[usize], mut f: impl FnMut(usize)) {
    let mut bits = first;
    while bits != 0 {
        let b = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        f(b);
    }
    if all.len() > 1 {
        for_each_bit(&all[1..], |i| f(i + usize::BITS as usize));
    }
}

/// A registered function, as stored. Reached from [`Registry::get`].
#[derive(Debug)]
pub struct FuncInfo {
    id: FuncId,
    name: Box<str>,
    args: u32,
    pub(crate) maps: Box<[SafepointMap]>,
    lines: Option<Box<[Option<u32>]>>,
}

impl FuncInfo {
    /// Its id.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.id(), f);
    /// ```
    pub fn id(&self) -> FuncId {
        self.id
    }
    /// Its name.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.name(), "f");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Frame size in slots.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.frame_slots(), 4);
    /// ```
    pub fn frame_slots(&self) -> usize {
        self.id.slots as usize
    }
    /// Argument count (the first slots of the frame).
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.args(), 1);
    /// ```
    pub fn args(&self) -> usize {
        self.args as usize
    }
    /// Safepoint count.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.safepoints(), 2);
    /// ```
    pub fn safepoints(&self) -> usize {
        self.maps.len()
    }
    /// The slots of `kind` live at `safepoint`, in increasing order, or `None` if there is no
    /// such safepoint.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.live_slots(1, BitmapKind::Refs), Some(vec![0, 3]));
    /// assert_eq!(info.live_slots(2, BitmapKind::Refs), None); // no safepoint 2
    /// ```
    pub fn live_slots(&self, safepoint: usize, kind: BitmapKind) -> Option<Vec<usize>> {
        let map = self.maps.get(safepoint)?;
        let mut v = Vec::new();
        for_each_bit(
            match kind {
                BitmapKind::Refs => &map.refs,
                BitmapKind::Tagged => &map.tagged,
            },
            |i| v.push(i),
        );
        Some(v)
    }

    /// The source line of `safepoint`, if one was given.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// assert_eq!(info.line(1), Some(9));
    /// ```
    pub fn line(&self, safepoint: usize) -> Option<u32> {
        self.lines.as_ref()?.get(safepoint).copied().flatten()
    }
    /// The slots of `kind` live at `safepoint`, as a bitmap of `frame_slots()` bits, or `None`
    /// if there is no such safepoint.
    ///
    /// ```
    /// use safepoint_stackmap::{BitmapKind, FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(1, &[0, 3]).line(1, 9)).unwrap();
    /// let info = reg.get(f).unwrap();
    /// # if cfg!(miri) { return; } // bitvec 1's zero-sized references, which Miri rejects
    /// let b = info.bitmap(1, BitmapKind::Refs).unwrap();
    /// assert_eq!(b.iter().map(|bit| *bit).collect::<Vec<bool>>(), [true, false, false, true]);
    /// ```
    pub fn bitmap(&self, safepoint: usize, kind: BitmapKind) -> Option<BitVec> {
        let map = self.maps.get(safepoint)?;
        let words = match kind {
            BitmapKind::Refs => &map.refs,
            BitmapKind::Tagged => &map.tagged,
        };
        // Built from words, not bit by bit: bitvec's bit writes break Stacked Borrows under
        // Miri, its whole-word constructors do not.
        let n = self.frame_slots();
        let mut v = words.to_vec();
        v.resize(n.div_ceil(usize::BITS as usize), 0);
        let mut bv = BitVec::from_vec(v);
        bv.truncate(n);
        Some(bv)
    }
}

/// Calls `f` with the index of every set bit of `words`, in increasing order.
#[inline(always)]
pub(crate) fn for_each_bit(words: &[usize], mut f: impl FnMut(usize)) {
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            f(w * usize::BITS as usize + b);
        }
    }
}

/// What the walker needs of a function, in a flat array indexed by function index: one
/// dependent load from the frame header to the safepoint maps.
#[derive(Clone, Copy)]
struct Hot {
    /// The function's `FuncInfo::maps`.
    maps: *const SafepointMap,
    nmaps: u32,
    slots: u32,
}

const NO_HOT: Hot = Hot { maps: std::ptr::null(), nmaps: 0, slots: 0 };

/// The writer's side of the registry, under its mutex.
#[derive(Default)]
struct Writer {
    names: HashMap<Box<str>, FuncId>,
    bitmaps: HashSet<Arc<[usize]>>,
    /// Capacity of the current hot array (`Registry::hot`).
    hot_cap: usize,
    /// Hot arrays outgrown but perhaps still read by a walker: freed with the registry (their
    /// sizes halve going back, so together they take less than the current one).
    retired: Vec<(*mut Hot, usize)>,
}

impl Writer {
    /// The stored copy of `words`, shared if it exists already.
    fn intern(&mut self, words: Vec<usize>) -> Arc<[usize]> {
        if let Some(a) = self.bitmaps.get(words.as_slice()) {
            return a.clone();
        }
        let a: Arc<[usize]> = words.into();
        self.bitmaps.insert(a.clone());
        a
    }
}

/// An append-only table of functions, registered by embedders and read without locks by
/// walkers on any thread.
///
/// It is an object rather than a process global: the runtime owns one (and hands walkers a
/// reference), and tests make as many as they like. [`Registry::register`] takes `&self`, so
/// embedders may register from any thread at any time, including while collectors walk stacks
/// that use the registry.
pub struct Registry {
    /// Number of published entries. Stored `Release` by the writer after the entry (and its
    /// chunk pointer) is written; loaded `Acquire` by readers before they touch an entry.
    len: AtomicUsize,
    /// Chunk `k` holds `CHUNK0 << k` entries, of which the first ones below `len` are
    /// initialised. Written once, under the writer lock, before any entry in it is published.
    chunks: [AtomicPtr<FuncInfo>; NUM_CHUNKS],
    /// The hot array: `Hot` of every published function, at least `len` entries. Replaced by
    /// a copy twice as large when full (the old one retired, not freed). Stored `Release`
    /// before the `len` that needs it; loaded `Acquire` after `len`.
    hot: AtomicPtr<Hot>,
    writer: Mutex<Writer>,
}

/// A walker's view of the registry: the functions published when it was taken.
#[derive(Clone, Copy)]
pub(crate) struct HotView<'r> {
    hot: *const Hot,
    len: usize,
    reg: &'r Registry,
}

impl<'r> HotView<'r> {
    /// The frame size and safepoint maps of function `index`.
    #[inline(always)]
    pub(crate) fn get(&self, index: u32) -> Option<(usize, &'r [SafepointMap])> {
        let i = index as usize;
        if i >= self.len {
            return self.get_slow(index);
        }
        // SAFETY: `i < len <= capacity` of the array `hot` (taken after `len`, see
        // `Registry::view`), whose entry `i` was written before `len` was published and is never
        // written again; retired arrays live as long as the registry (`'r`).
        let h = unsafe { *self.hot.add(i) };
        // SAFETY: `maps` points to `nmaps` maps of a published `FuncInfo`, which lives, unmoved
        // and unchanged, as long as the registry.
        let maps = unsafe { std::slice::from_raw_parts(h.maps, h.nmaps as usize) };
        Some((h.slots as usize, maps))
    }

    /// A function registered after the view was taken.
    #[cold]
    fn get_slow(&self, index: u32) -> Option<(usize, &'r [SafepointMap])> {
        let f = self.reg.by_index(index)?;
        Some((f.frame_slots(), &f.maps))
    }
}

// SAFETY: the raw chunk pointers own `FuncInfo`s, which are `Send + Sync`; entries are written
// only under the writer mutex before being published with `Release`, and never written again.
unsafe impl Send for Registry {}
// SAFETY: as above; readers only take shared references to published entries.
unsafe impl Sync for Registry {}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("len", &self.len()).finish()
    }
}

/// Chunk number and offset within it of entry `i`.
#[inline(always)]
fn locate(i: usize) -> (usize, usize) {
    let j = i + CHUNK0;
    let k = (usize::BITS - 1 - j.leading_zeros() - CHUNK0_SHIFT) as usize;
    (k, j - (CHUNK0 << k))
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// use safepoint_stackmap::Registry;
    /// let reg = Registry::new();
    /// assert!(reg.is_empty());
    /// ```
    pub fn new() -> Self {
        Registry {
            len: AtomicUsize::new(0),
            chunks: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            hot: AtomicPtr::new(std::ptr::null_mut()),
            writer: Mutex::new(Writer::default()),
        }
    }

    /// Number of functions registered.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// reg.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
    /// assert_eq!(reg.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        // Acquire: pairs with the Release store in `register`, like every reader.
        self.len.load(Ordering::Acquire)
    }

    /// Whether no function is registered.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// assert!(reg.is_empty());
    /// reg.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
    /// assert!(!reg.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The function `id`, if it belongs to this registry.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
    /// assert_eq!(reg.get(f).unwrap().name(), "a");
    /// assert!(Registry::new().get(f).is_none()); // another registry's id
    /// ```
    pub fn get(&self, id: FuncId) -> Option<&FuncInfo> {
        self.by_index(id.index).filter(|f| f.id == id)
    }

    /// The function of index `index`, if registered.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// reg.register(FuncDesc::new("a", 1, 0, 1)).unwrap();
    /// assert_eq!(reg.by_index(0).unwrap().name(), "a");
    /// assert!(reg.by_index(1).is_none());
    /// ```
    #[inline]
    pub fn by_index(&self, index: u32) -> Option<&FuncInfo> {
        let i = index as usize;
        // Acquire: pairs with the Release store of `len` in `register`, so entry `i` and the
        // pointer to its chunk are visible.
        if i >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (k, off) = locate(i);
        // Relaxed: the chunk pointer was stored before `len` was published (see above).
        let chunk = self.chunks[k].load(Ordering::Relaxed);
        // SAFETY: `i < len`, so chunk `k` is allocated with more than `off` entries and entry
        // `off` was initialised before `len` was published; entries are never written again
        // nor freed before the registry is dropped, which `&self` prevents.
        Some(unsafe { &*chunk.add(off) })
    }

    /// A view for one walk.
    #[inline(always)]
    pub(crate) fn view(&self) -> HotView<'_> {
        // Acquire, both: pairs with the Release stores in `register`. `len` first: the hot
        // array stored before that `len` was published, or a later copy, holds its entries.
        let len = self.len.load(Ordering::Acquire);
        let hot = self.hot.load(Ordering::Acquire);
        HotView { hot, len, reg: self }
    }

    /// The function called `name`.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("main", 1, 0, 1)).unwrap();
    /// assert_eq!(reg.find("main"), Some(f));
    /// assert_eq!(reg.find("other"), None);
    /// ```
    pub fn find(&self, name: &str) -> Option<FuncId> {
        self.lock().names.get(name).copied()
    }

    /// How many distinct bitmaps are stored (identical bitmaps, of any function, safepoint or
    /// kind, are stored once; the all-empty bitmap counts as one).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// reg.register(FuncDesc::new("a", 2, 0, 2).refs_at(0, &[1]).refs_at(1, &[1])).unwrap();
    /// reg.register(FuncDesc::new("b", 2, 0, 1).refs_at(0, &[1])).unwrap();
    /// let n = reg.distinct_bitmaps();
    /// assert!(n >= 1 && n <= 3); // equal bitmaps are stored once
    /// ```
    pub fn distinct_bitmaps(&self) -> usize {
        self.lock().bitmaps.len()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave the writer inconsistent: every check runs
        // before anything is inserted. So a poisoned lock is taken over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates `desc` and, if it is valid, stores it and returns its id. Stores nothing
    /// otherwise.
    ///
    /// Allocates; takes the registry's writer lock (readers never take it).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, Registry};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).refs_at(0, &[1])).unwrap();
    /// assert_eq!(f.frame_slots(), 2);
    /// // Refused, and nothing stored: a map naming a slot past the frame, a name used twice.
    /// assert!(reg.register(FuncDesc::new("g", 2, 0, 1).refs_at(0, &[2])).is_err());
    /// assert!(reg.register(FuncDesc::new("f", 1, 0, 1)).is_err());
    /// assert_eq!(reg.len(), 1);
    /// ```
    pub fn register(&self, desc: FuncDesc) -> Result<FuncId, RegisterError> {
        let mut w = self.lock();
        let checked = check(&desc)?;
        if let Some(&existing) = w.names.get(desc.name.as_str()) {
            return Err(RegisterError::DuplicateName { name: desc.name, existing });
        }
        let i = self.len.load(Ordering::Relaxed); // only writers store it, and we hold the lock
        if i >= MAX_FUNCS {
            return Err(RegisterError::RegistryFull { max: MAX_FUNCS });
        }
        // Everything is checked: from here on nothing fails.
        let id = FuncId {
            index: i as u32,
            slots: desc.frame_slots as u32,
            safepoints: desc.safepoints as u32,
        };
        let maps: Box<[SafepointMap]> = checked
            .maps
            .into_iter()
            .map(|(r, t)| SafepointMap::new(w.intern(r), w.intern(t)))
            .collect();
        let info = FuncInfo {
            id,
            name: desc.name.clone().into_boxed_str(),
            args: desc.args as u32,
            maps,
            lines: checked.lines,
        };
        let (k, off) = locate(i);
        let mut chunk = self.chunks[k].load(Ordering::Relaxed);
        if chunk.is_null() {
            let b: Box<[MaybeUninit<FuncInfo>]> = Box::new_uninit_slice(CHUNK0 << k);
            chunk = Box::into_raw(b).cast::<FuncInfo>();
            // Relaxed: published to readers by the Release store of `len` below.
            self.chunks[k].store(chunk, Ordering::Relaxed);
        }
        // SAFETY: chunk `k` has `CHUNK0 << k > off` entries; entry `off` is unpublished
        // (`i == len`), so no reader looks at it, and we are the only writer (lock held).
        unsafe { chunk.add(off).write(info) };
        // SAFETY: just written; from now on only shared references to it are made.
        let info = unsafe { &*chunk.add(off) };
        let hot = Hot { maps: info.maps.as_ptr(), nmaps: info.maps.len() as u32, slots: id.slots };
        let mut arr = self.hot.load(Ordering::Relaxed); // only writers store it
        if i == w.hot_cap {
            let cap = (2 * w.hot_cap).max(CHUNK0);
            let new = Box::into_raw(vec![NO_HOT; cap].into_boxed_slice()).cast::<Hot>();
            if !arr.is_null() {
                // SAFETY: both arrays hold at least `i` entries, and are distinct; readers only
                // read the old one.
                unsafe { std::ptr::copy_nonoverlapping(arr, new, i) };
                let old_cap = w.hot_cap;
                w.retired.push((arr, old_cap));
            }
            // Release: pairs with the Acquire in `view`, with the store of `len` below.
            self.hot.store(new, Ordering::Release);
            w.hot_cap = cap;
            arr = new;
        }
        // SAFETY: `i < hot_cap`; entry `i` of the current array is unpublished (`i == len`),
        // so no reader looks at it.
        unsafe { arr.add(i).write(hot) };
        // Release: pairs with the Acquire loads of readers (`by_index`, `len`), publishing the
        // entry and the chunk pointer.
        self.len.store(i + 1, Ordering::Release);
        w.names.insert(desc.name.into_boxed_str(), id);
        Ok(id)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let w = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut arrays = std::mem::take(&mut w.retired);
        let cur = *self.hot.get_mut();
        if !cur.is_null() {
            arrays.push((cur, w.hot_cap));
        }
        for (p, cap) in arrays {
            // SAFETY: each was made by `Box::into_raw` of a boxed slice of `cap` entries, and no
            // walker can hold a view any more (`&mut self`).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, cap)) });
        }
        let len = *self.len.get_mut();
        for (k, c) in self.chunks.iter_mut().enumerate() {
            let chunk = *c.get_mut();
            if chunk.is_null() {
                continue;
            }
            let size = CHUNK0 << k;
            let start = (CHUNK0 << k) - CHUNK0; // index of the chunk's first entry
            let live = len.saturating_sub(start).min(size);
            // SAFETY: the chunk was made by `Box::new_uninit_slice(size)` in `register`; its
            // first `live` entries are initialised and owned by us (`&mut self`).
            unsafe {
                for e in 0..live {
                    chunk.add(e).drop_in_place();
                }
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    chunk.cast::<MaybeUninit<FuncInfo>>(),
                    size,
                )));
            }
        }
    }
}

/// A description that passed every check, in the form it is stored.
struct Checked {
    maps: Vec<(Vec<usize>, Vec<usize>)>,
    lines: Option<Box<[Option<u32>]>>,
}

/// Every check of a description, in the order its errors are reported.
fn check(d: &FuncDesc) -> Result<Checked, RegisterError> {
    use RegisterError::*;
    let name = || d.name.clone();
    if d.name.is_empty() {
        return Err(EmptyName);
    }
    if d.frame_slots > MAX_FRAME_SLOTS {
        return Err(FrameTooLarge { name: name(), slots: d.frame_slots, max: MAX_FRAME_SLOTS });
    }
    if d.args > d.frame_slots {
        return Err(TooManyArgs { name: name(), args: d.args, slots: d.frame_slots });
    }
    if d.safepoints == 0 {
        return Err(NoSafepoints { name: name() });
    }
    if d.safepoints > MAX_SAFEPOINTS {
        return Err(TooManySafepoints { name: name(), count: d.safepoints, max: MAX_SAFEPOINTS });
    }
    let n = d.frame_slots;
    let mut bitmaps: Vec<[Option<Vec<usize>>; 2]> = vec![[None, None]; d.safepoints];
    for (sp, kind, spec) in &d.maps {
        let (sp, kind) = (*sp, *kind);
        if sp >= d.safepoints {
            return Err(SafepointOutOfRange {
                name: name(),
                safepoint: sp,
                count: d.safepoints,
                what: match kind {
                    BitmapKind::Refs => "reference bitmap",
                    BitmapKind::Tagged => "tagged bitmap",
                },
            });
        }
        let (len, ones) = match spec {
            MapSpec::Bits { len, ones } => (*len, ones),
            MapSpec::Slots(slots) => (n, slots),
        };
        if len != n {
            return Err(WrongBitmapLength { name: name(), safepoint: sp, kind, len, expected: n });
        }
        let mut bits = vec![0usize; n.div_ceil(usize::BITS as usize)];
        for &s in ones {
            if s >= n {
                return Err(SlotOutOfRange {
                    name: name(),
                    safepoint: sp,
                    kind,
                    slot: s,
                    slots: n,
                });
            }
            bits[s / usize::BITS as usize] |= 1 << (s % usize::BITS as usize);
        }
        let cell = &mut bitmaps[sp][kind as usize];
        if cell.is_some() {
            return Err(DuplicateBitmap { name: name(), safepoint: sp, kind });
        }
        *cell = Some(bits);
    }
    let mut maps = Vec::with_capacity(d.safepoints);
    for (sp, [r, t]) in bitmaps.into_iter().enumerate() {
        let r = words(r);
        let t = words(t);
        if let Some(w) = r.iter().zip(&t).position(|(a, b)| a & b != 0) {
            let slot = w * usize::BITS as usize + (r[w] & t[w]).trailing_zeros() as usize;
            return Err(RefTaggedOverlap { name: name(), safepoint: sp, slot });
        }
        maps.push((r, t));
    }
    let lines = if d.lines.is_empty() {
        None
    } else {
        let mut lines = vec![None; d.safepoints];
        for &(sp, line) in &d.lines {
            if sp >= d.safepoints {
                return Err(SafepointOutOfRange {
                    name: name(),
                    safepoint: sp,
                    count: d.safepoints,
                    what: "line",
                });
            }
            if lines[sp].replace(line).is_some() {
                return Err(DuplicateLine { name: name(), safepoint: sp });
            }
        }
        Some(lines.into_boxed_slice())
    };
    Ok(Checked { maps, lines })
}

/// A bitmap as words with trailing zero words dropped (so all empty bitmaps are the same).
fn words(b: Option<Vec<usize>>) -> Vec<usize> {
    let mut w = b.unwrap_or_default();
    while w.last() == Some(&0) {
        w.pop();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg1(d: FuncDesc) -> Result<FuncId, RegisterError> {
        Registry::new().register(d)
    }

    #[test]
    fn locate_covers_chunks_without_gaps() {
        let mut expect = (0, 0);
        for i in 0..CHUNK0 * 15 {
            assert_eq!(locate(i), expect, "entry {i}");
            expect.1 += 1;
            if expect.1 == CHUNK0 << expect.0 {
                expect = (expect.0 + 1, 0);
            }
        }
        assert_eq!(locate(MAX_FUNCS - 1).0, NUM_CHUNKS - 1);
    }

    #[test]
    fn registers_and_reads_back() {
        let reg = Registry::new();
        let id = reg
            .register(
                FuncDesc::new("f", 5, 2, 3)
                    .refs_at(0, &[1, 0])
                    .tagged_at(1, &[4])
                    .refs_at(2, &[0, 3])
                    .line(2, 40),
            )
            .unwrap();
        assert_eq!((id.index(), id.frame_slots(), id.safepoints()), (0, 5, 3));
        let f = reg.get(id).unwrap();
        assert_eq!(f.name(), "f");
        assert_eq!(f.args(), 2);
        assert_eq!(f.safepoints(), 3);
        let live = |sp, k| f.live_slots(sp, k);
        assert_eq!(live(0, BitmapKind::Refs), Some(vec![0, 1]));
        assert_eq!(live(0, BitmapKind::Tagged), Some(vec![]));
        assert_eq!(live(1, BitmapKind::Tagged), Some(vec![4]));
        assert_eq!(live(2, BitmapKind::Refs), Some(vec![0, 3]));
        assert_eq!(live(3, BitmapKind::Refs), None);
        assert_eq!((f.line(2), f.line(1), f.line(9)), (Some(40), None, None));
        assert_eq!(reg.find("f"), Some(id));
        assert_eq!(reg.find("g"), None);
        assert_eq!(reg.len(), 1);
    }

    /// bitvec in and out (not under Miri: see `FuncDesc::refs`).
    #[cfg(not(miri))]
    #[test]
    fn bitvec_round_trip() {
        let reg = Registry::new();
        let mut refs: BitVec = BitVec::repeat(false, 70);
        for i in [0, 1, 69] {
            refs.set(i, true);
        }
        let mut tagged = bitvec![u8, Msb0; 0; 70];
        tagged.set(5, true);
        let id =
            reg.register(FuncDesc::new("f", 70, 0, 2).refs(0, &refs).tagged(1, &tagged)).unwrap();
        assert_eq!(reg.get(id).unwrap().live_slots(1, BitmapKind::Tagged), Some(vec![5]));
        let f = reg.get(id).unwrap();
        assert_eq!(f.live_slots(0, BitmapKind::Refs), Some(vec![0, 1, 69]));
        let b = f.bitmap(0, BitmapKind::Refs).unwrap();
        assert_eq!(b.len(), 70);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), [0, 1, 69]);
        assert_eq!(f.bitmap(1, BitmapKind::Refs).unwrap(), bits![0; 70]);
        assert_eq!(f.bitmap(2, BitmapKind::Refs), None);
    }

    #[test]
    fn ids_are_dense_and_stable_across_chunks() {
        let reg = Registry::new();
        let n = if cfg!(miri) { CHUNK0 + 3 } else { CHUNK0 * 7 };
        let ids: Vec<FuncId> = (0..n)
            .map(|i| reg.register(FuncDesc::new(format!("f{i}"), i % 7, 0, 1 + i % 3)).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.index() as usize, i);
            let f = reg.get(*id).unwrap();
            assert_eq!(f.name(), format!("f{i}"));
            assert_eq!(f.frame_slots(), i % 7);
        }
    }

    #[test]
    fn identical_bitmaps_are_stored_once() {
        let reg = Registry::new();
        let a = reg
            .register(FuncDesc::new("a", 70, 0, 2).refs_at(0, &[1, 65]).refs_at(1, &[1, 65]))
            .unwrap();
        // A different frame size, same live slots: the trimmed words are the same.
        let b = reg.register(FuncDesc::new("b", 100, 0, 1).tagged_at(0, &[1, 65])).unwrap();
        assert_eq!(reg.distinct_bitmaps(), 2, "the empty bitmap and {{1, 65}}");
        let (fa, fb) = (reg.get(a).unwrap(), reg.get(b).unwrap());
        assert!(Arc::ptr_eq(&fa.maps[0].refs, &fa.maps[1].refs));
        assert!(Arc::ptr_eq(&fa.maps[0].refs, &fb.maps[0].tagged));
        assert!(Arc::ptr_eq(&fa.maps[0].tagged, &fb.maps[0].refs));
        reg.register(FuncDesc::new("c", 3, 0, 1).refs_at(0, &[2])).unwrap();
        assert_eq!(reg.distinct_bitmaps(), 3);
    }

    #[test]
    fn get_refuses_an_id_of_another_registry() {
        let r1 = Registry::new();
        let r2 = Registry::new();
        let a = r1.register(FuncDesc::new("a", 4, 0, 1)).unwrap();
        r2.register(FuncDesc::new("b", 2, 0, 1)).unwrap();
        assert!(r2.get(a).is_none());
        assert!(r2.by_index(1).is_none());
    }

    #[test]
    fn error_empty_name() {
        let e = reg1(FuncDesc::new("", 1, 0, 1)).unwrap_err();
        assert_eq!(e, RegisterError::EmptyName);
        assert_eq!(e.to_string(), "function name is empty");
    }

    #[test]
    fn error_duplicate_name_stores_nothing() {
        let reg = Registry::new();
        let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
        let e = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap_err();
        assert_eq!(e, RegisterError::DuplicateName { name: "f".into(), existing: f });
        assert_eq!(e.to_string(), "function \"f\" is already registered (index 0)");
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get(f).unwrap().frame_slots(), 1);
    }

    #[test]
    fn error_frame_too_large() {
        let e = reg1(FuncDesc::new("big", MAX_FRAME_SLOTS + 1, 0, 1)).unwrap_err();
        assert!(
            matches!(e, RegisterError::FrameTooLarge { slots, .. } if slots == MAX_FRAME_SLOTS + 1)
        );
        assert_eq!(
            e.to_string(),
            "function \"big\": frame of 1048577 slots is larger than the maximum of 1048576"
        );
        assert!(reg1(FuncDesc::new("max", MAX_FRAME_SLOTS, 0, 1)).is_ok());
    }

    #[test]
    fn error_too_many_args() {
        let e = reg1(FuncDesc::new("f", 2, 3, 1)).unwrap_err();
        assert_eq!(e.to_string(), "function \"f\": 3 arguments do not fit in a frame of 2 slots");
    }

    #[test]
    fn error_no_safepoints() {
        let e = reg1(FuncDesc::new("f", 2, 0, 0)).unwrap_err();
        assert_eq!(e, RegisterError::NoSafepoints { name: "f".into() });
        assert!(e.to_string().contains("has no safepoints"));
    }

    #[test]
    fn error_too_many_safepoints() {
        let e = reg1(FuncDesc::new("f", 2, 0, MAX_SAFEPOINTS + 1)).unwrap_err();
        assert!(matches!(e, RegisterError::TooManySafepoints { .. }));
        assert_eq!(
            e.to_string(),
            "function \"f\": 16777217 safepoints is more than the maximum of 16777216"
        );
    }

    #[test]
    fn error_safepoint_out_of_range() {
        let e = reg1(FuncDesc::new("f", 2, 0, 2).refs_at(2, &[1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "function \"f\": reference bitmap given for safepoint 2, but it has safepoints 0..2"
        );
        let e = reg1(FuncDesc::new("f", 2, 0, 2).tagged_at(5, &[])).unwrap_err();
        assert!(matches!(
            e,
            RegisterError::SafepointOutOfRange { safepoint: 5, what: "tagged bitmap", .. }
        ));
        let e = reg1(FuncDesc::new("f", 2, 0, 2).line(2, 7)).unwrap_err();
        assert!(matches!(e, RegisterError::SafepointOutOfRange { safepoint: 2, what: "line", .. }));
    }

    #[cfg(not(miri))] // bitvec input: see `FuncDesc::refs`
    #[test]
    fn error_wrong_bitmap_length() {
        let e = reg1(FuncDesc::new("f", 3, 0, 2).refs(1, bits![1, 0])).unwrap_err();
        assert_eq!(
            e,
            RegisterError::WrongBitmapLength {
                name: "f".into(),
                safepoint: 1,
                kind: BitmapKind::Refs,
                len: 2,
                expected: 3
            }
        );
        assert_eq!(
            e.to_string(),
            "function \"f\": reference bitmap of safepoint 1 has 2 bits, but the frame has 3 slots"
        );
        let e = reg1(FuncDesc::new("f", 3, 0, 1).tagged(0, bits![0, 0, 0, 0])).unwrap_err();
        assert!(matches!(
            e,
            RegisterError::WrongBitmapLength { kind: BitmapKind::Tagged, len: 4, .. }
        ));
    }

    #[test]
    fn error_slot_out_of_range() {
        let e = reg1(FuncDesc::new("f", 3, 0, 1).refs_at(0, &[0, 3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "function \"f\": reference slot 3 at safepoint 0 is past the frame of 3 slots"
        );
    }

    #[test]
    fn error_duplicate_bitmap() {
        let e = reg1(FuncDesc::new("f", 3, 0, 1).refs_at(0, &[0]).refs_at(0, &[2])).unwrap_err();
        assert_eq!(
            e,
            RegisterError::DuplicateBitmap {
                name: "f".into(),
                safepoint: 0,
                kind: BitmapKind::Refs
            }
        );
        // One of each kind is fine.
        assert!(reg1(FuncDesc::new("f", 3, 0, 1).refs_at(0, &[0]).tagged_at(0, &[1])).is_ok());
    }

    #[test]
    fn error_duplicate_line() {
        let e = reg1(FuncDesc::new("f", 1, 0, 2).line(1, 3).line(1, 4)).unwrap_err();
        assert_eq!(e.to_string(), "function \"f\": line of safepoint 1 given twice");
    }

    #[test]
    fn error_ref_tagged_overlap() {
        let e = reg1(FuncDesc::new("f", 80, 0, 2).refs_at(1, &[3, 70]).tagged_at(1, &[70, 71]))
            .unwrap_err();
        assert_eq!(e, RegisterError::RefTaggedOverlap { name: "f".into(), safepoint: 1, slot: 70 });
        assert_eq!(
            e.to_string(),
            "function \"f\": slot 70 at safepoint 1 is marked both reference and tagged"
        );
    }

    #[test]
    fn error_registry_full_message() {
        // Filling 2^30 entries is out of reach of a test; the check itself is one comparison.
        let e = RegisterError::RegistryFull { max: MAX_FUNCS };
        assert_eq!(e.to_string(), "registry is full (1073741824 functions)");
    }

    #[test]
    fn refused_registration_stores_nothing() {
        let reg = Registry::new();
        let bad = FuncDesc::new("f", 3, 0, 2).refs_at(0, &[1]).refs_at(1, &[3]);
        assert!(reg.register(bad).is_err());
        assert_eq!((reg.len(), reg.distinct_bitmaps(), reg.find("f")), (0, 0, None));
        assert!(reg.by_index(0).is_none());
        assert!(reg.register(FuncDesc::new("f", 3, 0, 2)).is_ok());
    }

    #[test]
    fn concurrent_registration_and_lookup() {
        let reg = Registry::new();
        let per = if cfg!(miri) { 20 } else { 500 };
        std::thread::scope(|s| {
            for t in 0..2 {
                let reg = &reg;
                s.spawn(move || {
                    for i in 0..per {
                        let slots = (i % 9) + 1;
                        reg.register(
                            FuncDesc::new(format!("t{t}f{i}"), slots, 0, 1)
                                .refs_at(0, &[slots - 1]),
                        )
                        .unwrap();
                    }
                });
            }
            s.spawn(|| {
                // A reader sees a prefix of entries, every one of them whole.
                let mut seen = 0;
                while seen < 2 * per {
                    let n = reg.len();
                    for i in seen..n {
                        let f = reg.by_index(i as u32).expect("published entry");
                        let last = f.frame_slots() - 1;
                        assert_eq!(f.live_slots(0, BitmapKind::Refs), Some(vec![last]));
                    }
                    seen = n;
                    std::thread::yield_now();
                }
            });
        });
        assert_eq!(reg.len(), 2 * per);
    }
}
