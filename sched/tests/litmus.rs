//! Litmus tests of the scheduler's hand-offs between threads, for weakly ordered processors.
//!
//! Each test is a message-passing litmus test run for many short rounds: one side writes data
//! with Relaxed stores (the ordering that data written by goroutines really has: a goroutine's
//! own variables, its managed stack) and then hands something over through the runtime; the
//! other side, on another thread, takes it and checks that it sees all the data. The runtime's
//! hand-off is the only thing that orders the data, so a hand-off weakened to Relaxed (or a
//! missing fence) lets the checker see old data: on real aarch64 hardware, with enough rounds,
//! these tests fail then. On x86_64 (TSO: stores are seen in order) they cannot fail that way,
//! and under qemu-user on an x86_64 host (CI's aarch64 section) the guest's threads run on the
//! host's memory, which reorders no more than x86 does: there they check the protocols and
//! that nothing hangs, and are ready to catch a reordering on hardware.
//!
//! `SAFEPOINT_LITMUS_SCALE` (default 1) multiplies the rounds: run them with 20 or more on an
//! ARM machine.
//!
//! * `status_word_and_scan_bit_order_a_goroutine_with_its_suspender`: `suspend_g` against the
//!   goroutine's own transitions (the status word's CAS and the SCAN bit): what the goroutine
//!   wrote before its safepoint is seen by the suspender, and what the suspender wrote while
//!   holding it is seen by the goroutine after it runs again.
//! * `run_queue_hand_off_publishes_a_goroutine_to_the_thief_that_runs_it`: a goroutine queued on
//!   its spawner's P (crossbeam's `Worker` or the P's `runnext`) and run by another thread (a
//!   steal): the spawner's writes before `go` are seen by the goroutine.
use safepoint_sched::{Goroutine, Runtime, WaitGroup, go, no_preempt, poll, suspend_g, yield_now};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Words per message: enough that a reordering shows as a torn message.
const WORDS: usize = 16;

fn scale() -> usize {
    std::env::var("SAFEPOINT_LITMUS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1)
}

/// A message of `WORDS` words, written and read with Relaxed accesses only.
struct Msg([AtomicU64; WORDS]);

impl Msg {
    fn new() -> Self {
        Msg([const { AtomicU64::new(0) }; WORDS])
    }
    fn write(&self, v: u64) {
        for w in &self.0 {
            w.store(v, Relaxed);
        }
    }
    /// The message's value, or a panic naming the torn words.
    fn read(&self, what: &str) -> u64 {
        let v: Vec<u64> = self.0.iter().map(|w| w.load(Relaxed)).collect();
        assert!(
            v.iter().all(|&x| x == v[0]),
            "{what}: a torn message {v:?}: a hand-off did not order it"
        );
        v[0]
    }
}

#[test]
fn status_word_and_scan_bit_order_a_goroutine_with_its_suspender() {
    let rounds = 3_000 * scale();
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(move || {
        // `to_scanner`: written by the goroutine between two safepoints; `to_goroutine`: written
        // by the suspender while it holds the goroutine. Every access of either side is inside a
        // `no_preempt` section of the goroutine or inside a suspension, so a suspension never
        // falls between two writes of one message; only the hand-off orders them.
        let to_scanner = Arc::new(Msg::new());
        let to_goroutine = Arc::new(Msg::new());
        let stop = Arc::new(AtomicBool::new(false));
        let target = Arc::new(std::sync::OnceLock::new());
        let (ts, tg, st, tgt) =
            (to_scanner.clone(), to_goroutine.clone(), stop.clone(), target.clone());
        let worker = go(move || {
            tgt.set(Goroutine::current().unwrap()).unwrap();
            let mut last_seen = 0;
            let mut i = 0u64;
            while !st.load(Relaxed) {
                i += 1;
                {
                    let _np = no_preempt();
                    // What the suspender wrote while it held us, all of it.
                    let seen = tg.read("the goroutine, after a suspension");
                    assert!(
                        seen >= last_seen,
                        "the suspender's messages went back: {seen} < {last_seen}"
                    );
                    last_seen = seen;
                    ts.write(i);
                }
                // A synchronous safepoint: the suspender's request (or a time slice) stops us here.
                if i.is_multiple_of(64) { yield_now() } else { poll() }
            }
            last_seen
        });
        while target.get().is_none() {
            yield_now();
        }
        let g = *target.get().unwrap();
        let mut last = 0;
        for n in 1..=rounds as u64 {
            let s = suspend_g(g);
            assert!(!s.dead(), "the goroutine ended early");
            let v = to_scanner.read("the suspender, holding the goroutine");
            assert!(v >= last, "the goroutine's messages went back: {v} < {last}");
            last = v;
            to_goroutine.write(n);
            drop(s);
            if n.is_multiple_of(16) {
                yield_now();
            }
        }
        stop.store(true, Relaxed);
        let seen = worker.join().unwrap();
        assert!(seen <= rounds as u64);
        assert!(last > 0, "the goroutine never ran between suspensions");
        eprintln!(
            "{rounds} suspensions; the goroutine passed {last} safepoints, saw {seen} messages"
        );
    });
}

#[test]
fn run_queue_hand_off_publishes_a_goroutine_to_the_thief_that_runs_it() {
    let rounds = 40 * scale();
    let per_round = 256;
    let rt = Runtime::builder().procs(4).build().unwrap();
    let stolen = rt.block_on(move || {
        let stolen = Arc::new(AtomicUsize::new(0));
        for r in 0..rounds {
            let wg = Arc::new(WaitGroup::new());
            wg.add(per_round);
            let done = Arc::new(AtomicUsize::new(0));
            let spawner = std::thread::current().id();
            for k in 0..per_round {
                // A fresh message per goroutine, written with Relaxed stores just before `go`
                // queues the goroutine on this P: only the run queue's hand-off (and the
                // spawn's) orders it for a thief.
                let msg = Arc::new(Msg::new());
                let v = (r * per_round + k) as u64 + 1;
                msg.write(v);
                let (wg, done, stolen) = (wg.clone(), done.clone(), stolen.clone());
                go(move || {
                    if std::thread::current().id() != spawner {
                        stolen.fetch_add(1, Relaxed);
                    }
                    assert_eq!(msg.read("a goroutine taken from a run queue"), v);
                    done.fetch_add(1, Relaxed);
                    wg.done();
                });
            }
            // Keep this P busy for a while without a safepoint, so that the other Ps' Ms steal
            // from its queue (a time slice ends the spin at the latest).
            let t = std::time::Instant::now();
            while done.load(Relaxed) < per_round / 2 && t.elapsed().as_millis() < 20 {
                std::hint::spin_loop();
            }
            wg.wait();
        }
        stolen.load(Relaxed)
    });
    eprintln!(
        "{stolen} of {} goroutines ran on another thread than their spawner's",
        rounds * per_round
    );
    // Not a timing assertion: with 4 Ps and a spinning spawner, thieves take thousands of
    // these; none at all would mean the test checked no hand-off between threads.
    assert!(stolen > 0, "no goroutine ran on another thread than its spawner's");
}
