//! Channels: hand-off, buffering, close from every side, races that could lose a wake-up, and
//! use from threads outside the runtime.

use safepoint_sched::{Chan, RecvError, Runtime, TryRecvError, TrySendError, WaitGroup, go};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Unbuffered: every value arrives once, in order, through direct hand-offs (nothing is ever
/// buffered), whichever side parks first.
#[test]
fn unbuffered_rendezvous_in_order() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<u64>::new(0);
        let c2 = c.clone();
        let h = go(move || {
            for i in 0..20_000 {
                c2.send(i);
            }
            c2.close();
        });
        let mut next = 0;
        for v in c.iter() {
            assert_eq!(v, next);
            assert_eq!(c.len(), 0, "an unbuffered channel buffered a value");
            next += 1;
        }
        assert_eq!(next, 20_000);
        h.join().unwrap();
    });
}

/// Buffered: FIFO order, len/cap, try operations at the edges, and a sender parked on a full
/// buffer keeps its place in line.
#[test]
fn buffered_fifo_and_try_ops() {
    let rt = rt(1);
    rt.block_on(|| {
        let c = Chan::<u32>::new(3);
        assert_eq!((c.len(), c.cap(), c.is_empty()), (0, 3, true));
        assert_eq!(c.try_recv(), Err(TryRecvError::Empty));
        for i in 0..3 {
            c.try_send(i).unwrap();
        }
        assert_eq!(c.try_send(9), Err(TrySendError::Full(9)));
        assert_eq!(c.len(), 3);
        // A sender parks on the full buffer...
        let c2 = c.clone();
        let h = go(move || c2.send(3));
        while c.waiting() != (1, 0) {
            safepoint_sched::yield_now();
        }
        // ...and its value comes after the buffered ones.
        for i in 0..4 {
            assert_eq!(c.recv(), Ok(i));
        }
        h.join().unwrap();
        assert_eq!(c.waiting(), (0, 0));
    });
}

/// Close: buffered values still drain, then receivers see "closed" for ever; a send or a
/// second close is a described panic of that goroutine; try_send reports Closed.
#[test]
fn close_semantics() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<u32>::new(2);
        c.send(1);
        c.send(2);
        c.close();
        assert!(c.is_closed());
        assert_eq!(c.recv(), Ok(1));
        assert_eq!(c.try_recv(), Ok(2));
        assert_eq!(c.recv(), Err(RecvError));
        assert_eq!(c.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(c.try_send(5), Err(TrySendError::Closed(5)));
        let c2 = c.clone();
        let e = go(move || c2.send(3)).join().unwrap_err();
        assert_eq!(e.message(), Some("send on closed channel"));
        let c3 = c.clone();
        let e = go(move || c3.close()).join().unwrap_err();
        assert_eq!(e.message(), Some("close of closed channel"));
    });
}

/// Close while goroutines are blocked on both ends: receivers parked on one channel get
/// "closed"; senders parked on a full channel panic with "send on closed channel" — each
/// exactly once, none left parked.
#[test]
fn close_wakes_blocked_senders_and_receivers() {
    let rt = rt(2);
    rt.block_on(|| {
        let empty = Chan::<u32>::new(0);
        let full = Chan::<u32>::new(1);
        full.send(0);
        let mut rs = Vec::new();
        let mut ss = Vec::new();
        for i in 0..20 {
            let e = empty.clone();
            rs.push(go(move || e.recv()));
            let f = full.clone();
            ss.push(go(move || f.send(i)));
        }
        while empty.waiting() != (0, 20) || full.waiting() != (20, 0) {
            safepoint_sched::yield_now();
        }
        empty.close();
        full.close();
        for r in rs {
            assert_eq!(r.join().unwrap(), Err(RecvError));
        }
        for s in ss {
            let e = s.join().unwrap_err();
            assert_eq!(e.message(), Some("send on closed channel"));
        }
        assert_eq!((empty.waiting(), full.waiting()), ((0, 0), (0, 0)));
        // The value buffered before the close is still there.
        assert_eq!(full.recv(), Ok(0));
        assert_eq!(full.recv(), Err(RecvError));
    });
}

/// No lost wake-up: many senders and receivers on many channels of each kind (unbuffered,
/// small and larger buffers), every value received exactly once (counts and sums conserved).
#[test]
fn many_senders_receivers_counts_conserved() {
    let rt = rt(4);
    let (sent, got) = rt.block_on(|| {
        const CHANS: usize = 6;
        const PER_SENDER: u64 = 3_000;
        const SENDERS_PER_CHAN: usize = 4;
        const RECEIVERS_PER_CHAN: usize = 3;
        let sent = Arc::new(AtomicU64::new(0));
        let got = Arc::new(AtomicU64::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let mut receivers = Vec::new();
        let mut chans = Vec::new();
        for k in 0..CHANS {
            let c = Chan::<u64>::new([0, 1, 16][k % 3]);
            chans.push(c.clone());
            for _ in 0..RECEIVERS_PER_CHAN {
                let (c, got, count) = (c.clone(), got.clone(), count.clone());
                receivers.push(go(move || {
                    while let Ok(v) = c.recv() {
                        got.fetch_add(v, Ordering::Relaxed);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        let wg = Arc::new(WaitGroup::new());
        for (k, c) in chans.iter().enumerate() {
            for s in 0..SENDERS_PER_CHAN {
                wg.add(1);
                let (c, sent, wg) = (c.clone(), sent.clone(), wg.clone());
                go(move || {
                    for i in 0..PER_SENDER {
                        let v = (k as u64) << 40 | (s as u64) << 20 | i;
                        sent.fetch_add(v, Ordering::Relaxed);
                        if i % 3 == 0 {
                            // Mix in the non-blocking path.
                            let mut v = v;
                            loop {
                                match c.try_send(v) {
                                    Ok(()) => break,
                                    Err(e) => {
                                        v = e.into_inner();
                                        safepoint_sched::yield_now();
                                    }
                                }
                            }
                        } else {
                            c.send(v);
                        }
                    }
                    wg.done();
                });
            }
        }
        wg.wait();
        for c in &chans {
            c.close();
        }
        for r in receivers {
            r.join().unwrap();
        }
        assert_eq!(
            count.load(Ordering::Relaxed),
            CHANS * SENDERS_PER_CHAN * PER_SENDER as usize,
            "values lost or duplicated"
        );
        (sent.load(Ordering::Relaxed), got.load(Ordering::Relaxed))
    });
    assert_eq!(sent, got);
}

/// Threads outside the runtime use channels too: they sleep (not spin) while blocked and are
/// woken by goroutines, and wake goroutines.
#[test]
fn outside_threads_send_and_receive() {
    let rt = rt(2);
    let to_g = Chan::<u32>::new(0);
    let from_g = Chan::<u32>::new(0);
    let (a, b) = (to_g.clone(), from_g.clone());
    let h = rt
        .spawn(move || {
            for v in a.iter() {
                b.send(v * 2);
            }
            b.close();
        })
        .unwrap();
    for i in 0..2000 {
        to_g.send(i);
        assert_eq!(from_g.recv(), Ok(i * 2));
    }
    to_g.close();
    assert_eq!(from_g.recv(), Err(RecvError));
    h.join().unwrap();
}

/// A panic while sending to a closed channel unwinds only that goroutine: the channel and the
/// runtime carry on.
#[test]
fn send_on_closed_panics_only_that_goroutine() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<String>::new(0);
        c.close();
        let hs: Vec<_> = (0..10)
            .map(|i| {
                let c = c.clone();
                go(move || c.send(format!("v{i}")))
            })
            .collect();
        for h in hs {
            let e = h.join().unwrap_err();
            assert_eq!(panic_text(&*e.into_panic()), "send on closed channel");
        }
        assert_eq!(c.recv(), Err(RecvError));
    });
}

/// Blocking where a goroutine may not park (inside `no_preempt`) is a described panic that
/// leaves the channel intact: nothing was queued, the lock was released.
#[test]
fn blocking_inside_no_preempt_panics_cleanly() {
    let rt = rt(2);
    rt.block_on(|| {
        let c = Chan::<u32>::new(0);
        let c2 = c.clone();
        let e = go(move || {
            let _np = safepoint_sched::no_preempt();
            c2.recv()
        })
        .join()
        .unwrap_err();
        assert!(e.message().unwrap_or("").contains("no_preempt"), "{e}");
        assert_eq!(c.waiting(), (0, 0));
        // Still works.
        let c3 = c.clone();
        let h = go(move || c3.send(4));
        assert_eq!(c.recv(), Ok(4));
        h.join().unwrap();
    });
}

/// A channel that outlives its runtime while a goroutine was parked on it: the runtime's drop
/// unwound that goroutine, which unlinked itself from the channel first, so the channel is
/// left with no waiter (nothing of the dead goroutine's stack is reachable from it) and works
/// on from a thread.
#[test]
fn channel_outliving_its_runtime_is_left_without_the_dead_goroutine() {
    let c = Chan::<u32>::new(0);
    {
        let rt = rt(1);
        let c2 = c.clone();
        drop(rt.spawn(move || c2.recv()).unwrap());
        while c.waiting() != (0, 1) {
            std::thread::yield_now();
        }
    }
    assert_eq!(c.waiting(), (0, 0));
    assert!(matches!(c.try_send(1), Err(TrySendError::Full(1))));
    let (tx, rx) = std::sync::mpsc::channel();
    let c3 = c.clone();
    let t = std::thread::spawn(move || tx.send(c3.recv()).unwrap());
    c.send(2);
    assert_eq!(rx.recv().unwrap(), Ok(2));
    t.join().unwrap();
}
