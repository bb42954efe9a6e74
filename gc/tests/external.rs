//! Memory outside the heap reported through `Gc::external`: it drives collection as
//! allocation does, in both collector modes, and bad reports are described panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use safepoint_gc::metrics::{self, Sample, Value};
use safepoint_gc::{External, Gc, Mutator, TypeDesc, WordKind};
use safepoint_sched::Runtime;

/// Bytes each object of the churn says it owns outside the heap (as a 16-byte record owning a
/// buffer would).
const OWNED: usize = 1 << 10;

/// Objects the churn makes: 300 MiB of external memory reported in all, none of it allocated.
const OBJECTS: usize = 300_000;

/// Makes `OBJECTS` small records, one at a time, each dropped at once; each reports `OWNED`
/// bytes and gives them back in its cleanup. Returns the most external memory seen held and
/// the cycles run.
fn churn(gc: &Gc, rt: &Runtime, report: bool) -> (usize, u64) {
    let ty = gc
        .types()
        .register(TypeDesc::Record { name: "owner".into(), words: vec![WordKind::Raw] })
        .unwrap();
    // What the cleanups have not given back yet, counted here too when nothing is reported
    // (then it is what would have been held).
    let held = Arc::new(AtomicU64::new(0));
    let (g, h) = (gc.clone(), held.clone());
    let before = gc.cycles();
    let peak = rt.block_on(move || {
        let ext: External = g.external();
        let mut m = Mutator::new(&g).unwrap();
        let mut peak = 0usize;
        m.scope(|m, [o]| {
            for _ in 0..OBJECTS {
                m.alloc(o, ty).unwrap();
                if report {
                    ext.add(OWNED);
                }
                h.fetch_add(OWNED as u64, Ordering::Relaxed);
                let (e, hc) = (ext.clone(), h.clone());
                m.add_cleanup(o, move || {
                    if report {
                        e.sub(OWNED);
                    }
                    hc.fetch_sub(OWNED as u64, Ordering::Relaxed);
                })
                .unwrap();
                m.clear(o).unwrap();
                peak = peak.max(h.load(Ordering::Relaxed) as usize);
            }
        });
        peak
    });
    (peak, gc.cycles() - before)
}

/// Reported external memory starts cycles as allocation does, so a churn of small objects
/// that own buffers keeps what it holds within a few heap goals; unreported, the same churn
/// runs no cycle for its first 4 MiB of records (262,144 objects of 16 bytes, 256 MiB owned).
#[test]
fn reported_external_memory_drives_collection_in_both_modes() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    for stw in [false, true] {
        let mode = if stw { "stop-the-world" } else { "concurrent" };
        let gc = Gc::builder().stop_the_world(stw).build(&rt).unwrap();
        let (peak, cycles) = churn(&gc, &rt, true);
        // The trigger comes within the 4 MiB floor's room; cleanups trail their cycle's sweep
        // by a little, so allow several goals' worth (the unreported churn holds 256 MiB).
        assert!(
            peak <= 48 << 20,
            "{mode}: {} MiB of external memory held at once over {cycles} cycles",
            peak >> 20
        );
        assert!(
            cycles >= 20,
            "{mode}: only {cycles} cycles for {} MiB reported",
            (OBJECTS * OWNED) >> 20
        );
        // The cleanup goroutine may still be giving bytes back: the metric is read between
        // two reads of the count, which only falls now.
        let mut s = [Sample::new("/gc/heap/external:bytes")];
        let before = gc.external().bytes() as u64;
        metrics::read(&gc, &mut s);
        let after = gc.external().bytes() as u64;
        assert!(
            matches!(s[0].value, Value::U64(b) if (after..=before).contains(&b)),
            "{mode}: the metric reads the reported bytes ({:?}, not in {after}..={before})",
            s[0].value
        );
    }
    // The same churn unreported: the heap alone paces it, and much more builds up.
    let gc = Gc::new(&rt).unwrap();
    let (peak, _) = churn(&gc, &rt, false);
    assert!(peak > 200 << 20, "unreported, {} MiB held at most", peak >> 20);
}

/// A report that gives back more than is held is the embedder's bug: a described panic of the
/// caller, which changes nothing; the counts stay exact under concurrent reports.
#[test]
fn a_report_giving_back_more_than_is_held_panics_and_changes_nothing() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::new(&rt).unwrap();
    let ext = gc.external();
    ext.add(10);
    let e = ext.clone();
    let msg = std::panic::catch_unwind(move || e.sub(11)).unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("11 bytes given back, but only 10"), "{msg}");
    assert_eq!(ext.bytes(), 10);
    // Goroutines adding and giving back at once.
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let e = ext.clone();
            rt.spawn(move || {
                for i in 0..10_000 {
                    e.add(i);
                    e.sub(i);
                }
            })
            .unwrap()
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(ext.bytes(), 10);
    // A handle outlives its heap without keeping it (it holds only the counts).
    drop(gc);
    ext.sub(10);
    assert_eq!(ext.bytes(), 0);
}
