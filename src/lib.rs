//! # safepoint
//!
//! A concurrent, non-moving mark-sweep garbage collector that scans goroutine stacks precisely,
//! on its own preemptible M:N goroutine scheduler, for interpreters to embed.
//!
//! This facade re-exports the parts:
//! * [`arch`]: context switch, goroutine stacks, notes, signals, clocks;
//! * [`stackmap`]: managed stacks and their precise maps;
//! * [`sched`]: goroutines, Ms and Ps, preemption, stop-the-world, the ragged barrier;
//! * [`gc`]: the managed heap, the `Mutator` embedding API and the concurrent collector.
//!
//! `docs/ARCHITECTURE.md` in the repository maps the parts, their protocols and their states
//! with diagrams; each crate's documentation opens with the essay on its own part.
//!
//! ```
//! use safepoint::sched::{Chan, Runtime, go};
//!
//! fn main() -> Result<(), safepoint::sched::Error> {
//!     let rt = Runtime::builder().procs(2).build()?;
//!     let sum = rt.block_on(|| {
//!         let ch = Chan::new(0);
//!         for i in 0..10u64 {
//!             let ch = ch.clone();
//!             go(move || ch.send(i));
//!         }
//!         (0..10).map(|_| ch.recv().unwrap()).sum::<u64>()
//!     });
//!     assert_eq!(sum, 45);
//!     Ok(())
//! }
//! ```
//!
//! The heap (the README's example):
//!
//! ```
//! use safepoint::gc::{Gc, Mutator, TypeDesc, WordKind};
//! use safepoint::sched::Runtime;
//!
//! let rt = Runtime::builder().procs(2).build().unwrap();
//! let gc = Gc::new(&rt).unwrap();
//! let pair = gc.types().register(TypeDesc::Record {
//!     name: "pair".into(),
//!     words: vec![WordKind::Ref, WordKind::Tagged],
//! }).unwrap();
//! let g = gc.clone();
//! rt.block_on(move || {
//!     let mut m = Mutator::new(&g).unwrap();
//!     m.scope(|m, [a, b]| {
//!         m.alloc(a, pair).unwrap();
//!         m.set_int(b, 7).unwrap();
//!         m.store(a, 1, b).unwrap();   // a.1 = 7 (through the write barrier)
//!         m.collect();                 // a is a root: it survives
//!         m.load(b, a, 1).unwrap();
//!         assert_eq!(m.int(b).unwrap(), 7);
//!     });
//! });
//! ```

pub use safepoint_arch as arch;
pub use safepoint_gc as gc;
pub use safepoint_sched as sched;
pub use safepoint_stackmap as stackmap;
