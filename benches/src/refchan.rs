//! `refchan N`: what a reference in flight costs on a managed channel. N round trips of a
//! reference between two goroutines over two unbuffered [`RefChan`]s, and N round trips of
//! an integer over the same channels, in alternate blocks of `BLOCK` round trips, on the
//! default number of Ps (medians of many short blocks: other processes' bursts on a busy
//! machine fall in a few of them). A reference in flight must stay a root of the collector until it is
//! received; an integer needs nothing. Reports the median block's time per round trip of
//! each and their ratio (`ratio` = references over integers). No Go twin: a Go channel of
//! pointers costs what a channel of integers does.

use std::time::Instant;

use safepoint::gc::{Gc, Mutator, RefChan, TypeDesc, WordKind};
use safepoint::sched::{Runtime, go};

use crate::report::{arg_num, emit, percentile};

/// Round trips per block.
const BLOCK: u64 = 2_000;

/// Runs `refchan N`.
pub fn run(args: &[String]) {
    let n = arg_num(args, 0, 200_000).max(BLOCK);
    let rt = Runtime::new().expect("runtime");
    let gc = Gc::new(&rt).expect("heap");
    let pair = gc
        .types()
        .register(TypeDesc::Record {
            name: "pair".into(),
            words: vec![WordKind::Ref, WordKind::Tagged],
        })
        .expect("type");
    let (blocks, per) = (n / BLOCK, BLOCK);
    let (mut refs, mut ints) = rt.block_on(move || {
        let ping = RefChan::new(&gc, 0);
        let pong = RefChan::new(&gc, 0);
        let (g2, p2, q2) = (gc.clone(), ping.clone(), pong.clone());
        // The echo: sends back whatever it receives, until ping is closed.
        let echo = go(move || {
            let mut m = Mutator::new(&g2).expect("mutator");
            m.scope(|m, [v]| {
                while m.recv(&p2, v).expect("recv") {
                    m.send(&q2, v).expect("send");
                }
            });
        });
        let mut m = Mutator::new(&gc).expect("mutator");
        let (mut refs, mut ints) = (Vec::new(), Vec::new());
        m.scope(|m, [obj, v]| {
            m.alloc(obj, pair).expect("alloc");
            for _ in 0..blocks {
                let t = Instant::now();
                for _ in 0..per {
                    m.send(&ping, obj).expect("send");
                    m.recv(&pong, v).expect("recv");
                }
                refs.push(t.elapsed().as_nanos() as f64 / per as f64);
                assert!(m.same(obj, v).expect("slots"), "refchan: a different reference came back");
                let t = Instant::now();
                for i in 0..per {
                    m.set_int(v, i as i64).expect("set_int");
                    m.send(&ping, v).expect("send");
                    m.recv(&pong, v).expect("recv");
                }
                ints.push(t.elapsed().as_nanos() as f64 / per as f64);
                assert_eq!(m.int(v).expect("an integer"), per as i64 - 1, "refchan: wrong integer");
            }
        });
        ping.close();
        echo.join().expect("echo");
        (refs, ints)
    });
    let r = percentile(&mut refs, 50.0);
    let i = percentile(&mut ints, 50.0);
    emit(
        "refchan",
        &n.to_string(),
        &[("ref_ns_per_rt", r.into()), ("int_ns_per_rt", i.into()), ("ratio", (r / i).into())],
    );
}
