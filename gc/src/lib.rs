//! # safepoint-gc: the managed heap and its collector
//!
//! A non-moving mark-sweep heap for interpreters, scanned precisely: the roots are the
//! embedder's [`Global`]s and every goroutine's managed stack (frames described by the
//! stackmap registry, or handle frames of [`Mutator`] scopes), and every object has a header
//! naming its type descriptor, which says which of its words are references: a word before
//! the object's body, or, for records of the first 64 types registered, the last word of a
//! *typed span* (a page of objects of that type only), shared by all its objects, so that a
//! small record costs no more than its fields (the `types` module explains the layout).
//!
//! ## The embedding API
//!
//! A goroutine works on the heap through its [`Mutator`]. Managed references never sit in
//! Rust variables, where the collector could not see them: they live in [`Slot`]s (words of
//! a handle frame on the goroutine's managed stack, made by [`Mutator::scope`]), in object
//! fields and in globals, and each operation names slots:
//!
//! ```
//! use safepoint_gc::{Gc, Mutator, TypeDesc, WordKind};
//! let rt = safepoint_sched::Runtime::new().unwrap();
//! let gc = Gc::new(&rt).unwrap();
//! let pair = gc.types().register(TypeDesc::Record {
//!     name: "pair".into(),
//!     words: vec![WordKind::Ref, WordKind::Tagged],
//! }).unwrap();
//! let g = gc.clone();
//! let n = rt.block_on(move || {
//!     let mut m = Mutator::new(&g).unwrap();
//!     m.scope(|m, [a, b, v]| {
//!         m.alloc(a, pair).unwrap();        // a = new pair
//!         m.alloc(b, pair).unwrap();        // b = new pair
//!         m.store(a, 0, b).unwrap();        // a.0 = b
//!         m.set_int(v, 42).unwrap();
//!         m.store(b, 1, v).unwrap();        // b.1 = 42
//!         m.clear(b).unwrap();              // b is reachable only through a now
//!         m.collect();
//!         m.load(b, a, 0).unwrap();         // b = a.0
//!         m.load(v, b, 1).unwrap();
//!         m.int(v).unwrap()
//!     })
//! });
//! assert_eq!(n, 42);
//! ```
//!
//! Operations that can reach a safepoint take `&mut Mutator`; borrowed views of an object's
//! contents ([`Mutator::bytes`]) borrow `&Mutator`, so the borrow checker ends a view before
//! anything can free or change what it shows (compile-fail examples on [`Mutator`]). Every
//! bad input is a [`GcError`] (a [`TypeId`] issued by another heap's registry included, and
//! any heap operation inside a blocking call, [`GcError::NoP`]; a scope there, which returns
//! no `Result`, is a described panic); a slot or field holding something that is not an
//! object (possible only by writing the managed stack around the API) is a described panic
//! of that goroutine. Goroutines pass values to each other through [`RefChan`]s or
//! [`Global`]s.
//!
//! Slots hold values in the heap's tagged encoding ([`TagRule`]): null (0), a reference
//! (the address of the object's body, with the rule's reference tag), or an immediate integer
//! ([`Mutator::set_int`]). Reference fields hold plain addresses; tagged fields hold values as
//! slots do; raw words and byte arrays are never scanned.
//!
//! ## Weak references, cleanups and ephemerons
//!
//! [`Mutator::weak`] gives an object's weak handle (its *cell*, one per object, a managed
//! record the marker does not follow); [`Mutator::deref`] reads the object while it is
//! reachable and null once a collection has found it unreachable, the same answer on every
//! goroutine (a read while marking shades what it returns). A [`WordKind::Weak`] field stores
//! and loads through cells ([`Pin::weak_word`] on the trusted path: with the heap swept and
//! no marking, two loads more than a field load). [`Mutator::add_cleanup`] attaches a Rust function run on the
//! heap's cleanup goroutine after the object is found unreachable (Go's `runtime.AddCleanup`:
//! no resurrection), [`Mutator::attach`] a resource dropped then. A record with a weak key
//! and [`WordKind::Ephemeron`] words is an ephemeron: its values live only while its key is
//! reachable from elsewhere, chains included. Cells are cleared by the sweep, never in the
//! stop; the `weak` module (`weak.rs`) states the protocol, its states and its costs.
//!
//! ## Three ways in: checked, sections, raw
//!
//! An embedder reaches the heap by one of three paths, one per goroutine at a time (each
//! takes the goroutine's one mutator):
//!
//! | path | references live in | checked | `unsafe` | for |
//! |---|---|---|---|---|
//! | [`Mutator`] | [`Slot`]s of scopes; every operation names slots | everything, per operation (slot, scope, frame, type) | none | hosts, tools, tests: simple and slow |
//! | [`SectionMutator`] | Rust values branded by a pinned section ([`Value`], [`Ref`]); between sections, section frames, or function frames with the embedder's maps | the brand at compile time; per access a header compare, an index and a word kind (a few instructions) | none | interpreters and compilers that want safety at near-raw speed |
//! | [`RawMutator`] | bare words in Rust variables inside a pinned section ([`Pin`]); frames described by the embedder's stack maps | in the debugging modes only | every access | compiled code that proves its own invariants |
//!
//! The checked path is described above. The other two share one mechanism: a *pinned
//! section*, in which the goroutine keeps its P and nothing can stop it, so nothing is freed
//! or changes colour between two of its steps and a reference may sit in a Rust variable
//! until the section ends; the code leaves the section at each safepoint (a call's frame push,
//! a poll, an allocation's slow path, a channel operation that waits), having put what it
//! still needs in frame slots, fields or globals.
//!
//! ## Branded sections
//!
//! [`SectionMutator::enter`] runs a closure `for<'s> FnOnce(&mut Section<'s>)`; every value
//! the [`Section`] hands out carries `'s`, invariant, so the compiler refuses one kept past
//! the section, returned from it, put in a `static` or a `Vec` declared outside, moved into
//! `go`, or used in another section (`tests/ui/section_*.rs`), and none can be made from an
//! integer: a [`Ref`] comes only from an allocation or a load. Field accesses name the
//! [`Shape`] they expect and are checked against the object's header word (one load and a
//! compare), the index against the body, and the word's kind against bitmasks the shape
//! carries, never by a registry or page-map search; stores go through the write barrier, and
//! [`Section::alloc_init`] initialises a fresh object's words with the initialising barrier.
//! Between sections, values live in *section frames* ([`SectionMutator::push_frame`]):
//! sealed handle frames, every slot a tagged root that only the section API writes, so they
//! need no stack map and no function registry. The mutator itself pays the safepoints: an
//! allocation's slow path at the end of the section that took it, a frame push (a call),
//! [`SectionMutator::poll`]. Every misuse the compiler cannot see is a [`GcError`]: a nested
//! section, a slot past the frame or no section frame on top, a shape of another heap, an
//! object of another type or a word of another kind, an index out of bounds, the wrong
//! goroutine, a blocking call (`tests/section.rs`). Sections also read and write weak and
//! ephemeron words, make and read weak handles, read and write byte arrays, and pass values
//! on channels: without waiting inside a section, waiting (a safepoint) between sections from
//! and into frame slots. A frame may also carry the embedder's own precise maps
//! ([`SectionMutator::push_func_frame`], [`Section::set_safepoint`]): such a frame is sealed
//! like a section frame (tagged values only, written only by the section API), and the stack
//! scan clears every slot the current map calls dead, so a wrong map reads nil (null, or the
//! embedder's own nil named by [`GcBuilder::dead_slot_word`]), never a freed object.
//! `examples/sections.rs` builds
//! binary trees this way; the `binary-trees-section` workload of the stress tool measures it
//! against its raw twin. Its cost today: about 1.1 times the raw twin's instructions at depth
//! 14, and about its CPU time at depth 18 (within the noise of a loaded machine). What it
//! pays for safety: a header compare and a mask per object read ([`Section::fields`] reads
//! several words after one compare), a frame check per slot access, a goroutine and status
//! check per frame push, the flag that refuses a nested section, and a child kept in a frame
//! slot where the raw walk passes children as bare words across its calls.
//!
//! ## The trusted path for compiled code
//!
//! A compiler or interpreter whose frames are described by the stack maps it registered
//! needs no slot checks: it keeps references in its own frames' slots and works on the heap
//! through a [`RawMutator`]. It runs its instructions inside pinned sections
//! ([`RawMutator::enter`], a [`Pin`]), where nothing can stop it, so a reference may sit in a
//! Rust variable until the section ends; it allocates by a precomputed [`Shape`], reads and
//! writes fields with `unsafe` methods whose contract is a live object and an index in range
//! (checked in the debugging modes), and leaves the section at each safepoint after recording
//! its frame's safepoint index. `raw.rs` states the contract; Pebble (`lang/`) is the
//! interpreter built on it, and the `…-compiled` workloads of the stress tool use it as
//! compiled code would.
//!
//! ## The collector
//!
//! A cycle walks the phase machine [`Phase`]:
//!
//! ```text
//!   Off ──► Quiesce ──► Mark ──────────► Stw ──────► Sweep ──► Off
//!           ragged      concurrent:      one short   lazy: allocation and a
//!           barrier:    stacks one by    stop:       background goroutine
//!           barrier on, one, workers,    prove no    sweep span by span
//!           caches      assists, barrier work left,
//!           flushed,    buffers flushed  barrier off
//!           alloc black by ragged rounds
//! ```
//!
//! 1. **Sweep termination.** Whatever the last cycle left unswept is swept first: a span's
//!    mark bits must be consumed before they are reused.
//! 2. **Quiesce.** The write barrier is switched on, then a ragged barrier
//!    ([`safepoint_sched::for_each_p`]), not a stop: each P flushes its allocation cache and
//!    allocates black from its next safepoint on.
//! 3. **Mark**, concurrent with the program (the `concurrent` module explains why it is
//!    correct): globals are shaded; each goroutine's managed stack is scanned under
//!    `suspend_g` and the goroutine resumed at once (an asynchronously stopped goroutine's
//!    innermost frame conservatively); mark workers (goroutines on the Ps, a quarter of
//!    them) and assists (allocating goroutines, paying in scan work) drain the grey objects,
//!    each through a prefetching tracer (the `mark` module). Every reference store shades the
//!    old and the new value into a per-P buffer.
//! 4. **Stw (mark termination).** Ragged rounds flush the barrier buffers until one finds
//!    nothing new; then one stop flushes them again. Work found there is drained in the stop
//!    only up to a budget per P (a few tens of microseconds each); past it, or with
//!    ephemerons to revisit, the stop lets the world go and marking resumes, so a stop's work
//!    is bounded by the number of Ps whatever the program does (each such round finds objects
//!    that were white, and an object is shaded once a cycle, so the rounds end). Finding no
//!    work, the stop turns the barrier
//!    and black allocation off (with `gccheckmark`, it first re-marks the heap from the roots
//!    on the side and aborts naming any reachable object left unmarked). The heap's sweep
//!    generation grows by 2, which makes every span unswept at once, whatever the heap's
//!    size. The stop scans no stack, so its length does not grow with the goroutines.
//! 5. **Sweep**, concurrent and lazy. A span is claimed by a CAS of its sweep generation
//!    (`sg - 2` to `sg - 1`); allocation sweeps the spans it takes before using them, and a
//!    background goroutine sweeps the rest, yielding as it goes, then returns to the OS the
//!    pages that have stayed free since its previous pass.
//!
//! With [`GcConfig::stop_the_world`] (`gcstoptheworld=1`), the debugging mode, marking runs
//! inside the stop instead: roots, then one marker per P sharing work through one injector
//! (termination when all are idle at once), on the collector's threads while the Ps are
//! stopped. It is the reference the concurrent mode is tested
//! against.
//!
//! **Pacing.** The goal is `live * (1 + gc_percent / 100)` with a floor ([`GcConfig::min_heap`],
//! 4 MiB) and a soft cap ([`GcConfig::memory_limit`]); `live` is what the last cycle's marking
//! traced. What was allocated (black) while it marked cannot be freed before the next cycle
//! either, so the goal carries those bytes too, once. Go counts them as live, so its goal doubles
//! them; ours does not, because a program that allocates fast while it is marked would otherwise
//! run a heap well past what `gc_percent` promises (see `heap_goal` in `collector.rs`).
//! `SAFEPOINT_GC=N` is read as `GOGC=N`, and `SAFEPOINT_MEMLIMIT` (`512MiB`) as `GOMEMLIMIT`
//! (the soft cap; `tests/env_knobs.rs`). A concurrent cycle starts when the heap is a learnt
//! fraction of the way from what the last cycle left to the goal (earlier after a cycle that
//! overshot); allocation checks this on its slow path (a cache taking a new bitmap word or span),
//! so the fast path has no test, and wakes the cycle's driver goroutine, which runs urgently
//! (ahead of other goroutines when it is readied). The slow path then is a synchronous
//! safepoint of the allocating goroutine, once the new object is in its slot (for compiled
//! code, [`RawMutator::after_slow_alloc`] outside the pinned section): readying the urgent
//! driver with no P idle ends one running goroutine's time slice, and the allocator's poll
//! there answers that and any pending stop, stack scan or ragged barrier, at least once per
//! 64 allocations. So a goroutine that does nothing but allocate still lets the cycle start
//! and finish and the other goroutines of its P run (`tests/alloc_pacing.rs`). While marking,
//! allocation that takes the heap a tenth past the goal waits for marking to end (at most 2000
//! steps of 50 us: past that the heap grows unchecked). [`Gc::collect`] forces a full cycle,
//! from any thread: off the runtime or inside a blocking call the driver runs it and the
//! caller waits. An allocation that finds the heap at its hard limit collects once and
//! retries before it reports out of memory.
//! Memory outside the heap that objects own (a channel's Rust side, a foreign buffer freed
//! by a cleanup) is invisible to all of this unless the embedder reports it through
//! [`Gc::external`] ([`External`]): reported bytes count toward the trigger as allocation
//! does (the goal stays the heap's: the module says why), so a program making small objects
//! that own large buffers collects about as if the buffers were on the heap (Pebble's
//! channels; `tests/external.rs`). The check is the allocation slow path's, as above.
//!
//! **Debugging knobs** come from `SAFEPOINT_DEBUG` ([`DebugKnobs`]): `gctrace=1` prints one
//! line per cycle (cycle number, time since start, clock time of each phase, the termination
//! stop's parts, heap before and after, live, goal, procs) and a second for weak references
//! (handles listed; cleared, cleanups queued and run since the last line; ephemeron rounds,
//! the values they shaded and their time), `gccheckmark=1`, `gcpoison=1` (freed objects are filled with
//! [`POISON`]; a slot handed out again must still hold it, and a read through a stale
//! reference finds a corrupt header and panics), `gcstoptheworld=1`.
//!
//! **Per-P caches and barrier buffers without locks.** Each mutator operation runs in a
//! pinned section ([`safepoint_sched::pinned`]: preemption off, asynchronous preemption
//! declined), so the goroutine keeps its P throughout and no phase change falls between a
//! barrier and its store; the ragged barrier and the stop touch a P's cache and buffer only
//! at safepoints, which such a section excludes.
//!
//! **Root slots without a heap-wide lock.** Every [`Global`], every reference in flight on a
//! [`RefChan`] (and so every reference a Pebble program sends on a channel or passes to `go`)
//! is a root slot of one table whose segments never move; a goroutine takes and returns slots
//! from its P's free list, pinned, and its barrier shades go to its P's buffer like a field
//! store's; the marker reads the slots without a lock. Only callers off the Ps take the table's
//! mutex, which the termination stop holds. An integer sent on a [`RefChan`] takes no slot.
//! The `globals` module (`globals.rs`) gives the argument that the marker stays exact.
//!
//! **Publication (memory ordering on weakly ordered processors).** A new object is zeroed with
//! plain stores, gets its header and, while marking, its mark bit with Relaxed stores, and its
//! allocation bit with a Release store; its goroutine then fills its fields with Relaxed stores
//! (`init_field`, `init_link`: nobody else can see it yet). It becomes visible to anyone else
//! only when its reference is stored where another thread can load it: a field, a global, a
//! channel (a root slot in flight), a goroutine's stack (read by a scan only after `suspend_g`'s
//! status hand-off). Every such store into a field or a global is a Release store (a global's
//! swap is AcqRel), and every load of a field or a global that may yield a reference, the
//! marker's included, is an Acquire load: whoever finds the reference sees the object as its
//! goroutine left it before the store (its zeroing, header, allocation and mark bits, and its
//! fields), transitively through chains of such stores. On x86_64 (TSO) both are plain moves,
//! so this costs nothing there; on aarch64 they are STLR and LDAR (or LDAPR). Without them an
//! aarch64 marker could load a reference to an object allocated black during marking and not
//! yet see its allocation bit (and die: "not a reference to an allocated object"), or another
//! goroutine could read a published object's fields before their initial values. Go instead
//! puts a store-store barrier at the end of `mallocgc` and relies on the hardware's address
//! dependency on the reader's side; Rust has no dependency-ordered (consume) load, and the
//! barrier would not cover the fields a goroutine initialises after the allocation returns, so
//! here the publishing store itself releases. Everything else the marker reads is handed over
//! by a lock or a handshake: the shared grey queue (crossbeam's Injector), the ragged barrier
//! and the stop (each P's barrier buffer and cache), a stack scan (the status word), sweeping
//! (the stop that ends marking, then each span's claim). `gc/tests/litmus.rs` checks these
//! hand-offs as message-passing tests.
//!
//! **Known costs.** The checked [`Mutator`] pays per operation for its checks and for a pinned
//! section of its own (a slot's scope, one look at the scopes' frames on top of the managed
//! stack, the object's header against the last types it resolved): binary-trees through it
//! takes about 2.1 times the instructions of its section twin (3.97 G against 1.89 G at depth
//! 14), and 1.9 to 2.8 times Go's wall
//! time (binary-trees 21, medians of three runs alternating with Go, in three comparisons) on
//! this 2-core machine with other builds running, against 3.8 to 5.3 times before its fast
//! paths; the sections and the raw path are the fast ways in. Marking costs each object a
//! miss for itself and one or two for its span's record and bitmap word, and on a heap far
//! beyond the TLB's reach a page walk for the object and often one for the record; the
//! tracer prefetches them a few dozen objects ahead, in bursts so that the walks overlap (the
//! `mark` module, "Prefetches in bursts"). One worker
//! marks a shuffled tree of 24-byte objects (`examples/markrate.rs`, `256 tree`: 192 MB
//! live) at about 410 MB/s by the wall clock and 625 MB/s by CPU time on this 2-core
//! machine with other builds running (375 and 550 MB/s before the bursts held only
//! prefetches and the first record slab became a huge page; about 235 MB/s
//! before the bursts and the record slabs; alternating runs), but a shuffled linked list,
//! where no object is known before the previous one is loaded, only at the machine's
//! pointer-chasing speed (about 160 MB/s quiet; a chase in C over the same layout does
//! 170-210 MB/s). The heap's arenas use 4 KiB pages: hinted `MADV_HUGEPAGE`, the tree's
//! marking took about 0.6 of its CPU time in a trial, at a cost in memory and in page-fault
//! latency not yet weighed.
//!
//! ## Lifetime
//!
//! A heap lives until its last handle ([`Gc`], [`Global`], [`RefChan`], [`Mutator`]) is
//! dropped, and then unmaps everything it mapped: its arenas, its page map and its typed
//! reservation (256 GiB of address space by default, so a heap that is never dropped costs
//! the process a good share of its address space). The collector's own goroutines (the cycle
//! driver and the background sweeper) hold it weakly and end when it goes. Handles captured
//! by goroutines go when those goroutines end; when the runtime is dropped first, its shutdown
//! unwinds its live goroutines (safepoint-sched's crate docs, "Shutdown"), so their handles,
//! and with the last of them the heap, go too: every kind of park is ended (a lock, a
//! group, a select, a sleep...). A goroutine that shutdown has to abandon instead (one that
//! never reaches a safepoint, or blocks again after its unwind) keeps its handles, and the
//! heap with them.
//!
//! ## Layout
//!
//! ```text
//!  arena (64 MiB, 64 MiB-aligned, one mmap, MAP_NORESERVE: a page costs memory when touched)
//!  +--------+--------+--------+--------+--------+--------+-- ... --+--------+
//!  | page 0 | page 1 | page 2 | page 3 | page 4 | page 5 |         | p 8191 |   8 KiB pages
//!  +--------+--------+--------+--------+--------+--------+-- ... --+--------+
//!  \__ span A: class 3, 1 page ______/\__ span B: large object, 3 pages __/  free run ...
//!  | 24 | 24 | 24 | ... | 24 |tail|
//!   slots of one size; alloc bitmap  [AtomicU64; 16]  (bit i: slot i allocated)
//!                      mark bitmap   [AtomicU64; 16]  (bit i: slot i marked)
//!
//!  page map:  addr >> 26 --> ArenaMeta (one table entry per possible arena, 2^22 entries,
//!                             a MAP_NORESERVE table that costs memory only where used)
//!             (addr - arena base) >> 13 --> span record (or null)
//! ```
//!
//! "Which span, if any, contains address A" is two loads ([`Heap::find_span`]); the start of
//! the object containing A is a subtraction, a division and one bitmap load
//! ([`Span::object_start`]). Span records are never deallocated while the heap lives (freed
//! spans' records are pooled and reused) and every field is atomic, so a lookup racing with a
//! span's reuse reads stale numbers, never freed memory. Records are carved one after another
//! from 2 MiB slabs, every slab past the first hinted to be a huge page and the first
//! collapsed into one once the second is needed, so that the marker, which reads the record
//! of nearly every reference it follows, walks few pages for them.
//!
//! ## Size classes
//!
//! [`sizeclass`] builds the table at compile time: 8-byte steps up to 64 bytes, then steps of
//! about an eighth of the size, up to 32 KiB, so rounding a request up wastes at most 1/9 of
//! the slot (or less than a word). Each class's span is the fewest pages (at most 16) whose
//! tail after the last slot is at most an eighth of the span. No span has more than 1024 slots,
//! so the bitmaps have a fixed size. Larger requests get a span of their own (class 0), up to
//! one arena; more than that is [`AllocError::TooLarge`].
//!
//! ## Allocation
//!
//! Each P owns a [`Cache`] holding one span per class and, for each, one *inverted* word of
//! the span's allocation bitmap. The fast path takes the lowest set bit of that word
//! (count-trailing-zeros), clears it, zeroes the slot if the span may hold old data, and sets
//! the slot's allocation bit with a Release `fetch_or` (no lock: a cached span's bits are
//! written by its cache alone). When the word is spent the cache reads the span's next word;
//! when the span is spent it goes back to its class's central list (a mutex per class) and the
//! cache takes a partial span from there or, failing that, a new span from the page heap. The
//! page heap (one mutex) keeps free page runs by address and by size, hands out the best fit,
//! maps a new arena when nothing fits, and coalesces neighbouring runs when spans are freed.
//! An allocation that would take the pages in spans past [`HeapConfig::hard_limit`] fails with
//! [`AllocError::OutOfMemory`].
//!
//! ## Sweeping
//!
//! Each class keeps its spans on lists by sweep parity (swept, unswept) and fullness;
//! [`Heap::finish_mark`] swaps the parities in O(1). [`Heap::sweep_one`] pops an unswept
//! span, claims it by CAS of its sweep generation, sets each allocation word to
//! `alloc & mark`, clears the mark word, and puts the span on a swept list (or frees it).
//! Freed slots are filled with [`POISON`] when [`HeapConfig::poison`] is on, and a slot
//! handed out again is checked to still hold the pattern, so a write to a freed object is
//! caught. A span left empty returns to the page heap.
//!
//! ## Scavenging
//!
//! Free runs remember the scavenge generation in which they were freed. [`Heap::scavenge`]
//! gives back to the OS (`madvise(MADV_DONTNEED)`) every run that was already free at the
//! previous call, so memory freed and soon reused is not released, and RSS falls once the
//! heap has stayed smaller for one interval ([`Heap::scavenge_all`] releases everything now).
//! Each arena keeps one bit per page saying "released" (never-touched pages count as
//! released), so runs coalesce freely, only pages still resident are madvised, and
//! [`HeapStats::released_bytes`] is exact. Released pages read as zeroes, so a span carved only
//! from released pages skips zeroing.
//!
//! ## Statistics and metrics
//!
//! The fast path of allocation counts nothing; a cache counts what it allocated from a word
//! of a span's bitmap when it leaves that word (the word's cleared free bits say how many).
//! The counts are still exact at any moment: each cache shows readers, through a sequence
//! lock written only on its slow paths, its settled counts and, per kind, the allocation word
//! it is taking slots from with the mask of slots that were free at its last count, so a
//! reader adds the bits of that mask now set ([`Heap::alloc_counts`]; dropped caches' counts
//! are folded into the heap's). [`HeapStats`], [`GcStats`] and the named samples of
//! [`metrics`] (modelled on Go's `runtime/metrics`: allocations and frees in objects and
//! bytes and by size class, cycles, the pause histogram, goroutines by state, the scheduling
//! latency histogram, the marking's CPU time) read them. [`GcStats`] keeps the last pauses
//! and a histogram of all; [`Gc::pauses_since`] returns the history on request. With the
//! runtime's execution trace on (`SAFEPOINT_TRACE=FILE`), each phase of each cycle is a span
//! on its GC track, and stack scans and assists are spans inside the goroutine that did them.
//!
//! ## Types and the object header
//!
//! [`types`] holds the descriptors (records with a kind per word: reference, tagged value or
//! raw; arrays of references, of tagged values, of bytes), the per-heap [`TypeRegistry`]
//! (append-only, ids stable, names unique; lock-free lookup by id from a chunked table of
//! `OnceLock`s, so the marker never waits on a registering embedder), the one-word
//! [`Header`] (24-bit type id, 40-bit array length; id 0 never issued, so a zeroed word is no
//! header), checked object sizes, and [`types::scan_refs`], which yields the references of an
//! object (an ephemeron's value among them, whatever its key).
//!
//! ## Known costs and limits
//!
//! * [`Span::object_start`] divides by the slot size (Go uses a magic multiplier).
//! * Removing an emptied span from its class's partial list is a linear search.
//! * No object may exceed one arena (64 MiB); the page map covers 48-bit addresses.
//! * Large allocations do not sweep in proportion to what they take (Go's sweep credit): the
//!   background sweeper and the next cycle's sweep termination do that work.

mod collector;
mod concurrent;
mod debug;
mod external;
pub mod flonum;
mod globals;
mod heap;
mod mark;
pub mod metrics;
mod mutator;
mod os;
mod pageheap;
mod raw;
mod section;
pub mod sizeclass;
mod span;
pub mod types;
mod weak;

pub use collector::{Gc, GcBuilder, GcConfig, GcError, GcStats, Phase};
pub use debug::DebugKnobs;
pub use external::External;
pub use globals::{Global, RefChan};
pub use heap::{AllocCounts, AllocError, Cache, Heap, HeapConfig, HeapStats, POISON};
pub use mutator::{Bytes, Mutator, Slot};
pub use raw::{Pin, RawMutator, Shape};
pub use section::{BytesPart, Ref, Regs, Section, SectionMutator, Value};
pub use span::Span;
pub use types::{Header, TagRule, TypeDesc, TypeError, TypeId, TypeRegistry, WordKind};
pub use weak::{Cleanup, WEAK_TYPE_NAME, WeakStats};

pub(crate) use safepoint_sched::fatal;

/// Runs `f` with preemption off: for the heap's lock-taking calls made from goroutines, so that
/// no goroutine is ever stopped (by a stop-the-world, or asynchronously) while it holds a heap
/// lock that the stopper's cache flushes need.
pub(crate) fn np<R>(f: impl FnOnce() -> R) -> R {
    let _np = safepoint_sched::no_preempt();
    f()
}

/// Bytes per page.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: usize = 13;
/// Bytes per arena.
pub const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// log2 of [`ARENA_SIZE`].
pub const ARENA_SHIFT: usize = 26;
/// Pages per arena.
pub const ARENA_PAGES: usize = ARENA_SIZE / PAGE_SIZE;

// The collector's unit tests need a running scheduler (threads, stack switches in assembly,
// signals), which Miri cannot run; the pure parts' tests (size classes, types, knobs) run
// under Miri (scripts/test). Under loom only the models build.
#[cfg(all(test, not(miri), not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(all(test, loom))]
mod loom_handshakes;

#[cfg(all(test, loom))]
mod loom_publication;
#[cfg(all(test, loom))]
mod loom_weak;
