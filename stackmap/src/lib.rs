//! # safepoint-stackmap: managed stacks with precise stack maps
//!
//! Rust gives us no stack maps for its own frames, so every managed reference a goroutine
//! holds lives in a *managed stack*: an array of words whose frames are described exactly by
//! function tables the embedder registers. This is what lets the collector scan a stopped
//! goroutine precisely: no conservative guessing, and no dead slot kept alive, because
//! liveness is recorded per safepoint.
//!
//! ## The parts
//!
//! 1. **The registry** ([`Registry`], [`FuncDesc`], [`FuncId`]). An embedder's compiler
//!    registers each function once: name, frame size in slots, argument count, and for each
//!    safepoint index the slots holding live references and the slots holding tagged values
//!    (a reference only when the tag says so), plus an optional line per safepoint.
//!    Registration checks everything and answers a [`RegisterError`] naming what is wrong;
//!    nothing invalid is stored. Bitmaps are stored as words with trailing zero words trimmed,
//!    and identical ones are stored once. The table is append-only: chunks of doubling size
//!    that never move, an entry published by a `Release` store of the length, plus a flat
//!    "hot" array of what the walker needs, copied to a larger one when full (old copies are
//!    retired, not freed, until the registry drops). Collectors read it without locks while
//!    embedders keep registering, and function ids are dense and stable. The registry is an
//!    object, not a global: the runtime owns one and passes it to the walker; tests make
//!    their own.
//! 2. **The managed stack** ([`ManagedStack`]). One per goroutine, allocated lazily (an empty
//!    stack has no buffer), growing by copying into a buffer twice as large, shrinking to half
//!    when the collector asks and less than a quarter is used, and panicking the goroutine
//!    past its limit ([`StackConfig`], 1 GiB by default).
//! 3. **The guard** ([`StackGuard`]) and the **hooks** ([`Hooks`], [`set_hooks`]), the
//!    protocol with the scheduler above (which this crate never names).
//! 4. **The walker** ([`ManagedStack::walk_stopped`], [`Visitor`]) and **tracebacks**
//!    ([`Traceback`]).
//!
//! ## Frame layout
//!
//! The buffer grows upward; positions are word indices from its start, so moving the buffer
//! needs no fixing up. Each frame is its slots followed by two header words, and the stack
//! keeps one position, `top`, the end of the top frame:
//!
//! ```text
//!   word        buffer (grows up)
//!               ┊                                    ┊  ← capacity = guard limit
//!   top      →  ┊ (free: never read)                 ┊
//!               ├────────────────────────────────────┤
//!   top - 1     │ safepoint (32)  │ safepoint count  │  ← set_safepoint rewrites the low half
//!   top - 2     │ function (32)   │ slot count n     │  ← the link: the caller ends n+2 below
//!               │ slot n-1                           │
//!               │ …                                  │
//!   top - 2 - n │ slot 0 (argument 0)                │  ← top frame
//!               ├────────────────────────────────────┤
//!               │ caller's header, its slots …       │
//!               ┊ …                                  ┊
//!      0        │ bottom frame's slot 0              │
//!               └────────────────────────────────────┘
//! ```
//!
//! The caller link is the frame's own size, an offset rather than an address: the caller's
//! frame ends `n + 2` words below this one's end, and the bottom frame starts at word 0. So a
//! push writes the slots and header and moves `top`; a pop moves `top` back by the top
//! frame's size; there is no frame pointer to keep. (The owner also caches the top frame's
//! size, so a pop does not wait on the header the push just wrote, and reads the caller's
//! size from the caller's header, written long before.) The function field is a registry
//! index, or for a *handle frame* (native Rust code rooting values: every slot a reference)
//! the bit `1 << 31` (with bit 0 for a *sealed* one, whose slots only its owner writes), or
//! for a *sealed function frame* ([`ManagedStack::push_sealed`]: a function's frame whose
//! slots only its owner writes, and whose dead slots a walk reports to [`Visitor::dead`] so
//! that a collector clears them) the index with the bit `1 << 30`; so a registry holds at
//! most [`MAX_FUNCS`] = 2^30 functions. Keeping the slot and safepoint counts in the frame lets pop and
//! [`ManagedStack::set_safepoint`] work without a table lookup; the walker still takes sizes
//! and bitmaps from the registry and checks that they agree with the frame. Positions fit in
//! 32 bits, which caps the limit at just under 32 GiB.
//!
//! A function is called like this:
//!
//! ```
//! use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
//! let reg = Registry::new();
//! let f = reg.register(FuncDesc::new("f", 4, 1, 2).refs_at(0, &[0]).refs_at(1, &[0, 2])).unwrap();
//! let ms = ManagedStack::new(1, StackConfig::default());
//! // SAFETY: no collector scans this stack (a collector would need these words to be
//! // references to live objects of its heap: see `ManagedStack::set`).
//! unsafe { ms.push_with_args(f, &[0x1000]) }; // the caller's safepoint was set before the call
//! unsafe { ms.set(2, 0x2000) };
//! ms.set_safepoint(1);             // before anything that can reach a safepoint
//! ms.poll();                       // a loop back-edge
//! ms.pop();
//! ```
//!
//! What a slot holds is the writer's word: a collector scanning the stack takes a reference
//! slot's word for a reference, and one that is not (a reference to no live object of its
//! heap) is garbage it cannot survive. So the writes that store a caller's word into a slot
//! ([`ManagedStack::set`], [`ManagedStack::push_with_args`], [`ManagedStack::set_at`],
//! through [`ManagedStack::top_slots_ptr`]) are `unsafe`, for an interpreter whose compiler
//! keeps the promise; their safe forms ([`ManagedStack::set_checked`],
//! [`ManagedStack::push_with_args_checked`]) take anything into a raw slot and only null
//! where a collector looks, and a [`Visitor`] reads slots, never writes them. A reference is
//! stored by a layer that knows the heap (the collector's `Mutator`).
//!
//! ## The guard protocol
//!
//! The [`StackGuard`] is one `AtomicUsize` inside the stack: the capacity in words, with the
//! sign bit as a preemption request. A push computes `new_top = top + 2 + slots` and
//! proceeds if `new_top <= guard` *as signed numbers*; a poisoned guard is negative, so one
//! comparison catches both "no room" and "asked to stop". A poll tests the sign bit alone. The
//! slow path then:
//!
//! 1. if the guard is poisoned, calls the [`Hooks::preempt`] hook. The stack is consistent
//!    there (the new frame is not on it yet), so the scheduler may park the goroutine, yield,
//!    or hold it while a collector scans (and even shrinks) this stack from another thread;
//! 2. re-reads the capacity and, if there is still no room, grows: checks the limit (panics
//!    "goroutine N: managed stack exceeds LIMIT" with the stack unchanged), calls
//!    [`Hooks::copy_begin`], copies into a larger buffer, sets the new limit, calls
//!    [`Hooks::copy_end`].
//!
//! The push then proceeds even if the request is still pending (the scheduler keeps requests
//! it cannot honour yet and re-poisons later); a pending request brings the next push or poll
//! back to the hook. Requests and limits share the word without losing each other: poison and
//! unpoison are `fetch_or`/`fetch_and` of the bit, and a new limit is written with a
//! read-modify-write that keeps the bit. Only whoever may move the buffer writes the limit, so
//! no thread can make the guard admit more than the buffer holds.
//!
//! The owner's API takes `&self` (interior mutability over atomic words), so no `&mut`
//! borrow is alive while the hook lets another thread read the stack, and hands out no
//! reference into the buffer (slots are read and written by value), so a move of the buffer
//! never leaves one dangling. The type is `!Sync`: safe code cannot share it; the collector
//! reaches it through the `unsafe` `…_stopped` methods, whose contract is that the owner is
//! stopped at a safepoint and the caller holds the right to scan it. Slot words are atomics
//! accessed `Relaxed` (`docs/ARCHITECTURE.md`, "Memory ordering"); the scheduler's status
//! hand-off orders the owner's writes before the scanner's reads.
//!
//! ## The walker
//!
//! A walk starts at `top` and steps down frame by frame. For each frame it looks the function
//! up in the registry's hot array (a flat array of `(maps, safepoint count, frame size)` taken
//! once per walk: one dependent load from the header to the safepoint maps), picks the bitmaps
//! of the frame's current safepoint and calls the [`Visitor`] for each set bit, found with
//! `trailing_zeros` a word at a time (the first word of each bitmap is inline in the map
//! entry): references first, then tagged slots. It checks on every frame what keeps it in
//! bounds (function known, frame size equal to the function's, safepoint in range, frame not
//! reaching below word 0), which also catches a [`FuncId`] used with the wrong registry. With
//! [`StackConfig::validate`] (on in debug builds) it first checks every frame completely, so
//! a corrupted stack is reported before any slot of it reaches a marker. Corruption prints a dump of the stack and panics.
//!
//! Tracebacks ([`ManagedStack::traceback`]) use the same checked decoding but never panic: a
//! goroutine that panics gets its managed frames listed, and a corrupted frame ends the list
//! with a note.

/// The bitvec crate, whose bit slices [`FuncDesc::refs`] and [`FuncDesc::tagged`] take.
pub use bitvec;

mod guard;
mod registry;
mod stack;
mod walk;

pub use guard::{Hooks, HooksAlreadySet, StackGuard, set_hooks};
pub use registry::{
    BitmapKind, FuncDesc, FuncId, FuncInfo, MAX_FRAME_SLOTS, MAX_FUNCS, MAX_SAFEPOINTS,
    RegisterError, Registry,
};
pub use stack::{ManagedStack, StackConfig, format_bytes};
pub use walk::{Corruption, Frame, SlotWord, TraceFrame, Traceback, Visitor};

// What the scheduler relies on: a stack moves with its goroutine between threads, its guard
// and the registry are shared. (That `ManagedStack` is not `Sync` is checked by a compile_fail
// example on the type.)
const _: () = {
    const fn send<T: Send>() {}
    const fn sync<T: Sync>() {}
    send::<ManagedStack>();
    sync::<StackGuard>();
    sync::<Registry>();
    send::<Registry>();
};

#[cfg(test)]
mod tests;
