//! Memory outside the heap that managed objects keep alive, reported to the pacer.
//!
//! A managed object often owns memory the collector does not allocate: a channel's Rust side,
//! a file's buffer, a foreign library's handle, freed by a cleanup once the object dies. The
//! pacer sees only the heap, so without help a program that makes many such objects grows
//! its external memory by a heap goal's worth of objects between cycles (a 16-byte record
//! owning 300 bytes lets about 20 times the goal build up). [`External`] is the embedder's
//! report of those bytes: [`add`](External::add) when the object takes them,
//! [`sub`](External::sub) when its cleanup gives them back. Reported bytes count toward the
//! next cycle's trigger as allocation does (see the crate's essay, "Pacing"), so such a
//! program collects about as often as if the buffers were on the heap.
//!
//! The goal itself stays the heap's alone: external bytes still held when a marking ends are
//! not counted as live. Their objects may be dead already, waiting for the sweep that queues
//! their cleanups, and the marking cannot tell; counted, they make the goal creep up cycle
//! after cycle with the garbage (tried: ten million Pebble channels then peaked at 2.5 times
//! the resident memory of a million). The cost of leaving them out is more cycles for a program that holds
//! much external memory while it churns: with a small heap those cycles are cheap, since
//! marking's work is the heap's.
//!
//! The counts are two monotonic totals (added and given back), each updated with one atomic
//! add, so a report costs no lock and an [`External`] handle holds no reference to the heap:
//! a cleanup may keep one without keeping the heap alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared counts behind every [`External`] handle of one collector.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Bytes ever reported added.
    added: AtomicU64,
    /// Bytes ever reported given back; never more than `added`.
    subbed: AtomicU64,
}

impl Counts {
    /// Bytes ever reported (the pacer's allocation total counts them).
    pub(crate) fn added(&self) -> u64 {
        // Relaxed: a statistics total, read as a hint by the trigger check.
        self.added.load(Ordering::Relaxed)
    }

    /// Bytes reported and not given back.
    pub(crate) fn live(&self) -> u64 {
        // `subbed` first (Acquire, pairing with `sub`'s Release): every byte given back was
        // added before, so reading `added` after it never gives less than `subbed`.
        let subbed = self.subbed.load(Ordering::Acquire);
        self.added.load(Ordering::Relaxed).saturating_sub(subbed)
    }
}

/// A handle for reporting memory outside the heap that managed objects own, so that the
/// pacer counts it (see the module documentation). From [`Gc::external`](crate::Gc::external);
/// cheap to clone, `Send + Sync`, and it does not keep the heap alive.
///
/// ```
/// use safepoint_gc::Gc;
/// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
/// let gc = Gc::new(&rt).unwrap();
/// let ext = gc.external();
/// ext.add(4096); // a buffer an object now owns
/// assert_eq!(gc.external().bytes(), 4096);
/// ext.sub(4096); // the object's cleanup freed it
/// assert_eq!(ext.bytes(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct External {
    counts: Arc<Counts>,
}

impl External {
    pub(crate) fn new(counts: Arc<Counts>) -> External {
        External { counts }
    }

    /// Reports `bytes` more of external memory held by managed objects. A cycle starts if
    /// this brings the heap and external memory past the trigger; it is the next allocation
    /// or safepoint of a goroutine that starts it, so this may be called anywhere (a host
    /// thread, a cleanup, inside a pinned section).
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// gc.external().add(1 << 20);
    /// assert_eq!(gc.external().bytes(), 1 << 20);
    /// ```
    pub fn add(&self, bytes: usize) {
        // Relaxed: a total; `live` orders it against `sub`.
        self.counts.added.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Reports `bytes` of external memory given back (by an object's cleanup, or its owner).
    ///
    /// # Panics
    /// With a description, and counting nothing, if that would give back more than is
    /// reported held: a report that does not pair with an [`add`](External::add) is the
    /// embedder's bug, which would make the pacer under-count from then on.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let ext = gc.external();
    /// ext.add(100);
    /// ext.sub(60);
    /// assert_eq!(ext.bytes(), 40);
    /// let too_much = std::panic::catch_unwind(|| ext.sub(41));
    /// assert!(too_much.is_err());
    /// assert_eq!(ext.bytes(), 40); // unchanged
    /// ```
    pub fn sub(&self, bytes: usize) {
        let c = &self.counts;
        // Release, pairing with `live`'s Acquire; the check reads `added` after `subbed`, and
        // `added` only grows, so a concurrent `add` can only make a refusal too cautious by
        // the bytes it adds, never let `subbed` pass `added`.
        let r = c.subbed.fetch_update(Ordering::Release, Ordering::Relaxed, |s| {
            let next = s.checked_add(bytes as u64)?;
            (next <= c.added.load(Ordering::Relaxed)).then_some(next)
        });
        if let Err(s) = r {
            panic!(
                "External::sub: {bytes} bytes given back, but only {} are reported held",
                c.added.load(Ordering::Relaxed).saturating_sub(s)
            );
        }
    }

    /// External memory reported held now: bytes added and not given back.
    ///
    /// ```
    /// use safepoint_gc::Gc;
    /// # let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// assert_eq!(gc.external().bytes(), 0);
    /// ```
    pub fn bytes(&self) -> usize {
        self.counts.live() as usize
    }
}
