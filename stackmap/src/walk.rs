//! The frame walker, stack validation, dumps and tracebacks.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::registry::{FuncId, FuncInfo, Registry};
use crate::stack::{HANDLE_BIT, HEADER, ManagedStack, SEALED_BIT, SEALED_FUNC_BIT};

/// One frame as the walker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// 0 for the top frame, counting down the stack.
    pub depth: usize,
    /// Word offset of the frame's first slot in the buffer (its header follows its slots).
    pub offset: usize,
    /// Its function, or `None` for a handle frame.
    pub func: Option<FuncId>,
    /// Its current safepoint (0 for a handle frame).
    pub safepoint: u32,
    /// Its slot count.
    pub slots: usize,
    /// A sealed frame (see [`ManagedStack::push_sealed`] and
    /// [`ManagedStack::push_sealed_handles`]): only its owner writes its slots.
    pub sealed: bool,
}

/// A live slot as a [`Visitor`] sees it: its word, to read, or to clear
/// ([`clear`](SlotWord::clear), for a dead slot of a sealed frame). Nothing else can be
/// stored, so that safe code cannot plant through a walk what the collector would later take
/// for a reference (see [`ManagedStack::set`](crate::ManagedStack::set)).
///
/// ```compile_fail
/// use std::sync::atomic::Ordering::Relaxed;
/// struct Writer;
/// impl safepoint_stackmap::Visitor for Writer {
///     fn reference(&mut self, _: usize, w: &safepoint_stackmap::SlotWord) {
///         w.store(0x1234_5670, Relaxed); // no such method: a walk cannot plant a word
///     }
/// }
/// ```
#[repr(transparent)]
pub struct SlotWord(AtomicUsize);

impl SlotWord {
    #[inline(always)]
    fn of(w: &AtomicUsize) -> &SlotWord {
        // SAFETY: `SlotWord` is a `repr(transparent)` wrapper of `AtomicUsize`.
        unsafe { &*(w as *const AtomicUsize as *const SlotWord) }
    }

    /// The word, read with `order` (walkers use `Relaxed`: the hand-off that stopped the
    /// owner orders its writes).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, SlotWord, StackConfig, Visitor};
    /// use std::sync::atomic::Ordering::Relaxed;
    /// // A visitor that collects the words of the live reference slots.
    /// struct Words(Vec<usize>);
    /// impl Visitor for Words {
    ///     fn reference(&mut self, _slot: usize, w: &SlotWord) {
    ///         self.0.push(w.load(Relaxed));
    ///     }
    ///     fn tagged(&mut self, _slot: usize, _w: &SlotWord) {}
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 2).refs_at(1, &[0, 1])).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: no collector scans this stack, so any word may be stored.
    /// unsafe { ms.push_with_args(f, &[0x10, 0x20]) };
    /// ms.set_safepoint(1);
    /// let mut v = Words(Vec::new());
    /// ms.walk(&reg, &mut v);
    /// assert_eq!(v.0, [0x10, 0x20]);
    /// ```
    #[inline(always)]
    pub fn load(&self, order: std::sync::atomic::Ordering) -> usize {
        self.0.load(order)
    }

    /// Stores null: what a collector does to a slot that a sealed frame's current safepoint
    /// calls dead ([`Visitor::dead`]), so that the owner, if its map was wrong and the slot
    /// still mattered, reads null rather than an object the collector did not keep. (Walkers
    /// run while the owner is stopped; its resumption orders the store before its next read.)
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, SlotWord, StackConfig, Visitor};
    /// struct Clear;
    /// impl Visitor for Clear {
    ///     fn reference(&mut self, _: usize, _: &SlotWord) {}
    ///     fn dead(&mut self, _: usize, w: &SlotWord) {
    ///         w.clear();
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).tagged_at(0, &[0])).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: no collector scans this stack.
    /// unsafe {
    ///     ms.push_sealed(f);
    ///     let base = ms.sealed_top().unwrap().0;
    ///     ms.set_at(base, 7);
    ///     ms.set_at(base + 1, 9); // slot 1 is dead at safepoint 0
    /// }
    /// ms.walk(&reg, &mut Clear);
    /// assert_eq!((ms.get(0), ms.get(1)), (7, 0));
    /// ```
    #[inline(always)]
    pub fn clear(&self) {
        self.0.store(0, Relaxed);
    }

    /// Stores `word` instead of null: what a collector does to a dead slot (as
    /// [`clear`](Self::clear)) when its embedder names another word for a cleared slot (its
    /// own nil, say), so that a wrong map reads as that value.
    ///
    /// # Safety
    /// `word` is not a reference to any collector that scans this stack (an immediate of its
    /// encoding): a walk must not plant one.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, SlotWord, StackConfig, Visitor};
    /// struct ClearToNil;
    /// impl Visitor for ClearToNil {
    ///     fn reference(&mut self, _: usize, _: &SlotWord) {}
    ///     fn dead(&mut self, _: usize, w: &SlotWord) {
    ///         // SAFETY: no collector scans this stack; 2 is this embedder's nil.
    ///         unsafe { w.clear_to(2) };
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).tagged_at(0, &[0])).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// // SAFETY: no collector scans this stack.
    /// unsafe {
    ///     ms.push_sealed(f);
    ///     let base = ms.sealed_top().unwrap().0;
    ///     ms.set_at(base, 7);
    ///     ms.set_at(base + 1, 9); // slot 1 is dead at safepoint 0
    /// }
    /// ms.walk(&reg, &mut ClearToNil);
    /// assert_eq!((ms.get(0), ms.get(1)), (7, 2));
    /// ```
    #[inline(always)]
    pub unsafe fn clear_to(&self, word: usize) {
        self.0.store(word, Relaxed);
    }
}

impl core::fmt::Debug for SlotWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// What a walk calls, frame by frame from the top: [`frame`](Visitor::frame), then
/// [`reference`](Visitor::reference) for each live reference slot in increasing slot order,
/// then [`tagged`](Visitor::tagged) for each live tagged slot.
///
/// `slot` is the index in the frame; `word` is the slot itself, valid for the call (a marker
/// loads it, and may store to it if it ever needs to).
pub trait Visitor {
    /// A frame begins.
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{Frame, FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Seen(Vec<String>);
    /// impl Visitor for Seen {
    ///     fn frame(&mut self, fr: &Frame) {
    ///         self.0.push(format!("frame {} at safepoint {}", fr.depth, fr.safepoint));
    ///     }
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("ref {slot}"));
    ///     }
    ///     fn tagged(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("tagged {slot}"));
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let desc = FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[2]);
    /// let f = reg.register(desc).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// let mut ms = ms;
    /// let mut v = Seen::default();
    /// ms.walk(&reg, &mut v);
    /// assert_eq!(v.0, ["frame 0 at safepoint 1", "ref 0", "tagged 2"]);
    /// ```
    #[inline(always)]
    fn frame(&mut self, frame: &Frame) {
        let _ = frame;
    }
    /// A live reference slot.
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{Frame, FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Seen(Vec<String>);
    /// impl Visitor for Seen {
    ///     fn frame(&mut self, fr: &Frame) {
    ///         self.0.push(format!("frame {} at safepoint {}", fr.depth, fr.safepoint));
    ///     }
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("ref {slot}"));
    ///     }
    ///     fn tagged(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("tagged {slot}"));
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let desc = FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[2]);
    /// let f = reg.register(desc).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// let mut ms = ms;
    /// let mut v = Seen::default();
    /// ms.walk(&reg, &mut v);
    /// assert!(v.0.contains(&"ref 0".to_string()));
    /// ```
    fn reference(&mut self, slot: usize, word: &SlotWord);
    /// A live tagged slot (a reference only if its tag says so).
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{Frame, FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Seen(Vec<String>);
    /// impl Visitor for Seen {
    ///     fn frame(&mut self, fr: &Frame) {
    ///         self.0.push(format!("frame {} at safepoint {}", fr.depth, fr.safepoint));
    ///     }
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("ref {slot}"));
    ///     }
    ///     fn tagged(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("tagged {slot}"));
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let desc = FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[2]);
    /// let f = reg.register(desc).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// let mut ms = ms;
    /// let mut v = Seen::default();
    /// ms.walk(&reg, &mut v);
    /// assert!(v.0.contains(&"tagged 2".to_string()));
    /// ```
    #[inline(always)]
    fn tagged(&mut self, slot: usize, word: &SlotWord) {
        let _ = (slot, word);
    }
    /// Whether the top frame's maps may be stale (its goroutine was stopped at an arbitrary
    /// instruction, between two safepoints): then a function frame on top is reported slot by
    /// slot through [`conservative`](Visitor::conservative) instead of by its maps.
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// // A collector scanning a goroutine stopped between two safepoints.
    /// struct Conservative(Vec<usize>);
    /// impl Visitor for Conservative {
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(slot);
    ///     }
    ///     fn stale_top(&self) -> bool {
    ///         true
    ///     }
    ///     fn conservative(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(100 + slot);
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1).refs_at(0, &[1])).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// let mut v = Conservative(Vec::new());
    /// ms.walk(&reg, &mut v);
    /// assert_eq!(v.0, [100, 101]); // every slot of the top frame, not only its map's
    /// ```
    #[inline(always)]
    fn stale_top(&self) -> bool {
        false
    }
    /// A slot of a top frame whose maps may be stale (see [`stale_top`](Visitor::stale_top)):
    /// it may hold anything, and counts as a reference only if it is one.
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// struct Count(usize);
    /// impl Visitor for Count {
    ///     fn reference(&mut self, _slot: usize, _w: &SlotWord) {}
    ///     fn stale_top(&self) -> bool {
    ///         true
    ///     }
    ///     fn conservative(&mut self, _slot: usize, _w: &SlotWord) {
    ///         self.0 += 1;
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 0, 1)).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// let mut v = Count(0);
    /// ms.walk(&reg, &mut v);
    /// assert_eq!(v.0, 4);
    /// ```
    #[inline(always)]
    fn conservative(&mut self, slot: usize, word: &SlotWord) {
        let _ = (slot, word);
    }
    /// A slot of a sealed function frame (see [`ManagedStack::push_sealed`]) that the frame's
    /// current safepoint calls dead (neither a reference nor a tagged slot), after the frame's
    /// live slots. A collector clears it ([`SlotWord::clear`]). Not called for a stale top
    /// frame (every slot of which is [`conservative`](Visitor::conservative)).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, SlotWord, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Dead(Vec<usize>);
    /// impl Visitor for Dead {
    ///     fn reference(&mut self, _: usize, _: &SlotWord) {}
    ///     fn dead(&mut self, slot: usize, _: &SlotWord) {
    ///         self.0.push(slot);
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 4, 0, 2).tagged_at(1, &[1, 2])).unwrap();
    /// let mut ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f); // not sealed: no dead slots reported
    /// // SAFETY: only null is written to the frame.
    /// unsafe { ms.push_sealed(f) };
    /// ms.set_safepoint(1);
    /// let mut v = Dead::default();
    /// ms.walk(&reg, &mut v);
    /// assert_eq!(v.0, [0, 3]);
    /// ```
    #[inline(always)]
    fn dead(&mut self, slot: usize, word: &SlotWord) {
        let _ = (slot, word);
    }
}

/// What is wrong with a corrupted stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Word offset of the bad frame's header.
    pub offset: usize,
    /// Depth of the bad frame (0 is the top).
    pub depth: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {} at word {}: {}", self.depth, self.offset, self.reason)
    }
}

/// One decoded, fully checked frame.
struct Checked<'r> {
    frame: Frame,
    info: Option<&'r FuncInfo>,
}

impl ManagedStack {
    /// Walks the stack from the top frame down, calling `v` for every live reference and tagged
    /// slot of each frame at its current safepoint. For the owner itself (`&mut` rules out
    /// pushing from inside the visitor).
    ///
    /// # Panics
    /// If the stack is corrupted (see [`walk_stopped`](Self::walk_stopped)).
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{Frame, FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Seen(Vec<String>);
    /// impl Visitor for Seen {
    ///     fn frame(&mut self, fr: &Frame) {
    ///         self.0.push(format!("frame {} at safepoint {}", fr.depth, fr.safepoint));
    ///     }
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("ref {slot}"));
    ///     }
    ///     fn tagged(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("tagged {slot}"));
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let desc = FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[2]);
    /// let f = reg.register(desc).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// let mut ms = ms;
    /// ms.push_handles(1);
    /// let mut v = Seen::default();
    /// ms.walk(&reg, &mut v); // top frame first
    /// let want = [
    ///     "frame 0 at safepoint 0", "ref 0", // the handle frame
    ///     "frame 1 at safepoint 1", "ref 0", "tagged 2",
    /// ];
    /// assert_eq!(v.0, want);
    /// ```
    pub fn walk<V: Visitor>(&mut self, reg: &Registry, v: &mut V) {
        // SAFETY: `&mut self`: the owner itself, and nothing can move the buffer meanwhile.
        unsafe { self.walk_impl(reg, v) }
    }

    /// Walks a stopped goroutine's stack from another thread, as [`walk`](Self::walk) does.
    ///
    /// Runs on: any thread. Allocates: no (unless it panics). Cost: a few loads per frame and
    /// one call of `v` per live slot.
    ///
    /// The walker always checks what keeps it in bounds (each frame's function is in `reg`,
    /// its size matches the function's, its safepoint is in range, it does not reach below
    /// word 0); with [`StackConfig::validate`](crate::StackConfig::validate) on it checks every
    /// frame before yielding anything. A failed check reports a dump of the stack through the
    /// message sink ([`safepoint_arch::set_message_sink`]) and panics with "goroutine N:
    /// managed stack corrupted: ..." (the runtime treats that as fatal).
    ///
    /// # Safety
    /// The owner is stopped at a safepoint (parked, in a blocking call with its stack frozen,
    /// or inside the preempt hook of a push or poll) and the caller holds the right to scan
    /// it (the G's `SCAN` bit), with the hand-off ordering the owner's last writes before
    /// this call. `ManagedStack` is `!Sync`; this may nevertheless be called from any thread
    /// through a pointer, because everything it reads is an atomic word and the contract rules
    /// out the one thing that could break it, the buffer moving.
    ///
    /// ```
    /// use safepoint_stackmap::SlotWord;
    /// use safepoint_stackmap::{Frame, FuncDesc, ManagedStack, Registry, StackConfig, Visitor};
    /// #[derive(Default)]
    /// struct Seen(Vec<String>);
    /// impl Visitor for Seen {
    ///     fn frame(&mut self, fr: &Frame) {
    ///         self.0.push(format!("frame {} at safepoint {}", fr.depth, fr.safepoint));
    ///     }
    ///     fn reference(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("ref {slot}"));
    ///     }
    ///     fn tagged(&mut self, slot: usize, _w: &SlotWord) {
    ///         self.0.push(format!("tagged {slot}"));
    ///     }
    /// }
    /// let reg = Registry::new();
    /// let desc = FuncDesc::new("f", 3, 0, 2).refs_at(1, &[0]).tagged_at(1, &[2]);
    /// let f = reg.register(desc).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.set_safepoint(1);
    /// let mut v = Seen::default();
    /// // SAFETY: the owner (this code) does nothing else with the stack during the walk.
    /// unsafe { ms.walk_stopped(&reg, &mut v) };
    /// assert_eq!(v.0.len(), 3);
    /// ```
    pub unsafe fn walk_stopped<V: Visitor>(&self, reg: &Registry, v: &mut V) {
        // SAFETY: the caller guarantees the owner is stopped and nobody else moves the buffer.
        unsafe { self.walk_impl(reg, v) }
    }

    /// # Safety
    /// Nothing moves or frees the buffer until this returns.
    #[inline(always)]
    unsafe fn walk_impl<V: Visitor>(&self, reg: &Registry, v: &mut V) {
        if self.validate {
            // SAFETY: passed on from our caller.
            if let Err(c) = unsafe { self.check_impl(reg) } {
                self.corrupt(reg, &c);
            }
        }
        let view = reg.view();
        let buf = self.buf.load(Relaxed);
        let mut end = self.top.load(Relaxed);
        let mut depth = 0;
        while end != 0 {
            // `end` starts at `top <= capacity` and only decreases; checking each frame against
            // it keeps every read below in the buffer.
            if end < HEADER {
                self.corrupt_at(reg, end, depth, "frame header below word 0");
            }
            let hdr = end - HEADER;
            // SAFETY: `hdr + 2 == end <= top <= capacity`, and the buffer does not move
            // (caller).
            let (w0, w1) =
                unsafe { ((*buf.add(hdr)).load(Relaxed), (*buf.add(hdr + 1)).load(Relaxed)) };
            let func = w0 as u32;
            let n = w0 >> 32;
            let sp = w1 as u32;
            if n > hdr {
                self.corrupt_at(reg, hdr, depth, "frame size reaches below word 0");
            }
            let base = hdr - n;
            if func & HANDLE_BIT != 0 {
                let sealed = func == HANDLE_BIT | SEALED_BIT;
                v.frame(&Frame { depth, offset: base, func: None, safepoint: 0, slots: n, sealed });
                for i in 0..n {
                    // SAFETY: `base + i < hdr < capacity`.
                    v.reference(i, SlotWord::of(unsafe { &*buf.add(base + i) }));
                }
            } else {
                let sealed = func & SEALED_FUNC_BIT != 0;
                let func = func & !SEALED_FUNC_BIT;
                let Some((slots, maps)) = view.get(func) else {
                    self.corrupt_at(reg, hdr, depth, "function index not in the registry")
                };
                if slots != n {
                    self.corrupt_at(reg, hdr, depth, "frame size differs from the function's");
                }
                let Some(map) = maps.get(sp as usize) else {
                    self.corrupt_at(reg, hdr, depth, "safepoint out of range")
                };
                v.frame(&Frame {
                    depth,
                    offset: base,
                    func: Some(FuncId {
                        index: func,
                        slots: n as u32,
                        safepoints: maps.len() as u32,
                    }),
                    safepoint: sp,
                    slots: n,
                    sealed,
                });
                if depth == 0 && v.stale_top() {
                    for i in 0..n {
                        // SAFETY: `base + i < hdr < capacity`.
                        v.conservative(i, SlotWord::of(unsafe { &*buf.add(base + i) }));
                    }
                    end = base;
                    depth += 1;
                    continue;
                }
                // Registration keeps every bit below the function's frame size, `n`.
                map.each_ref(|i| {
                    // SAFETY: `i < n`, so `base + i < hdr < capacity`.
                    v.reference(i, SlotWord::of(unsafe { &*buf.add(base + i) }))
                });
                map.each_tagged(|i| {
                    // SAFETY: as above.
                    v.tagged(i, SlotWord::of(unsafe { &*buf.add(base + i) }))
                });
                if sealed {
                    map.each_dead(n, |i| {
                        // SAFETY: as above.
                        v.dead(i, SlotWord::of(unsafe { &*buf.add(base + i) }))
                    });
                }
            }
            end = base;
            depth += 1;
        }
    }

    /// Checks every frame: function in `reg`, safepoint in range and its count matching the
    /// function's, sizes matching, frames contiguous from word 0 up to `top`. Returns the
    /// depth, or the first thing wrong. For the owner.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// ms.push(f);
    /// assert_eq!(ms.check(&reg), Ok(2));
    /// assert!(ms.check(&Registry::new()).is_err()); // another registry does not know `f`
    /// ```
    pub fn check(&self, reg: &Registry) -> Result<usize, Corruption> {
        // SAFETY: `&self` on the owner's side of a `!Sync` type: no push can run meanwhile
        // (`check_impl` calls nothing that pushes).
        unsafe { self.check_impl(reg) }
    }

    /// [`check`](Self::check) from another thread.
    ///
    /// # Safety
    /// As for [`walk_stopped`](Self::walk_stopped).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.push(f);
    /// // SAFETY: the owner (this code) does nothing else with the stack meanwhile.
    /// assert_eq!(unsafe { ms.check_stopped(&reg) }, Ok(1));
    /// ```
    pub unsafe fn check_stopped(&self, reg: &Registry) -> Result<usize, Corruption> {
        // SAFETY: the caller guarantees the owner is stopped.
        unsafe { self.check_impl(reg) }
    }

    /// # Safety
    /// Nothing moves or frees the buffer until this returns.
    unsafe fn check_impl(&self, reg: &Registry) -> Result<usize, Corruption> {
        let mut depth = 0;
        // SAFETY: passed on from our caller.
        unsafe {
            self.frames(reg, |c| {
                c?;
                depth += 1;
                Ok(true)
            })?
        };
        Ok(depth)
    }

    /// Calls `f` on each frame, checked, from the top; stops at the first error (after
    /// passing it to `f`) or when `f` returns `Ok(false)`.
    ///
    /// # Safety
    /// Nothing moves or frees the buffer until this returns.
    unsafe fn frames<'r>(
        &self,
        reg: &'r Registry,
        mut f: impl FnMut(Result<Checked<'r>, Corruption>) -> Result<bool, Corruption>,
    ) -> Result<(), Corruption> {
        let buf = self.buf.load(Relaxed);
        let top = self.top.load(Relaxed);
        let cap = self.capacity_words();
        let mut end = top;
        let mut depth = 0;
        let bad =
            |offset: usize, depth: usize, reason: String| Corruption { offset, depth, reason };
        if top > cap {
            let e = bad(top, 0, format!("top {top} is past the capacity {cap}"));
            f(Err(e.clone()))?;
            return Err(e);
        }
        while end != 0 {
            let r = (|| {
                if end < HEADER {
                    return Err(bad(end, depth, "frame header below word 0".into()));
                }
                let hdr = end - HEADER;
                // SAFETY: `hdr + 2 == end <= top <= capacity`; the buffer does not move (caller).
                let (w0, w1) =
                    unsafe { ((*buf.add(hdr)).load(Relaxed), (*buf.add(hdr + 1)).load(Relaxed)) };
                let (func, slots) = (w0 as u32, w0 >> 32);
                let (sp, count) = (w1 as u32, (w1 >> 32) as u32);
                if slots > hdr {
                    return Err(bad(
                        hdr,
                        depth,
                        format!("frame of {slots} slots reaches below word 0"),
                    ));
                }
                let (frame_func, info) = if func & HANDLE_BIT != 0 {
                    if (func != HANDLE_BIT && func != HANDLE_BIT | SEALED_BIT)
                        || sp != 0
                        || count != 1
                    {
                        return Err(bad(
                            hdr,
                            depth,
                            format!(
                                "handle frame with function field {func:#x} at safepoint \
                                 {sp}/{count}"
                            ),
                        ));
                    }
                    (None, None)
                } else {
                    let func = func & !SEALED_FUNC_BIT;
                    let Some(info) = reg.by_index(func) else {
                        return Err(bad(
                            hdr,
                            depth,
                            format!(
                                "function index {func} not in the registry ({} functions)",
                                reg.len()
                            ),
                        ));
                    };
                    if info.frame_slots() != slots {
                        return Err(bad(
                            hdr,
                            depth,
                            format!(
                                "{:?} has {} slots but its frame has {slots}",
                                info.name(),
                                info.frame_slots()
                            ),
                        ));
                    }
                    if count as usize != info.safepoints() || sp >= count {
                        return Err(bad(
                            hdr,
                            depth,
                            format!(
                                "{:?} at safepoint {sp} of {count}, but it has {} safepoints",
                                info.name(),
                                info.safepoints()
                            ),
                        ));
                    }
                    (Some(info.id()), Some(info))
                };
                Ok(Checked {
                    frame: Frame {
                        depth,
                        offset: hdr - slots,
                        func: frame_func,
                        safepoint: sp,
                        slots,
                        sealed: crate::stack::is_sealed(func),
                    },
                    info,
                })
            })();
            match r {
                Ok(c) => {
                    end = c.frame.offset;
                    if !f(Ok(c))? {
                        return Ok(());
                    }
                    depth += 1;
                }
                Err(e) => {
                    f(Err(e.clone()))?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// A traceback of the stack: each frame's function, safepoint and line. For the owner (a
    /// goroutine panic). Never panics: a corrupted frame ends it with a note.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let main = reg.register(FuncDesc::new("main", 1, 0, 1).line(0, 3)).unwrap();
    /// let helper = reg.register(FuncDesc::new("helper", 1, 0, 1).line(0, 10)).unwrap();
    /// let ms = ManagedStack::new(5, StackConfig::default());
    /// ms.push(main);
    /// ms.push(helper);
    /// let tb = ms.traceback(&reg);
    /// let names: Vec<&str> = tb.frames.iter().map(|f| f.name.as_str()).collect();
    /// assert_eq!(names, ["helper", "main"]);
    /// assert_eq!(tb.frames[0].line, Some(10));
    /// ```
    pub fn traceback(&self, reg: &Registry) -> Traceback {
        // SAFETY: `&self` on the owner's side: nothing can push meanwhile.
        unsafe { self.traceback_impl(reg) }
    }

    /// [`traceback`](Self::traceback) from another thread (a dump of every goroutine).
    ///
    /// # Safety
    /// As for [`walk_stopped`](Self::walk_stopped).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(5, StackConfig::default());
    /// ms.push(f);
    /// // SAFETY: the owner (this code) does nothing else with the stack meanwhile.
    /// let tb = unsafe { ms.traceback_stopped(&reg) };
    /// assert_eq!((tb.goroutine, tb.depth()), (5, 1));
    /// ```
    pub unsafe fn traceback_stopped(&self, reg: &Registry) -> Traceback {
        // SAFETY: the caller guarantees the owner is stopped.
        unsafe { self.traceback_impl(reg) }
    }

    /// # Safety
    /// Nothing moves or frees the buffer until this returns.
    unsafe fn traceback_impl(&self, reg: &Registry) -> Traceback {
        let mut frames = Vec::new();
        let mut total = 0;
        let mut tail: std::collections::VecDeque<TraceFrame> = Default::default();
        let mut error = None;
        // SAFETY: passed on from our caller.
        let _ = unsafe {
            self.frames(reg, |c| {
                match c {
                    Ok(c) => {
                        let tf = TraceFrame {
                            name: c
                                .info
                                .map_or_else(|| "<native handles>".into(), |i| i.name().into()),
                            func: c.frame.func,
                            safepoint: c.frame.safepoint,
                            line: c.info.and_then(|i| i.line(c.frame.safepoint as usize)),
                            offset: c.frame.offset,
                            slots: c.frame.slots,
                        };
                        total += 1;
                        if frames.len() < Traceback::KEEP {
                            frames.push(tf);
                        } else {
                            if tail.len() == Traceback::KEEP {
                                tail.pop_front();
                            }
                            tail.push_back(tf);
                        }
                    }
                    Err(e) => error = Some(e),
                }
                Ok(true)
            })
        };
        let elided = total - frames.len() - tail.len();
        Traceback { goroutine: self.id(), frames, elided, tail: tail.into(), error }
    }

    /// A dump of the stack for a corruption report: sizes, the traceback, and the raw words of
    /// the frame at `offset` and around it. For the owner.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 2, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(3, StackConfig::default());
    /// ms.push(f);
    /// let d = ms.dump(&reg, 0);
    /// assert!(d.starts_with("managed stack of goroutine 3: top 4"), "{d}");
    /// ```
    pub fn dump(&self, reg: &Registry, offset: usize) -> String {
        // SAFETY: `&self` on the owner's side: nothing can push meanwhile.
        unsafe { self.dump_impl(reg, offset) }
    }

    /// # Safety
    /// Nothing moves or frees the buffer until this returns.
    unsafe fn dump_impl(&self, reg: &Registry, offset: usize) -> String {
        let top = self.top.load(Relaxed);
        let cap = self.capacity_words();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "managed stack of goroutine {}: top {top}, capacity {cap} words",
            self.id(),
        );
        // SAFETY: passed on from our caller.
        let _ = write!(s, "{}", unsafe { self.traceback_impl(reg) });
        let buf = self.buf.load(Relaxed);
        let lo = offset.saturating_sub(8);
        let hi = offset.saturating_add(16).min(top.min(cap));
        let _ = writeln!(s, "words {lo}..{hi}:");
        for i in lo..hi {
            // SAFETY: `i < min(top, capacity)`: in the buffer, which does not move (caller).
            let w = unsafe { &*buf.add(i) }.load(Relaxed);
            let mark = if i == offset { " <-" } else { "" };
            let _ = writeln!(s, "  [{i:>8}] {w:#018x}{mark}");
        }
        s
    }

    #[cold]
    #[inline(never)]
    fn corrupt_at(&self, reg: &Registry, offset: usize, depth: usize, reason: &str) -> ! {
        self.corrupt(reg, &Corruption { offset, depth, reason: reason.into() })
    }

    /// Reports a dump through the message sink ([`safepoint_arch::set_message_sink`], standard
    /// error by default) and panics: the stack cannot be scanned.
    #[cold]
    #[inline(never)]
    fn corrupt(&self, reg: &Registry, c: &Corruption) -> ! {
        // SAFETY: every caller is inside a walk, whose own contract keeps the buffer still.
        let dump = unsafe { self.dump_impl(reg, c.offset) };
        safepoint_arch::message(format_args!("fatal: managed stack corrupted: {c}\n{dump}"));
        panic!("goroutine {}: managed stack corrupted: {c}", self.id())
    }
}

/// One line of a traceback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFrame {
    /// The function's name, or `<native handles>`.
    pub name: String,
    /// The function (`None` for a handle frame).
    pub func: Option<FuncId>,
    /// The frame's current safepoint.
    pub safepoint: u32,
    /// The safepoint's source line, if the function has a line table entry for it.
    pub line: Option<u32>,
    /// Word offset of the frame.
    pub offset: usize,
    /// Slot count.
    pub slots: usize,
}

/// A goroutine's managed-stack traceback, top frame first. Deep stacks keep their first and
/// last [`Traceback::KEEP`] frames, as Go's tracebacks do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traceback {
    /// The goroutine.
    pub goroutine: u64,
    /// The top frames.
    pub frames: Vec<TraceFrame>,
    /// How many frames between `frames` and `tail` were left out.
    pub elided: usize,
    /// The bottom frames, when some were left out.
    pub tail: Vec<TraceFrame>,
    /// The corruption that ended the traceback early, if any.
    pub error: Option<Corruption>,
}

impl Traceback {
    /// Frames kept at each end.
    pub const KEEP: usize = 50;

    /// Total frames seen.
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// (0..3).for_each(|_| ms.push(f));
    /// assert_eq!(ms.traceback(&reg).depth(), 3);
    /// ```
    pub fn depth(&self) -> usize {
        self.frames.len() + self.elided + self.tail.len()
    }
}

impl fmt::Display for TraceFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.func.is_none() {
            return write!(f, "{} ({} slots)", self.name, self.slots);
        }
        write!(f, "{} at safepoint {}", self.name, self.safepoint)?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        Ok(())
    }
}

/// ```text
/// goroutine 7 managed stack (3 frames):
///     fib at safepoint 1, line 12
///     fib at safepoint 1, line 12
///     <native handles> (2 slots)
/// ```
impl fmt::Display for Traceback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "goroutine {} managed stack ({} frames):", self.goroutine, self.depth())?;
        for fr in &self.frames {
            writeln!(f, "    {fr}")?;
        }
        if self.elided > 0 {
            writeln!(f, "    ...{} frames elided...", self.elided)?;
        }
        for fr in &self.tail {
            writeln!(f, "    {fr}")?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "    <corrupted: {e}>")?;
        }
        Ok(())
    }
}
