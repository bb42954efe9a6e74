//! Loom models of a weak read against the collector (the `weak` module's "A read") and of
//! the ephemeron termination check (its "The fixed point"), run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-gc --lib -- loom_`.
//!
//! As in `loom_models.rs`, the model keeps only the state the protocol uses, with the same
//! orderings as the code:
//!
//! * one object `X`, reachable only through its cell; its mark bit, and whether the sweep has
//!   freed it;
//! * the cell's word (`X` or 0), the barrier flag, the reader's P's barrier buffer, the
//!   collector's read state (`ReadState`: the UNSWEPT and MARKING bits);
//! * the reader's stack slot, which the marker scans once (stacks have no barrier);
//! * exclusion: a reader's pinned section against a stop or a stack scan (`suspend_g`), as a
//!   read-write lock (sections read, the stop and the scan write).
//!
//! The collector (optionally first starting the cycle: MARKING set, the barrier on, a ragged
//! barrier that waits out the reader's section) scans the reader's stack, then stops the
//! world: flushes the buffer (shades what it holds), turns the barrier off and sets the state
//! to UNSWEPT; then, with the world running, sweeps: an unmarked `X` has its cell cleared
//! (Release) and is freed, and the UNSWEPT bit is cleared (Release). The reader, in pinned
//! sections, reads the cell into its slot, then reads it again; a read that finds the state
//! 0 returns the cell's word with no other step. What must hold: whatever a reader holds in
//! its slot is never freed, and a read never returns `X` once it is freed.
//!
//! The twin without the shading step must fail: a read after the stack scan puts the white
//! `X` into a black stack, and the sweep frees it under the reader.

use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, RwLock};
use loom::thread;

/// The object's address in the model.
const X: usize = 8;
/// The read state's bits, as in the `weak` module.
const UNSWEPT: u8 = 1;
const MARKING: u8 = 2;

struct Model {
    /// Exclusion between pinned sections (read) and stops or stack scans (write).
    world: RwLock<()>,
    cell: AtomicUsize,
    barrier_on: AtomicBool,
    wbuf: Mutex<Vec<usize>>,
    read_state: AtomicU8,
    marked: AtomicBool,
    freed: AtomicBool,
    slot: AtomicUsize,
    /// The read shades what it returns while marking (the step under test).
    shade: bool,
    /// The collector starts the cycle (the reader may read before it does).
    start: bool,
}

impl Model {
    /// During marking (the barrier is on, the last sweep is done, `X` is white), or before
    /// the cycle starts if `start`.
    fn new(shade: bool, start: bool) -> Model {
        Model {
            world: RwLock::new(()),
            cell: AtomicUsize::new(X),
            barrier_on: AtomicBool::new(!start),
            wbuf: Mutex::new(Vec::new()),
            read_state: AtomicU8::new(if start { 0 } else { MARKING }),
            marked: AtomicBool::new(false),
            freed: AtomicBool::new(false),
            slot: AtomicUsize::new(0),
            shade,
            start,
        }
    }

    /// `Inner::deref_cell`, inside a pinned section.
    fn deref(&self) -> usize {
        let state = self.read_state.load(Ordering::Acquire);
        if state == 0 {
            return self.cell.load(Ordering::Acquire);
        }
        let t = if state & UNSWEPT == 0 {
            self.cell.load(Ordering::Acquire)
        } else {
            // `deref_slow`: `holds_live` is the mark bit here (after the stop, only an
            // unmarked object is freed).
            let t = self.cell.load(Ordering::Acquire);
            if t == 0 || !self.marked.load(Ordering::Relaxed) {
                0
            } else if self.cell.load(Ordering::Acquire) == t {
                t
            } else {
                0
            }
        };
        if t != 0 && self.shade && self.barrier_on.load(Ordering::Relaxed) {
            self.wbuf.lock().unwrap().push(t);
        }
        t
    }

    /// The reader: two pinned sections, each reading the cell into its slot; the value in
    /// the slot is used (checked not freed) in the next section.
    fn reader(&self) {
        for _ in 0..2 {
            let _pinned = self.world.read().unwrap();
            let held = self.slot.load(Ordering::Relaxed);
            assert!(held == 0 || !self.freed.load(Ordering::Acquire), "a held object was freed");
            let t = self.deref();
            assert!(t == 0 || !self.freed.load(Ordering::Acquire), "a read returned freed X");
            self.slot.store(t, Ordering::Relaxed);
        }
    }

    /// The collector: (the cycle's start,) stack scan, termination stop, sweep.
    fn collector(&self) {
        if self.start {
            // `ReadState::marking_starts`, the barrier on, and the ragged barrier: the
            // reader's P passes it between two sections.
            self.read_state.fetch_or(MARKING, Ordering::Relaxed);
            self.barrier_on.store(true, Ordering::SeqCst);
            drop(self.world.write().unwrap());
        }
        {
            // `suspend_g`: the reader is at a safepoint.
            let _scan = self.world.write().unwrap();
            if self.slot.load(Ordering::Relaxed) == X {
                self.marked.store(true, Ordering::Relaxed);
            }
        }
        {
            let _stop = self.world.write().unwrap();
            for a in self.wbuf.lock().unwrap().drain(..) {
                if a == X {
                    self.marked.store(true, Ordering::Relaxed);
                }
            }
            self.barrier_on.store(false, Ordering::Relaxed);
            self.read_state.store(UNSWEPT, Ordering::Relaxed);
        }
        // The sweep, concurrent with the reader.
        if !self.marked.load(Ordering::Relaxed) {
            self.cell.store(0, Ordering::Release);
            self.freed.store(true, Ordering::Release);
        }
        self.read_state.fetch_and(!UNSWEPT, Ordering::Release);
    }
}

fn run(shade: bool, start: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let m = Arc::new(Model::new(shade, start));
        let r = {
            let m = m.clone();
            thread::spawn(move || m.reader())
        };
        m.collector();
        r.join().unwrap();
        let held = m.slot.load(Ordering::Relaxed);
        assert!(held == 0 || !m.freed.load(Ordering::Acquire), "a held object was freed");
    });
}

/// With the shading step, whatever a read returns survives the cycle.
#[test]
fn loom_weak_read_against_clear() {
    run(true, false);
}

/// And so it does when the reader may read before the cycle starts (its fast path, which
/// neither checks nor shades, taken until the MARKING bit reaches it).
#[test]
fn loom_weak_read_across_the_cycle_start() {
    run(true, true);
}

/// Without it, the model finds a read that keeps a freed object.
#[test]
#[should_panic(expected = "freed")]
fn loom_weak_read_against_clear_without_shading_fails() {
    run(false, false);
}

/// And from before the cycle's start too.
#[test]
#[should_panic(expected = "freed")]
fn loom_weak_read_across_the_cycle_start_without_shading_fails() {
    run(false, true);
}

/// The ephemeron termination check (the `weak` module's "The fixed point"): one ephemeron
/// record, scanned by a tracer (an assist) while another marker marks its key and the
/// cycle's driver runs its last round and then stops the world.
///
/// The tracer reads the key (white or marked), and if white lists the record as pending
/// and counts its marks; the other marker marks the key and counts. The driver's round reads
/// the marked count, takes the list (noting the publications it has seen) and traces the
/// values of records whose keys are marked. The stop (modelled by joining both: every
/// marker is at a safepoint) restarts the round while records are pending and either the
/// count moved or records were published after the round took the list. What must hold at
/// the end: a marked key has its value marked.
struct EphModel {
    key_marked: AtomicBool,
    value_marked: AtomicBool,
    marked: AtomicUsize,
    /// The pending list (0 or 1 record), the publications, the count the last round saw.
    pending: Mutex<(usize, usize, usize)>,
    /// The protocol as written: publish before counting, and restart on fresh records.
    fixed: bool,
}

impl EphModel {
    fn tracer(&self) {
        if self.key_marked.load(Ordering::Relaxed) {
            self.value_marked.store(true, Ordering::Relaxed);
            // Release: as `count_marked`.
            self.marked.fetch_add(1, Ordering::Release);
            return;
        }
        let publish = || {
            let mut p = self.pending.lock().unwrap();
            p.0 += 1;
            p.1 += 1;
        };
        if self.fixed {
            publish();
            self.marked.fetch_add(1, Ordering::Release);
        } else {
            self.marked.fetch_add(1, Ordering::Release);
            publish();
        }
    }

    fn key_marker(&self) {
        self.key_marked.store(true, Ordering::Relaxed);
        self.marked.fetch_add(1, Ordering::Release);
    }

    /// A round; returns the marked count read before it.
    fn round(&self) -> usize {
        let m0 = self.marked.load(Ordering::Acquire);
        let taken = {
            let mut p = self.pending.lock().unwrap();
            p.2 = p.1;
            std::mem::take(&mut p.0)
        };
        if taken > 0 {
            if self.key_marked.load(Ordering::Relaxed) {
                self.value_marked.store(true, Ordering::Relaxed);
            } else {
                self.pending.lock().unwrap().0 += taken;
            }
        }
        m0
    }
}

fn run_eph(fixed: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let m = Arc::new(EphModel {
            key_marked: AtomicBool::new(false),
            value_marked: AtomicBool::new(false),
            marked: AtomicUsize::new(0),
            pending: Mutex::new((0, 0, 0)),
            fixed,
        });
        let t = {
            let m = m.clone();
            thread::spawn(move || m.tracer())
        };
        let k = {
            let m = m.clone();
            thread::spawn(move || m.key_marker())
        };
        let mut clean = m.round();
        // The stop.
        t.join().unwrap();
        k.join().unwrap();
        loop {
            let (pending, fresh) = {
                let p = m.pending.lock().unwrap();
                (p.0 > 0, p.1 != p.2)
            };
            let moved = m.marked.load(Ordering::Acquire) != clean;
            if !(pending && (moved || (fixed && fresh))) {
                break;
            }
            // Restart: another round.
            clean = m.round();
        }
        if m.key_marked.load(Ordering::Relaxed) {
            assert!(m.value_marked.load(Ordering::Relaxed), "a marked key's value left white");
        }
    });
}

/// Publishing before counting, and restarting on records published after the round, leave
/// no marked key with a white value.
#[test]
fn loom_ephemeron_termination() {
    run_eph(true);
}

/// Counting before publishing, with no check for fresh records, lets the stop end the
/// marking with a marked key's value white.
#[test]
#[should_panic(expected = "left white")]
fn loom_ephemeron_termination_without_the_publication_check_fails() {
    run_eph(false);
}
