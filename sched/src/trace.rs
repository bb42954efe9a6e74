//! The execution trace: what each P ran and when, the collector's phases, the stops of the
//! world, stack scans and assists, written as Chrome trace-event JSON (which Perfetto and
//! `chrome://tracing` open) when the runtime is dropped.
//!
//! On with `SAFEPOINT_TRACE=FILE` or [`crate::Builder::trace`]. Off, it costs the scheduler a
//! load and a predictable branch per goroutine switch.
//!
//! ## Tracks and events
//!
//! One process; a track (`tid`) per P (`P0`, `P1`, ...), on which each span is a goroutine
//! running there (`G12`, its id in `args`), with stack scans and assists nested inside the
//! span of the goroutine that did them; a track `GC` with the collector's phases (each phase
//! of each cycle a span, its cycle in `args`); and a track `stops` with each stop of the world
//! (from its request to its restart, its reason as the name).
//!
//! A goroutine's span on a P ends when it leaves the P: it yields, parks, exits, or enters a
//! blocking call (which hands the P on); it starts again on whatever P it gets next. So the
//! spans of one P track never overlap. A goroutine held in place by a stop (asynchronous
//! preemption) stays in its span: the `stops` track shows the stop.
//!
//! ## Buffers
//!
//! Each P appends to its own buffer, written only by the M that owns the P (as its run
//! queue is), with no lock. A full buffer (`CHUNK` events) is handed to the trace's list of
//! full chunks under a lock taken once per chunk. The collector's phases and the stops, a
//! few events per cycle, go to one buffer under a lock. Past `MAX_EVENTS` events the trace
//! stops recording and says so in the file (`dropped` in its metadata). The file is written
//! once, when the runtime is dropped and its threads have exited.

use std::cell::UnsafeCell;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use safepoint_arch::nanotime;

/// Events per P buffer before it is handed to the trace.
const CHUNK: usize = 1 << 14;
/// Events recorded at most (about 40 bytes each).
const MAX_EVENTS: u64 = 1 << 24;

/// The shared tracks (besides one per P).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Track {
    /// The collector's phases.
    Gc,
    /// Stops of the world.
    Stops,
}

impl Track {
    fn tid(self) -> u32 {
        match self {
            Track::Gc => 10_000,
            Track::Stops => 10_001,
        }
    }
}

/// One complete span: `name` on track `tid` from `ts` for `dur` nanoseconds (since the
/// trace started); `arg` is a goroutine id (P tracks) or a cycle number (GC track).
#[derive(Clone, Copy)]
struct Event {
    name: &'static str,
    tid: u32,
    ts: u64,
    dur: u64,
    arg: u64,
}

/// A P's part of the trace. Owner: the M that owns the P.
#[derive(Default)]
pub(crate) struct PTrace {
    /// The goroutine running on the P and since when, if the trace is on.
    open: Option<(u64, u64)>,
    buf: Vec<Event>,
}

/// A P's trace state, in an `UnsafeCell` because only the M owning the P touches it.
#[derive(Default)]
pub(crate) struct PTraceCell(UnsafeCell<PTrace>);

// SAFETY: only the M that owns the P reaches the cell (see `PTraceCell::get`), and ownership of
// a P moves between Ms with the orderings of its status transitions, as for its run queue.
unsafe impl Sync for PTraceCell {}

impl PTraceCell {
    /// # Safety
    /// The caller is the M that owns the P this belongs to (or the runtime's shutdown, after
    /// every M has exited), and holds no other reference from `get`.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get(&self) -> &mut PTrace {
        // SAFETY: the caller's contract.
        unsafe { &mut *self.0.get() }
    }
}

/// A runtime's trace.
pub(crate) struct Trace {
    path: PathBuf,
    /// `nanotime` when the trace started: event times are from here.
    start: u64,
    full: Mutex<Vec<Vec<Event>>>,
    shared: Mutex<Vec<Event>>,
    /// Events recorded, and those left out past `MAX_EVENTS`. Relaxed: counters.
    recorded: AtomicU64,
    dropped: AtomicU64,
    /// Set when the events were taken for the file (at the runtime's drop, or by
    /// `Runtime::stop_trace`): nothing more is recorded. Relaxed: it is set with every P
    /// stopped or every M gone, which orders it before any later recording.
    done: AtomicBool,
}

/// The events taken for the file.
pub(crate) struct Taken {
    procs: usize,
    events: Vec<Vec<Event>>,
}

impl Trace {
    pub(crate) fn new(path: PathBuf) -> Trace {
        Trace {
            path,
            start: nanotime(),
            full: Mutex::new(Vec::new()),
            shared: Mutex::new(Vec::new()),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    fn admit(&self) -> bool {
        // Relaxed: see `done`.
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        // Relaxed: counters; the bound is approximate by design.
        if self.recorded.fetch_add(1, Ordering::Relaxed) < MAX_EVENTS {
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn ev(&self, name: &'static str, tid: u32, from: u64, to: u64, arg: u64) -> Event {
        let ts = from.saturating_sub(self.start);
        Event { name, tid, ts, dur: to.saturating_sub(from), arg }
    }

    /// Appends to a P's buffer (its owner calls), handing a full buffer on.
    fn push(&self, pt: &mut PTrace, e: Event) {
        if !self.admit() {
            return;
        }
        if pt.buf.capacity() == 0 {
            pt.buf.reserve_exact(CHUNK);
        }
        pt.buf.push(e);
        if pt.buf.len() == CHUNK {
            let chunk = std::mem::replace(&mut pt.buf, Vec::with_capacity(CHUNK));
            self.full.lock().unwrap_or_else(|e| e.into_inner()).push(chunk);
        }
    }

    /// Goroutine `goid` starts running on P `p` (owner: the M taking the P).
    pub(crate) fn run_begin(&self, pt: &mut PTrace, p: usize, goid: u64) {
        if let Some((g, since)) = pt.open.take() {
            // A span left open (a path that did not close it): close it here, so that spans
            // on the P never overlap.
            self.run_end_at(pt, p, g, since, nanotime());
        }
        pt.open = Some((goid, nanotime()));
    }

    /// The goroutine running on P `p` leaves it (owner: the M leaving the P).
    pub(crate) fn run_end(&self, pt: &mut PTrace, p: usize) {
        if let Some((g, since)) = pt.open.take() {
            self.run_end_at(pt, p, g, since, nanotime());
        }
    }

    fn run_end_at(&self, pt: &mut PTrace, p: usize, goid: u64, since: u64, now: u64) {
        let e = self.ev("run", p as u32, since, now, goid);
        self.push(pt, e);
    }

    /// A span inside the running goroutine's span on its P (a stack scan, an assist), from
    /// `from` to now; its start is clamped to that span's (the goroutine may have started it
    /// on another P).
    pub(crate) fn nested(
        &self,
        pt: &mut PTrace,
        p: usize,
        name: &'static str,
        from: u64,
        arg: u64,
    ) {
        let Some((_, since)) = pt.open else { return };
        let e = self.ev(name, p as u32, from.max(since), nanotime(), arg);
        self.push(pt, e);
    }

    /// A span on a shared track.
    pub(crate) fn shared(&self, track: Track, name: &'static str, from: u64, to: u64, arg: u64) {
        if !self.admit() {
            return;
        }
        let e = self.ev(name, track.tid(), from, to, arg);
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }

    /// Takes every event for the file and stops recording: every P's buffer (`ps`: the caller
    /// makes sure no M writes them, every P being stopped or every M gone), the full chunks
    /// and the shared tracks. `None` if they were taken already.
    pub(crate) fn take(&self, ps: &mut [&mut PTrace]) -> Option<Taken> {
        // Relaxed: see `done`.
        if self.done.swap(true, Ordering::Relaxed) {
            return None;
        }
        let end = nanotime();
        let mut events = std::mem::take(&mut *self.full.lock().unwrap_or_else(|e| e.into_inner()));
        for (p, pt) in ps.iter_mut().enumerate() {
            if let Some((g, since)) = pt.open.take() {
                // Straight into the buffer: recording is over.
                pt.buf.push(self.ev("run", p as u32, since, end, g));
            }
            events.push(std::mem::take(&mut pt.buf));
        }
        events.push(std::mem::take(&mut *self.shared.lock().unwrap_or_else(|e| e.into_inner())));
        Some(Taken { procs: ps.len(), events })
    }

    /// Writes `taken` to the trace's file. Reports a failure through the message sink.
    pub(crate) fn write(&self, taken: Taken) {
        let r = std::fs::File::create(&self.path).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            writeln!(w, "{{\"traceEvents\":[")?;
            writeln!(
                w,
                "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{{\"name\":\"safepoint\"}}}}"
            )?;
            for i in 0..taken.procs {
                writeln!(
                    w,
                    ",{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{i},\"args\":{{\"name\":\"P{i}\"}}}}"
                )?;
            }
            for (t, name) in [(Track::Gc, "GC"), (Track::Stops, "stops")] {
                writeln!(
                    w,
                    ",{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{},\"args\":{{\"name\":\"{name}\"}}}}",
                    t.tid()
                )?;
            }
            for e in taken.events.iter().flatten() {
                write_event(&mut w, e)?;
            }
            writeln!(
                w,
                "],\"displayTimeUnit\":\"ns\",\"otherData\":{{\"dropped\":{}}}}}",
                // Relaxed: a counter; recording is over.
                self.dropped.load(Ordering::Relaxed)
            )?;
            w.flush()
        });
        if let Err(e) = r {
            crate::message(format_args!(
                "safepoint: could not write the trace to {}: {e}",
                self.path.display()
            ));
        }
    }
}

/// One event as a JSON object (times in microseconds with nanosecond digits).
fn write_event(w: &mut impl Write, e: &Event) -> std::io::Result<()> {
    let us = |ns: u64| format!("{}.{:03}", ns / 1000, ns % 1000);
    let (cat, argname, name) = match (e.tid, e.name) {
        (t, n) if t == Track::Gc.tid() => ("gc", "cycle", n),
        (t, n) if t == Track::Stops.tid() => ("stop", "cycle", n),
        (_, "run") => ("run", "goroutine", "G"),
        (_, n) => ("gc", "goroutine", n),
    };
    // Names are the runtime's own constants (no character needs escaping).
    debug_assert!(!name.contains(['"', '\\']));
    let shown = if name == "G" { format!("G{}", e.arg) } else { name.to_string() };
    writeln!(
        w,
        ",{{\"name\":\"{shown}\",\"cat\":\"{cat}\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{},\"dur\":{},\"args\":{{\"{argname}\":{}}}}}",
        e.tid,
        us(e.ts),
        us(e.dur),
        e.arg
    )
}
