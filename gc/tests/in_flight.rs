//! A reference in flight on a managed channel is a root: sent by a goroutine that then
//! drops its own copy and exits, it survives several collections (with the freed memory
//! around it reused and poisoned) and is received intact; buffered or handed over, on
//! channels closed with values buffered, while cycles run concurrently. A channel dropped
//! with references inside releases them, and root slots made and dropped off the heap's Ps
//! keep the marking exact (checkmark).

mod trees;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use safepoint_gc::{Gc, Mutator, RefChan};
use safepoint_sched::Runtime;
use trees::{TreeTypes, build, checksum, expected};

#[test]
fn a_reference_received_after_several_collections_is_intact() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().checkmark(true).poison(true).ignore_env().build(&rt).unwrap();
    let t = trees::types(&gc);
    let ch = RefChan::new(&gc, 4);
    let (g1, c1) = (gc.clone(), ch.clone());
    rt.block_on(move || {
        // The sender: its only copies are its slots, gone when it exits.
        let (g2, c2) = (g1.clone(), c1.clone());
        safepoint_sched::go(move || {
            let mut m = Mutator::new(&g2).unwrap();
            m.scope(|m, [a, b]| {
                build(m, t, 77, 7, a);
                build(m, t, 78, 3, b);
                m.send(&c2, a).unwrap();
                m.send(&c2, b).unwrap();
            });
        })
        .join()
        .unwrap();
        assert_eq!(c1.len(), 2);
        let mut m = Mutator::new(&g1).unwrap();
        let before = g1.cycles();
        m.scope(|m, [junk, r]| {
            for i in 0..4 {
                // Garbage of the same shapes, so freed slots are reused between collections.
                for s in 0..20 {
                    build(m, t, 1000 * i + s, 4, junk);
                }
                m.clear(junk).unwrap();
                m.collect();
            }
            assert!(g1.cycles() >= before + 4);
            assert!(m.recv(&c1, r).unwrap());
            assert_eq!(checksum(m, t, r), expected(77, 7));
            m.collect();
            assert_eq!(checksum(m, t, r), expected(77, 7));
            assert!(m.recv(&c1, r).unwrap());
            assert_eq!(checksum(m, t, r), expected(78, 3));
        });
        // Received and dropped: now collectable.
        m.collect();
        assert_eq!(g1.stats().heap.live_objects, 0);
    });
}

/// A heap with both checking modes: checkmark re-marks from every root (every root slot in
/// use included) in each cycle's stop and aborts on an object the concurrent marking missed;
/// poison fills what the sweep frees, so a reference whose object was freed in flight reads a
/// corrupt header.
fn checked_heap(rt: &Runtime) -> Gc {
    Gc::builder().checkmark(true).poison(true).ignore_env().build(rt).unwrap()
}

/// Runs `gc`'s cycles back to back on a goroutine until `stop` (at least one, however late
/// the goroutine first runs); returns how many ran.
fn collector(gc: &Gc, stop: &Arc<AtomicBool>) -> safepoint_sched::JoinHandle<u64> {
    let (gc, stop) = (gc.clone(), stop.clone());
    safepoint_sched::go(move || {
        let before = gc.cycles();
        loop {
            gc.collect();
            safepoint_sched::yield_now();
            // Relaxed: a flag; the join orders the rest.
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        gc.cycles() - before
    })
}

/// Builds tree `(seed, d)` and sends it on `ch` with its seed, in a pair: the sender's slots
/// are cleared at once, so the channel holds the only reference.
fn send_tree(m: &mut Mutator, t: TreeTypes, ch: &RefChan, seed: u64, d: u32) {
    m.scope(|m, [p, tree, v]| {
        m.alloc(p, t.pair).unwrap();
        build(m, t, seed, d, tree);
        m.store(p, 0, tree).unwrap();
        m.set_int(v, seed as i64).unwrap();
        m.store(p, 1, v).unwrap();
        m.clear(tree).unwrap();
        m.send(ch, p).unwrap();
    });
}

/// Receives a pair sent by [`send_tree`] and checks its tree against its seed; `false` once
/// `ch` is closed and drained.
fn recv_tree(m: &mut Mutator, t: TreeTypes, ch: &RefChan, d: u32) -> bool {
    m.scope(|m, [p, tree, v]| {
        if !m.recv(ch, p).unwrap() {
            return false;
        }
        m.load(tree, p, 0).unwrap();
        m.load(v, p, 1).unwrap();
        let seed = m.int(v).unwrap() as u64;
        // Garbage between the receive and the walk, so freed slots are reused (and poisoned)
        // meanwhile.
        build(m, t, seed ^ 0xdead, 2, v);
        assert_eq!(checksum(m, t, tree), expected(seed, d), "tree {seed} damaged in flight");
        true
    })
}

#[test]
fn references_in_flight_survive_concurrent_cycles_buffered_and_unbuffered() {
    const SENDERS: u64 = 8;
    const EACH: u64 = 30;
    const DEPTH: u32 = 3;
    let rt = Runtime::builder().procs(4).build().unwrap();
    let gc = checked_heap(&rt);
    let t = trees::types(&gc);
    let g = gc.clone();
    let (received, cycles) = rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let start = g.cycles();
        let coll = collector(&g, &stop);
        // Senders alternate between an unbuffered and a buffered channel, two receivers on
        // each: references go on one P's root slots and come off on another's.
        let chans = [RefChan::new(&g, 0), RefChan::new(&g, 8)];
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (g, ch) = (g.clone(), chans[(s % 2) as usize].clone());
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&g).unwrap();
                    for i in 0..EACH {
                        send_tree(&mut m, t, &ch, s * 1000 + i, DEPTH);
                        if i % 4 == 0 {
                            safepoint_sched::yield_now();
                        }
                        // Halfway, wait for two whole cycles, so that they run with trees
                        // in flight however the goroutines are scheduled.
                        if i == EACH / 2 {
                            while g.cycles() < start + 2 {
                                safepoint_sched::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        let receivers: Vec<_> = (0..4)
            .map(|r| {
                let (g, ch) = (g.clone(), chans[r % 2].clone());
                safepoint_sched::go(move || {
                    let mut m = Mutator::new(&g).unwrap();
                    let mut n = 0u64;
                    while recv_tree(&mut m, t, &ch, DEPTH) {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        for ch in &chans {
            ch.close();
        }
        let received: u64 = receivers.into_iter().map(|r| r.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        (received, coll.join().unwrap())
    });
    assert_eq!(received, SENDERS * EACH);
    assert!(cycles >= 2, "only {cycles} cycles ran beside the channels");
    // Every root slot was released: nothing of the trees is left.
    gc.collect();
    assert_eq!(gc.stats().heap.live_objects, 0);
}

#[test]
fn a_closed_channel_keeps_its_buffered_references_through_cycles() {
    const N: u64 = 12;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = checked_heap(&rt);
    let t = trees::types(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let ch = RefChan::new(&g, N as usize);
        let (g2, c2) = (g.clone(), ch.clone());
        safepoint_sched::go(move || {
            let mut m = Mutator::new(&g2).unwrap();
            for i in 0..N {
                send_tree(&mut m, t, &c2, 500 + i, 4);
            }
            c2.close();
        })
        .join()
        .unwrap();
        assert_eq!(ch.len(), N as usize);
        let stop = Arc::new(AtomicBool::new(false));
        let coll = collector(&g, &stop);
        let mut m = Mutator::new(&g).unwrap();
        let mut got = 0;
        m.scope(|m, [junk]| {
            let before = g.cycles();
            // Concurrent cycles while the channel, closed, holds the only references.
            while g.cycles() < before + 3 {
                build(m, t, 9, 4, junk);
                safepoint_sched::yield_now();
            }
            m.clear(junk).unwrap();
        });
        while recv_tree(&mut m, t, &ch, 4) {
            got += 1;
        }
        stop.store(true, Ordering::Relaxed);
        coll.join().unwrap();
        assert_eq!(got, N);
    });
    gc.collect();
    assert_eq!(gc.stats().heap.live_objects, 0);
}

#[test]
fn a_channel_dropped_with_references_inside_releases_them() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = checked_heap(&rt);
    let t = trees::types(&gc);
    let (g, g3) = (gc.clone(), gc.clone());
    // One channel's last handle goes on a goroutine (a P's release), the other's outside the
    // runtime (the release off the Ps, under the table's lock).
    let outside = rt.block_on(move || {
        let on_p = RefChan::new(&g, 8);
        let outside = RefChan::new(&g, 8);
        let mut m = Mutator::new(&g).unwrap();
        for i in 0..6 {
            send_tree(&mut m, t, &on_p, 10 + i, 3);
            send_tree(&mut m, t, &outside, 20 + i, 3);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let coll = collector(&g, &stop);
        let before = g.cycles();
        while g.cycles() < before + 2 {
            safepoint_sched::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        coll.join().unwrap();
        // Still held by the channels.
        assert!(g.stats().heap.live_objects > 0);
        m.collect();
        let held = g.stats().heap.live_objects;
        drop(on_p);
        m.collect();
        let after = g.stats().heap.live_objects;
        assert!(after > 0 && after < held, "live {held} -> {after} after dropping one channel");
        outside
    });
    drop(outside);
    g3.collect();
    assert_eq!(g3.stats().heap.live_objects, 0);
}

#[test]
fn globals_of_a_heap_made_and_dropped_off_its_ps_while_it_marks() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let other = Runtime::builder().procs(1).build().unwrap();
    let gc = checked_heap(&rt);
    let t = trees::types(&gc);
    let g = gc.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let coll = rt.spawn(move || collector(&g, &s2).join().unwrap()).unwrap();
    // Goroutines of another runtime and a plain thread make and drop this heap's globals
    // (the path off the Ps) while its cycles run; goroutines of its own runtime hand
    // references through globals (a P's path).
    let g2 = gc.clone();
    let foreign = other
        .spawn(move || {
            for _ in 0..2000 {
                let v: Vec<_> = (0..8).map(|_| safepoint_gc::Global::new(&g2)).collect();
                drop(v);
                safepoint_sched::yield_now();
            }
        })
        .unwrap();
    let g3 = gc.clone();
    let thread = std::thread::spawn(move || {
        for _ in 0..2000 {
            let v: Vec<_> = (0..8).map(|_| safepoint_gc::Global::new(&g3)).collect();
            drop(v);
        }
    });
    let g4 = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g4).unwrap();
        m.scope(|m, [a, b]| {
            for i in 0..200 {
                build(m, t, i, 3, a);
                let glob = m.new_global(a).unwrap();
                m.clear(a).unwrap();
                build(m, t, i + 7, 2, b);
                m.load_global(a, &glob).unwrap();
                drop(glob);
                assert_eq!(checksum(m, t, a), expected(i, 3));
            }
        });
    });
    foreign.join().unwrap();
    thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(coll.join().unwrap() >= 1);
}

/// The barrier on root slots: references built before a cycle, handed from senders whose
/// stacks are not yet scanned to receivers whose stacks are, while the stacks of many parked
/// goroutines are scanned, and held by the receivers (in their stacks, or in globals made by
/// the senders) until the cycle has ended. A registration that did not shade its value would
/// leave a global's object unmarked (a channel's value is shaded again by its release):
/// checkmark aborts, or the sweep frees and poisons it.
#[test]
fn references_handed_over_while_stacks_are_scanned_keep_their_objects() {
    const PAIRS: usize = 4;
    const WORKERS: u64 = 4;
    const IDLE: usize = 200;
    const ROUNDS: u64 = 12;
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder()
        .checkmark(true)
        .poison(true)
        .gc_percent(u32::MAX)
        .ignore_env()
        .build(&rt)
        .unwrap();
    let t = trees::types(&gc);
    let g = gc.clone();
    rt.block_on(move || {
        let ch = RefChan::new(&g, 0);
        let idle_park = safepoint_sched::Chan::<()>::unbuffered();
        let go_ahead = safepoint_sched::Chan::<u64>::new(64);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let built = safepoint_sched::Chan::<()>::new(64);
        let gch = safepoint_sched::Chan::<safepoint_gc::Global>::new(64);
        let sender = |s: u64| {
            let (g, ch, gch, go_ahead) = (g.clone(), ch.clone(), gch.clone(), go_ahead.clone());
            let (sent, built) = (sent.clone(), built.clone());
            safepoint_sched::go(move || {
                let mut m = Mutator::new(&g).unwrap();
                m.scope(|m, slots: [_; PAIRS]| {
                    while let Ok(round) = go_ahead.recv() {
                        // Built while no cycle runs.
                        for (i, &p) in slots.iter().enumerate() {
                            m.scope(|m, [tree, v]| {
                                m.alloc(p, t.pair).unwrap();
                                let seed = round * 100 + s * 10 + i as u64;
                                build(m, t, seed, 2, tree);
                                m.store(p, 0, tree).unwrap();
                                m.set_int(v, seed as i64).unwrap();
                                m.store(p, 1, v).unwrap();
                            });
                        }
                        built.send(());
                        // Then sent as soon as marking runs, each slot cleared.
                        while g.phase() != safepoint_gc::Phase::Mark {
                            safepoint_sched::yield_now();
                        }
                        for (i, &p) in slots.iter().enumerate() {
                            if i % 2 == 0 {
                                m.send(&ch, p).unwrap();
                            } else {
                                // A global made now, handed over as a Rust value.
                                gch.send(m.new_global(p).unwrap());
                            }
                            m.clear(p).unwrap();
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                });
            })
        };
        let idle = || {
            let park = idle_park.clone();
            safepoint_sched::go(move || {
                let _ = park.recv();
            })
        };
        let receiver = || {
            let (g, ch, gch) = (g.clone(), ch.clone(), gch.clone());
            safepoint_sched::go(move || {
                let mut m = Mutator::new(&g).unwrap();
                m.scope(|m, slots: [_; PAIRS]| {
                    let mut globals = Vec::new();
                    loop {
                        for (i, &p) in slots.iter().enumerate() {
                            if i % 2 == 0 {
                                if !m.recv(&ch, p).unwrap() {
                                    return;
                                }
                            } else {
                                let Ok(gl) = gch.recv() else { return };
                                globals.push((p, gl));
                            }
                        }
                        // Held in this stack or in the globals only, until the cycle has
                        // ended.
                        let c = g.cycles();
                        while g.cycles() == c && g.phase() != safepoint_gc::Phase::Off {
                            safepoint_sched::yield_now();
                        }
                        for (p, gl) in globals.drain(..) {
                            m.load_global(p, &gl).unwrap();
                        }
                        for &p in &slots {
                            m.scope(|m, [tree, v]| {
                                m.load(tree, p, 0).unwrap();
                                m.load(v, p, 1).unwrap();
                                let seed = m.int(v).unwrap() as u64;
                                assert_eq!(checksum(m, t, tree), expected(seed, 2));
                            });
                        }
                    }
                });
            })
        };
        // Senders, receivers and parked goroutines interleaved in the list of goroutines, so
        // that whichever end the cycle's workers take stacks from, some receivers are scanned
        // (black) before the scans of hundreds of parked goroutines, and some senders after:
        // the hand-overs fall in between.
        let (mut senders, mut receivers, mut parked) = (Vec::new(), Vec::new(), Vec::new());
        for w in 0..WORKERS {
            senders.push(sender(w));
            parked.extend((0..IDLE).map(|_| idle()));
            receivers.push(receiver());
            parked.extend((0..IDLE).map(|_| idle()));
        }
        for round in 0..ROUNDS {
            for _ in 0..WORKERS {
                go_ahead.send(round);
            }
            // The cycle starts once the pairs are built (before it: white); a sender that
            // missed its marking sends in the next, so cycles go on until all have sent.
            for _ in 0..WORKERS {
                built.recv().unwrap();
            }
            while sent.load(Ordering::SeqCst) < (round + 1) * WORKERS {
                g.collect();
                safepoint_sched::yield_now();
            }
        }
        go_ahead.close();
        for s in senders {
            s.join().unwrap();
        }
        ch.close();
        gch.close();
        for r in receivers {
            r.join().unwrap();
        }
        idle_park.close();
        for h in parked {
            h.join().unwrap();
        }
    });
}
