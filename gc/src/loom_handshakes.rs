//! loom models of the concurrent collector's handshakes with the mutators, run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p safepoint-gc --lib -- loom_` (beside the
//! sweep claim's model in `loom_models`).
//!
//! The collector's protocols span two crates (the scheduler's ragged barrier and stop, the
//! collector's barrier buffers, caches and queue), so they are modelled here as one small
//! state machine that keeps their shape and their memory orderings: a heap of three objects
//! with one reference field each, one P whose mutator runs a fixed program of pinned
//! operations with a safepoint between each two, and the cycle's driver. The mutator answers
//! the ragged barrier's function and stops only at its safepoints, as a P does; its P state
//! (barrier buffer, allocate-black flag) is a loom `UnsafeCell`, so loom also checks the claim
//! that only its owner, the barrier's function at its safepoint, or a stopper touch it. Waits
//! sleep on loom `Notify`s, as the runtime's waits end on its notes.
//!
//! At the stop that ends marking, each model checks that every object reachable from the
//! global root `A` and the mutator's two stack slots is marked (otherwise sweeping would free
//! it) and that no grey object is left in the queue or the P's buffer.
//!
//! Each model comes with variants that break one step of the protocol, and a test per
//! variant that expects the model to fail (`should_panic`): the bugs the model catches.
//! (Flushing the buffers again inside the stop is part of the protocol, but with these
//! programs nothing can be shaded white between a round that finds nothing and the stop, so
//! no variant drops it.)

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, Notify};
use loom::thread;

const NONE: usize = usize::MAX;
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Which step of the protocol a variant breaks (none, for the protocol as built).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bug {
    None,
    /// The write barrier shades only the value written (no deletion half).
    NoDeletionBarrier,
    /// The quiesce function does not switch allocation to black.
    NoBlackAllocation,
    /// The barrier is switched on after the roots are scanned, not before the quiesce.
    BarrierOnLate,
    /// Termination trusts a ragged round's count alone, not also the shared queue (which a
    /// P's full barrier buffer flushes into between rounds).
    IgnoreQueueAfterRound,
    /// Black allocation is switched off by the last ragged round, before the stop that ends
    /// marking, instead of inside it.
    BlackOffBeforeStop,
}

/// What the ragged barrier asks the P to do at its next safepoint.
const QUIESCE: usize = 1;
const FLUSH: usize = 2;
const FLUSH_AND_BLACK_OFF: usize = 3;

/// Entries of the P's barrier buffer: when a barrier fills it, the P flushes it into the
/// shared queue itself (`barrier_slow`).
const WBUF_LEN: usize = 2;

/// Which program the mutator runs (see the tests).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Program {
    /// `s1 = A.f; A.f = null; s2 = new C`.
    Hide,
    /// `s1 = A.f; s2 = new C; A.f = C`.
    Replace,
}

/// One P's collector state (`PState`: the barrier buffer and the cache's black flag).
struct PState {
    wbuf: Vec<usize>,
    black: bool,
}

struct World {
    bug: Bug,
    /// Each object's one reference field (`NONE` for null).
    field: [AtomicUsize; 3],
    mark: [AtomicBool; 3],
    /// The grey objects (the collector's shared queue).
    queue: Mutex<Vec<usize>>,
    /// `Shared::barrier_on`: read Relaxed by the barrier, as in the collector.
    barrier_on: AtomicBool,
    /// The P's state: touched by the mutator between its operations, by the barrier's
    /// function at its safepoint (on the mutator's thread), or by a stopper.
    p: UnsafeCell<PState>,
    /// The mutator's two stack slots (no barrier; read by the collector only while the
    /// mutator is stopped, as `suspend_g` does).
    stack: [AtomicUsize; 2],
    // The ragged barrier (`for_each_p` for one other P): the P's pending flag, which
    // function, what it found, and its acknowledgement.
    sp_flag: AtomicBool,
    sp_fn: AtomicUsize,
    sp_found: AtomicUsize,
    sp_done: AtomicBool,
    // A stop (of the world, or of the one goroutine for its stack scan).
    stop_req: AtomicBool,
    stopped: AtomicBool,
    /// The collector has finished: the mutator may leave.
    done: AtomicBool,
    /// Wake-ups (the runtime's notes): the collector waiting for the P; the P's M idle, or
    /// parked in a stop, waiting for the collector.
    to_collector: Notify,
    to_mutator: Notify,
}

impl World {
    /// The heap as the cycle finds it: `A.f = B`; `C` free. `marking`: the cycle is already
    /// marking (barrier on, allocating black, roots shaded, the stack scanned while empty).
    fn new(bug: Bug, marking: bool) -> World {
        World {
            bug,
            field: [AtomicUsize::new(B), AtomicUsize::new(NONE), AtomicUsize::new(NONE)],
            mark: [AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false)],
            queue: Mutex::new(Vec::new()),
            barrier_on: AtomicBool::new(marking),
            p: UnsafeCell::new(PState { wbuf: Vec::new(), black: marking }),
            stack: [AtomicUsize::new(NONE), AtomicUsize::new(NONE)],
            sp_flag: AtomicBool::new(false),
            sp_fn: AtomicUsize::new(0),
            sp_found: AtomicUsize::new(0),
            sp_done: AtomicBool::new(false),
            stop_req: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            done: AtomicBool::new(false),
            to_collector: Notify::new(),
            to_mutator: Notify::new(),
        }
    }

    /// Shades `x`: sets its mark bit and, if this call set it, queues it. Whether it was
    /// white.
    fn shade(&self, x: usize) -> bool {
        // Relaxed mark bits, as in `Span::set_mark`.
        if x != NONE && !self.mark[x].swap(true, Ordering::Relaxed) {
            self.queue.lock().unwrap().push(x);
            true
        } else {
            false
        }
    }

    /// Scans grey objects until the queue is empty.
    fn drain(&self) {
        loop {
            let Some(x) = self.queue.lock().unwrap().pop() else { return };
            // Relaxed: as the marker reads object fields.
            self.shade(self.field[x].load(Ordering::Relaxed));
        }
    }

    /// Moves the P's barrier buffer into the queue; how many were white.
    fn flush(&self, p: &mut PState) -> usize {
        p.wbuf.drain(..).map(|a| self.shade(a) as usize).sum()
    }

    // ---- the mutator's side ----

    /// A reference store into `A.f`, pinned: the barrier (shade old and new into the P's
    /// buffer when it is on, flushing a full buffer), then the store; no safepoint between.
    fn store_a(&self, new: usize) {
        // Relaxed: see `Shared::barrier_on`. The old value is read only when the barrier is
        // on, as `Inner::store_field` does.
        if self.barrier_on.load(Ordering::Relaxed) {
            let old = self.field[A].load(Ordering::Relaxed);
            self.p.with_mut(|p| {
                // SAFETY: the P's owner, between safepoints.
                let p = unsafe { &mut *p };
                if self.bug != Bug::NoDeletionBarrier && old != NONE {
                    p.wbuf.push(old);
                }
                if new != NONE {
                    p.wbuf.push(new);
                }
                if p.wbuf.len() >= WBUF_LEN {
                    self.flush(p);
                }
            });
        }
        self.field[A].store(new, Ordering::Relaxed);
    }

    /// Allocates `C`: marked first if the P allocates black.
    fn alloc_c(&self) -> usize {
        // SAFETY: the P's owner, between safepoints.
        let black = self.p.with(|p| unsafe { (*p).black });
        if black {
            self.mark[C].store(true, Ordering::Relaxed);
        }
        C
    }

    /// A safepoint: run the ragged barrier's function if asked, park while a stop holds.
    fn safepoint(&self) {
        // A load, then the claim (as `schedule` and `run_safe_point_fn` do). AcqRel: the
        // claim pairs with the barrier's Release store of the flag (and of what it published
        // before it: the barrier switched on).
        if self.sp_flag.load(Ordering::Acquire) && self.sp_flag.swap(false, Ordering::AcqRel) {
            let found = self.p.with_mut(|p| {
                // SAFETY: the barrier's function, at the P's safepoint.
                let p = unsafe { &mut *p };
                match self.sp_fn.load(Ordering::Relaxed) {
                    QUIESCE => {
                        // (The cache flush has nothing to model.)
                        if self.bug != Bug::NoBlackAllocation {
                            p.black = true;
                        }
                        0
                    }
                    FLUSH_AND_BLACK_OFF => {
                        p.black = false;
                        self.flush(p)
                    }
                    _ => self.flush(p),
                }
            });
            self.sp_found.store(found, Ordering::Relaxed);
            // Release: pairs with the caller's Acquire wait.
            self.sp_done.store(true, Ordering::Release);
            self.to_collector.notify();
        }
        if self.stop_req.load(Ordering::Acquire) {
            self.stopped.store(true, Ordering::Release);
            self.to_collector.notify();
            while self.stop_req.load(Ordering::Acquire) {
                self.to_mutator.wait();
            }
            self.stopped.store(false, Ordering::Release);
            self.to_collector.notify();
        }
    }

    /// The mutator: its program, a safepoint between each two operations, then safepoints
    /// until the collector is done.
    fn mutator(&self, program: Program) {
        self.safepoint();
        // s1 = A.f
        self.stack[0].store(self.field[A].load(Ordering::Relaxed), Ordering::Relaxed);
        self.safepoint();
        match program {
            Program::Hide => {
                self.store_a(NONE);
                self.safepoint();
                self.stack[1].store(self.alloc_c(), Ordering::Relaxed);
            }
            Program::Replace => {
                self.stack[1].store(self.alloc_c(), Ordering::Relaxed);
                self.safepoint();
                self.store_a(C);
            }
        }
        loop {
            self.safepoint();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            // Idle (or running code that never needs the collector) until asked.
            self.to_mutator.wait();
        }
    }

    // ---- the collector's side ----

    /// `for_each_p(f)` for the one P: publish, then wait until its safepoint ran `f`.
    /// Returns what `f` found.
    fn ragged(&self, f: usize) -> usize {
        self.sp_fn.store(f, Ordering::Relaxed);
        self.sp_done.store(false, Ordering::Relaxed);
        // Release: pairs with the claim's AcqRel (`run_safe_point_fn`).
        self.sp_flag.store(true, Ordering::Release);
        self.to_mutator.notify();
        while !self.sp_done.load(Ordering::Acquire) {
            self.to_collector.wait();
        }
        self.sp_found.load(Ordering::Relaxed)
    }

    /// Stops the P at its next safepoint (the world, or the goroutine for a stack scan).
    fn stop(&self) {
        self.stop_req.store(true, Ordering::SeqCst);
        self.to_mutator.notify();
        while !self.stopped.load(Ordering::Acquire) {
            self.to_collector.wait();
        }
    }

    fn restart(&self) {
        self.stop_req.store(false, Ordering::Release);
        self.to_mutator.notify();
        while self.stopped.load(Ordering::Acquire) {
            self.to_collector.wait();
        }
    }

    /// Inside the final stop: every object reachable from the roots is marked, and no grey
    /// object waits anywhere.
    fn check(&self) {
        let mut todo = vec![A];
        for s in &self.stack {
            todo.push(s.load(Ordering::Relaxed));
        }
        while let Some(x) = todo.pop() {
            if x == NONE {
                continue;
            }
            assert!(self.mark[x].load(Ordering::Relaxed), "object {x} is reachable but white");
            todo.push(self.field[x].load(Ordering::Relaxed));
        }
        let q = self.queue.lock().unwrap();
        assert!(q.is_empty(), "marking ended with grey objects {q:?} in the queue");
        // SAFETY: the P is stopped.
        let left = self.p.with(|p| unsafe { (*p).wbuf.len() });
        assert_eq!(left, 0, "marking ended with grey objects in the P's buffer");
    }

    /// Mark termination: ragged rounds until one finds no work (and the queue is empty),
    /// then the stop, which flushes the buffer again; work found there is drained inside the
    /// stop (the collector drains a bounded share there and restarts the world if that does
    /// not finish it; the model's work is small enough to drain at once).
    /// Ends with the check and the barrier and black allocation switched off.
    fn terminate(&self) {
        loop {
            self.drain();
            let last =
                if self.bug == Bug::BlackOffBeforeStop { FLUSH_AND_BLACK_OFF } else { FLUSH };
            let found = self.ragged(last);
            let queued = !self.queue.lock().unwrap().is_empty();
            if found == 0 && (!queued || self.bug == Bug::IgnoreQueueAfterRound) {
                break;
            }
        }
        self.stop();
        // SAFETY: the P is stopped.
        self.p.with_mut(|p| self.flush(unsafe { &mut *p }));
        if self.bug != Bug::IgnoreQueueAfterRound {
            self.drain();
        }
        self.check();
        // SeqCst: ordered before the restart (as in the collector).
        self.barrier_on.store(false, Ordering::SeqCst);
        // SAFETY: the P is stopped.
        self.p.with_mut(|p| unsafe { (*p).black = false });
        self.restart();
    }

    /// A whole cycle from Off: quiesce, roots, marking, termination.
    fn cycle(&self) {
        if self.bug != Bug::BarrierOnLate {
            // SeqCst: before the ragged barrier that publishes it.
            self.barrier_on.store(true, Ordering::SeqCst);
        }
        self.ragged(QUIESCE);
        // Roots: the global, then the goroutine's stack, scanned while it is stopped.
        self.shade(A);
        self.stop();
        for s in &self.stack {
            self.shade(s.load(Ordering::Relaxed));
        }
        self.restart();
        if self.bug == Bug::BarrierOnLate {
            self.barrier_on.store(true, Ordering::SeqCst);
        }
        self.terminate();
    }
}

/// Runs `program` against a whole cycle (`from_off`) or against termination only,
/// exploring every interleaving with up to two preemptions.
fn model(bug: Bug, program: Program, from_off: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(move || {
        let w = Arc::new(World::new(bug, !from_off));
        let m = {
            let w = w.clone();
            thread::spawn(move || w.mutator(program))
        };
        if from_off {
            w.cycle();
        } else {
            w.shade(A);
            w.terminate();
        }
        // Release: pairs with the mutator's Acquire; it may leave.
        w.done.store(true, Ordering::Release);
        w.to_mutator.notify();
        m.join().unwrap();
    });
}

/// Quiesce and the roots, against the classic way to hide an object (`s1 = A.f; A.f =
/// null`, then `s2 = new C`): the barrier is switched on, then a ragged barrier makes the P
/// allocate black from its next safepoint; the global and the goroutine's stack are scanned;
/// marking and termination follow. Whatever the interleaving with the program, nothing
/// reachable is left white: `B`, loaded to the stack before or after the stack scan and
/// unlinked from `A` before or after `A` is scanned, is kept by the stack scan or by the
/// deletion barrier; `C`, reachable only from a stack slot written after the scan, by black
/// allocation.
#[test]
fn loom_quiesce_then_marking_keeps_everything_reachable() {
    model(Bug::None, Program::Hide, true);
}

/// Without the deletion half of the barrier, `B` is lost when the stack is scanned before
/// the program loads it and `A` after the program unlinks it (the hybrid barrier's reason:
/// stacks are scanned once, with no barrier on their slots).
#[test]
#[should_panic(expected = "reachable but white")]
fn loom_quiesce_catches_a_barrier_without_its_deletion_half() {
    model(Bug::NoDeletionBarrier, Program::Hide, true);
}

/// Without black allocation, `C`, allocated after the stack scan into a stack slot, is lost.
#[test]
#[should_panic(expected = "reachable but white")]
fn loom_quiesce_catches_allocation_that_is_not_black() {
    model(Bug::NoBlackAllocation, Program::Hide, true);
}

/// Switching the barrier on after the roots are scanned (rather than before the ragged
/// barrier that starts the cycle) lets a store between the scan and the switch go unshaded.
#[test]
#[should_panic(expected = "reachable but white")]
fn loom_quiesce_catches_the_barrier_switched_on_late() {
    model(Bug::BarrierOnLate, Program::Hide, true);
}

/// Mark termination, starting in the middle of marking (barrier on, allocating black, `A`
/// shaded, the stack scanned while empty), against `s1 = A.f; s2 = new C; A.f = C`, whose
/// barrier fills the P's buffer (old `B`, new `C`) and flushes it into the queue: ragged
/// rounds until one finds nothing and the queue is empty, then the stop. Whatever the
/// interleaving, nothing reachable is white and nothing grey is left at the stop.
#[test]
fn loom_termination_rounds_then_the_stop_keep_everything_reachable() {
    model(Bug::None, Program::Replace, false);
}

/// Ending when a round's functions found nothing, without looking at the shared queue,
/// leaves `B` grey there (flushed by the P's full buffer between rounds), never scanned.
#[test]
#[should_panic(expected = "grey objects")]
fn loom_termination_catches_ending_with_work_in_the_queue() {
    model(Bug::IgnoreQueueAfterRound, Program::Replace, false);
}

/// Switching black allocation off at the last ragged round, before the stop, lets the P
/// allocate `C` white while its span's mark bits still decide what the sweep frees.
#[test]
#[should_panic(expected = "reachable but white")]
fn loom_termination_catches_black_allocation_switched_off_before_the_stop() {
    model(Bug::BlackOffBeforeStop, Program::Replace, false);
}
