//! An embedding through the checked `Mutator` API: types registered, objects built in slots,
//! a global shared by goroutines, values passed over a managed channel, collections forced
//! and paced. Every bad input would be a `GcError`, never undefined behaviour. Runs in well
//! under a second.
//!
//!     cargo run -p safepoint-gc --example checked

use safepoint_gc::{Gc, Global, Mutator, RefChan, TypeDesc, WordKind};
use safepoint_sched::{Runtime, go};

/// Cons cells sent from each producer.
const CELLS: i64 = 20_000;
const PRODUCERS: i64 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().procs(2).build()?;
    let gc = Gc::new(&rt)?;
    // A record per type: a kind for each word. The collector follows `Ref` words, reads
    // `Tagged` words by the tag rule (a reference or an immediate integer), skips `Raw`.
    let cons = gc.types().register(TypeDesc::Record {
        name: "cons".into(),
        words: vec![WordKind::Tagged, WordKind::Ref],
    })?;
    let table = gc.types().register(TypeDesc::TaggedArray { name: "table".into() })?;

    let g = gc.clone();
    let total = rt.block_on(move || -> Result<i64, safepoint_gc::GcError> {
        let mut m = Mutator::new(&g)?;
        // A global: a root that any goroutine holding the handle can read and write.
        let results: Global = m.scope(|m, [t]| {
            m.alloc_array(t, table, PRODUCERS as usize)?;
            m.new_global(t)
        })?;
        let ch = RefChan::new(&g, 16);
        for p in 0..PRODUCERS {
            let (g, ch) = (g.clone(), ch.clone());
            go(move || {
                let mut m = Mutator::new(&g).unwrap();
                // Slots live in a handle frame on this goroutine's managed stack: the
                // collector sees them, wherever the goroutine is stopped.
                m.scope(|m, [list, cell, v]| {
                    for i in 1..=CELLS {
                        m.alloc(cell, cons).unwrap();
                        m.set_int(v, i * (p + 1)).unwrap();
                        m.store(cell, 0, v).unwrap(); // cell.head = i * (p + 1)
                        m.store(cell, 1, list).unwrap(); // cell.tail = list
                        m.copy(list, cell).unwrap(); // list = cell
                    }
                    m.send(&ch, list).unwrap(); // the whole list, to the consumer
                });
            });
        }
        // The consumer: sums each list it receives and records it in the global table.
        m.scope(|m, [list, v, t, n]| {
            for p in 0..PRODUCERS as usize {
                assert!(m.recv(&ch, list)?);
                let mut sum = 0;
                while !m.is_null(list)? {
                    m.load(v, list, 0)?;
                    sum += m.int(v)?;
                    m.load(list, list, 1)?;
                }
                m.set_int(n, sum)?;
                m.load_global(t, &results)?;
                m.store(t, p, n)?;
            }
            m.collect(); // a full cycle: the table survives through its global
            m.load_global(t, &results)?;
            let mut total = 0;
            for p in 0..PRODUCERS as usize {
                m.load(v, t, p)?;
                total += m.int(v)?;
            }
            // A bad input is an error, not a crash: index past the end of the table.
            let e = m.load(v, t, PRODUCERS as usize).unwrap_err();
            println!("an index out of range is an error: {e}");
            Ok(total)
        })
    })?;
    let want = CELLS * (CELLS + 1) / 2 * (1..=PRODUCERS).sum::<i64>();
    println!("sum of every list: {total} (expected {want})");
    assert_eq!(total, want);
    let s = gc.stats();
    println!(
        "collector: {} cycles, {} KiB live after the last, longest pause {:?}",
        s.cycles,
        s.live_bytes / 1024,
        s.pauses.iter().max().copied().unwrap_or_default()
    );
    Ok(())
}
