//! Channel and select sequences: a few channels (unbuffered or buffered), a few goroutines each
//! running a script of send, receive, try_send, try_recv, close and select (with or without a
//! default), decoded by hand from the input bytes, on one runtime shared by the whole run.
//!
//! What must hold, however the goroutines interleave:
//!
//! * **No loss, no duplication.** Every value is unique (goroutine and sequence number). A value
//!   whose send completed (`send` returned, `try_send` was `Ok`, a select's send case ran) is
//!   received exactly once, by a goroutine or by the final drain, on the channel it was sent
//!   on; a value whose send did not complete (refused, panicked, a select case not chosen) is
//!   never received.
//! * **FIFO per channel.** Two values one goroutine sent on one channel reach any one receiver
//!   in the order they were sent.
//! * **Close.** A receive that reports "closed", a send that panics with `send on closed
//!   channel` and a second `close` that panics all come after a close began; a send or
//!   `try_send` begun after a close returned fails; a receiver that saw "closed" never gets a
//!   value from that channel again; nothing is buffered past the capacity.
//! * **No hang.** Blocking operations may deadlock the script (a receive nobody sends to). The
//!   runtime's deadlock detection then makes the join panic with its report, and the state
//!   must prove the deadlock real: every unfinished goroutine is parked on a channel, and no
//!   channel has a parked receiver with values buffered, a parked sender with buffer room, a
//!   parked sender and receiver together, or a parked goroutine while closed. The harness
//!   then closes every channel (which must release everyone) and the scripts run to the end.
//! * **Exact results with one goroutine.** With a single goroutine the outcome is determined:
//!   a sequential model of the channels predicts every result (which values, full, empty,
//!   closed, which select cases were ready, when the default runs); operations it predicts
//!   would block forever are skipped.
//!
//! The expected panics (`send on closed channel`, `close of closed channel`, the deadlock
//! report) are caught; a panic hook keeps them from reaching libFuzzer's, which aborts on any
//! panic. Under AddressSanitizer (cargo-fuzz's default) a panic caught on a goroutine stack
//! leaves the unwound frames' redzones poisoned: ASan cannot unpoison a stack it does not know
//! (the runtime's stack switches carry no fiber annotations), so [`forget_dead_frames`] does.

#![no_main]
#![feature(cfg_sanitize)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use safepoint_sched::{
    Chan, DEADLOCK, RecvError, Runtime, Select, TryRecvError, TrySendError, yield_now,
};

/// Most operations decoded from one input.
const MAX_OPS: usize = 96;
/// How long the scripts may take after every channel was closed before the run counts as hung.
const HANG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaseKind {
    Recv,
    Send,
}

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Recv(usize),
    TrySend(usize),
    TryRecv(usize),
    Close(usize),
    /// Cases (at most one per channel, so a select never meets itself), and a default.
    Select(Vec<(usize, CaseKind)>, bool),
    Yield,
}

#[derive(Debug)]
struct Program {
    caps: Vec<usize>,
    scripts: Vec<Vec<Op>>,
}

fn decode(data: &[u8]) -> Program {
    let mut it = data.iter().copied();
    let mut next = || it.next();
    let nchan = 1 + next().unwrap_or(0) as usize % 3;
    let caps: Vec<usize> = (0..nchan).map(|_| next().unwrap_or(0) as usize % 4).collect();
    let nworkers = 1 + next().unwrap_or(0) as usize % 3;
    let mut scripts = vec![Vec::new(); nworkers];
    let mut n = 0;
    while n < MAX_OPS {
        let (Some(a), Some(b)) = (next(), next()) else { break };
        let worker = a as usize % nworkers;
        let c = b as usize % nchan;
        let op = match (a as usize / nworkers) % 8 {
            0 => Op::Send(c),
            1 => Op::Recv(c),
            2 => Op::TrySend(c),
            3 => Op::TryRecv(c),
            4 => Op::Close(c),
            5 | 6 => {
                // Two bits per channel: none, recv, send, none; the high bit: a default.
                let mut cases = Vec::new();
                for i in 0..nchan {
                    match (b >> (2 * i)) & 3 {
                        1 => cases.push((i, CaseKind::Recv)),
                        2 => cases.push((i, CaseKind::Send)),
                        _ => {}
                    }
                }
                let default = b & 0x80 != 0 || cases.is_empty();
                Op::Select(cases, default)
            }
            _ => Op::Yield,
        };
        scripts[worker].push(op);
        n += 1;
    }
    Program { caps, scripts }
}

/// What one goroutine saw, in order.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The send of `v` on the channel completed.
    Sent(usize, u64),
    /// `v` was offered and not sent (refused, panicked, or its select case not chosen).
    NotSent(usize, u64),
    /// `v` was received from the channel.
    Recv(usize, u64),
    /// A receive reported the channel closed.
    Closed(usize),
}

/// Shared by the goroutines of one input.
struct Shared {
    chans: Vec<Chan<u64>>,
    /// Closes begun (counted before `close` is called), per channel.
    close_started: Vec<AtomicUsize>,
    /// Closes that returned, per channel.
    close_done: Vec<AtomicUsize>,
    /// Every goroutine's events, filed when it finishes.
    logs: Mutex<Vec<(usize, Vec<Event>)>>,
    finished: AtomicUsize,
}

impl Shared {
    fn started(&self, c: usize) -> bool {
        self.close_started[c].load(Ordering::SeqCst) > 0
    }
    fn done(&self, c: usize) -> bool {
        self.close_done[c].load(Ordering::SeqCst) > 0
    }
    fn close(&self, c: usize) -> bool {
        self.close_started[c].fetch_add(1, Ordering::SeqCst);
        let ok = catch_unwind(AssertUnwindSafe(|| self.chans[c].close())).is_ok();
        if !ok {
            forget_dead_frames();
        }
        if ok {
            self.close_done[c].fetch_add(1, Ordering::SeqCst);
        } else {
            assert!(
                self.close_started[c].load(Ordering::SeqCst) >= 2,
                "close of chan {c} panicked but no other close began"
            );
        }
        ok
    }
}

/// The sequential model of one goroutine alone on the channels.
#[derive(Clone)]
struct ModelChan {
    cap: usize,
    buf: VecDeque<u64>,
    closed: bool,
}

impl ModelChan {
    fn can_send(&self) -> bool {
        self.closed || self.buf.len() < self.cap
    }
    fn can_recv(&self) -> bool {
        self.closed || !self.buf.is_empty()
    }
}

/// After a panic was caught on this goroutine's stack: clears ASan's poison from the frames
/// the unwinding removed, below the caller's frame. ASan's own `__asan_handle_no_return` does
/// this on a thread stack, and declines on a goroutine stack it does not know; without it the
/// stale redzones make false reports on whatever later lives there (another goroutine's queue
/// node, once the stack is reused).
#[inline(never)]
fn forget_dead_frames() {
    #[cfg(sanitize = "address")]
    {
        unsafe extern "C" {
            fn __asan_unpoison_memory_region(addr: *const u8, size: usize);
        }
        // Everything below this frame is dead (the unwound frames were right below the
        // caller's, where this one is now); the 64 KiB under it cover what a send, a close or
        // a select unwinds through, the panic machinery included (goroutine stacks are
        // 256 KiB, and the shadow of the guard page below one is mapped like any other).
        let here = 0u8;
        let top = core::hint::black_box(&here as *const u8 as usize);
        // SAFETY: this only rewrites ASan's shadow of addresses below the live frames of this
        // goroutine's stack, which nothing uses until a later call pushes a frame there.
        unsafe { __asan_unpoison_memory_region((top - (64 << 10)) as *const u8, 64 << 10) };
    }
}

fn value(worker: usize, seq: &mut u64) -> u64 {
    *seq += 1;
    ((worker as u64) << 32) | *seq
}

fn check_cap(s: &Shared, c: usize) {
    let ch = &s.chans[c];
    assert!(ch.len() <= ch.cap(), "chan {c} holds {} values, capacity {}", ch.len(), ch.cap());
}

/// One goroutine's script. `model` is given when it runs alone: every result is then checked
/// against it, and operations it says would block forever are skipped.
fn run_script(s: &Shared, me: usize, ops: &[Op], mut model: Option<Vec<ModelChan>>) {
    let mut log = Vec::new();
    let mut seq = 0u64;
    for op in ops {
        match *op {
            Op::Yield => yield_now(),
            Op::Send(c) => {
                if let Some(m) = &model
                    && !m[c].can_send()
                {
                    continue; // would block forever
                }
                let v = value(me, &mut seq);
                let after_close = s.done(c);
                let r = catch_unwind(AssertUnwindSafe(|| s.chans[c].send(v)));
                if r.is_err() {
                    forget_dead_frames();
                }
                match r {
                    Ok(()) => {
                        assert!(!after_close, "send on chan {c} succeeded after its close");
                        log.push(Event::Sent(c, v));
                    }
                    Err(_) => {
                        assert!(s.started(c), "send on chan {c} panicked with no close begun");
                        log.push(Event::NotSent(c, v));
                    }
                }
                if let Some(m) = &mut model {
                    let mc = &mut m[c];
                    assert_eq!(r.is_ok(), !mc.closed, "send on chan {c}: model disagrees");
                    if r.is_ok() {
                        mc.buf.push_back(v);
                    }
                }
            }
            Op::TrySend(c) => {
                let v = value(me, &mut seq);
                let after_close = s.done(c);
                let r = s.chans[c].try_send(v);
                let outcome = match r {
                    Ok(()) => {
                        assert!(!after_close, "try_send on chan {c} succeeded after its close");
                        log.push(Event::Sent(c, v));
                        0
                    }
                    Err(e) => {
                        let closed = matches!(e, TrySendError::Closed(_));
                        if closed {
                            assert!(s.started(c), "try_send on chan {c}: Closed, no close begun");
                        } else {
                            assert!(!after_close, "try_send on chan {c}: Full after its close");
                        }
                        assert_eq!(e.into_inner(), v, "try_send gave back another value");
                        log.push(Event::NotSent(c, v));
                        if closed { 2 } else { 1 }
                    }
                };
                if let Some(m) = &mut model {
                    let mc = &mut m[c];
                    let want = if mc.closed {
                        2
                    } else if mc.buf.len() < mc.cap {
                        mc.buf.push_back(v);
                        0
                    } else {
                        1
                    };
                    assert_eq!(outcome, want, "try_send on chan {c}: 0 sent, 1 full, 2 closed");
                }
            }
            Op::Recv(c) => {
                if let Some(m) = &model
                    && !m[c].can_recv()
                {
                    continue;
                }
                let r = s.chans[c].recv();
                match r {
                    Ok(v) => log.push(Event::Recv(c, v)),
                    Err(RecvError) => {
                        assert!(s.started(c), "recv on chan {c}: closed, no close begun");
                        log.push(Event::Closed(c));
                    }
                }
                if let Some(m) = &mut model {
                    let mc = &mut m[c];
                    assert_eq!(r.ok(), mc.buf.pop_front(), "recv on chan {c}: model disagrees");
                }
            }
            Op::TryRecv(c) => {
                let r = s.chans[c].try_recv();
                match r {
                    Ok(v) => log.push(Event::Recv(c, v)),
                    Err(TryRecvError::Closed) => {
                        assert!(s.started(c), "try_recv on chan {c}: Closed, no close begun");
                        log.push(Event::Closed(c));
                    }
                    Err(TryRecvError::Empty) => {}
                }
                if let Some(m) = &mut model {
                    let mc = &mut m[c];
                    let want = match mc.buf.pop_front() {
                        Some(v) => Ok(v),
                        None if mc.closed => Err(TryRecvError::Closed),
                        None => Err(TryRecvError::Empty),
                    };
                    assert_eq!(r, want, "try_recv on chan {c}: model disagrees");
                }
            }
            Op::Close(c) => {
                let ok = s.close(c);
                if let Some(m) = &mut model {
                    assert_eq!(ok, !m[c].closed, "close of chan {c}: model disagrees");
                    m[c].closed = true;
                }
            }
            Op::Select(ref cases, default) => {
                let ready: Vec<bool> = match &model {
                    Some(m) => cases
                        .iter()
                        .map(|&(c, k)| match k {
                            CaseKind::Recv => m[c].can_recv(),
                            CaseKind::Send => m[c].can_send(),
                        })
                        .collect(),
                    None => vec![false; cases.len()],
                };
                if model.is_some() && !default && !ready.contains(&true) {
                    continue; // would block forever
                }
                let vals: Vec<u64> = cases.iter().map(|_| value(me, &mut seq)).collect();
                let send_closed_before: Vec<bool> = cases.iter().map(|&(c, _)| s.done(c)).collect();
                // Which case ran (usize::MAX: the default) and what it received.
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let mut sel = Select::new();
                    for (i, &(c, k)) in cases.iter().enumerate() {
                        sel = match k {
                            CaseKind::Recv => sel.recv(&s.chans[c], move |r| (i, Some(r))),
                            CaseKind::Send => sel.send(&s.chans[c], vals[i], move || (i, None)),
                        };
                    }
                    if default {
                        sel = sel.default(|| (usize::MAX, None));
                    }
                    sel.wait()
                }));
                if r.is_err() {
                    forget_dead_frames();
                }
                let fired = match r {
                    Ok((i, got)) => {
                        for (j, &(c, k)) in cases.iter().enumerate() {
                            if k == CaseKind::Send && j != i {
                                log.push(Event::NotSent(c, vals[j]));
                            }
                        }
                        if i != usize::MAX {
                            let (c, k) = cases[i];
                            match (k, got) {
                                (CaseKind::Send, None) => {
                                    assert!(
                                        !send_closed_before[i],
                                        "select sent on chan {c} after its close"
                                    );
                                    log.push(Event::Sent(c, vals[i]));
                                }
                                (CaseKind::Recv, Some(Ok(v))) => log.push(Event::Recv(c, v)),
                                (CaseKind::Recv, Some(Err(RecvError))) => {
                                    assert!(s.started(c), "select: chan {c} closed, no close");
                                    log.push(Event::Closed(c));
                                }
                                other => panic!("select case {i} ran with {other:?}"),
                            }
                        }
                        Some((i, got))
                    }
                    Err(_) => {
                        // `send on closed channel`: a send case on a channel whose close began.
                        assert!(
                            cases.iter().any(|&(c, k)| k == CaseKind::Send && s.started(c)),
                            "select panicked with no send case on a closing channel"
                        );
                        for (j, &(c, k)) in cases.iter().enumerate() {
                            if k == CaseKind::Send {
                                log.push(Event::NotSent(c, vals[j]));
                            }
                        }
                        None
                    }
                };
                if let Some(m) = &mut model {
                    match fired {
                        Some((usize::MAX, _)) => assert!(
                            !ready.contains(&true),
                            "select ran its default with a case ready: {cases:?} {ready:?}"
                        ),
                        Some((i, got)) => {
                            assert!(ready[i], "select ran case {i}, not ready: {cases:?}");
                            let (c, k) = cases[i];
                            let mc = &mut m[c];
                            match k {
                                CaseKind::Send => {
                                    assert!(!mc.closed, "select sent on closed chan {c}");
                                    mc.buf.push_back(vals[i]);
                                }
                                CaseKind::Recv => {
                                    let got = got.expect("a receive case receives");
                                    assert_eq!(got.ok(), mc.buf.pop_front(), "select recv {c}");
                                }
                            }
                        }
                        None => assert!(
                            cases.iter().any(|&(c, k)| k == CaseKind::Send && m[c].closed),
                            "select panicked with no send case on a closed chan"
                        ),
                    }
                }
            }
        }
        for c in 0..s.chans.len() {
            check_cap(s, c);
        }
    }
    s.logs.lock().unwrap().push((me, log));
    s.finished.fetch_add(1, Ordering::SeqCst);
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // libFuzzer's hook aborts on any panic: let the expected ones through to their
        // `catch_unwind` quietly, and hand the rest to it.
        let theirs = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if msg == "send on closed channel"
                || msg == "close of closed channel"
                || msg.starts_with(DEADLOCK)
            {
                return;
            }
            theirs(info)
        }));
        Runtime::builder().procs(2).build().expect("runtime")
    })
}

/// The runtime reported a deadlock: every unfinished goroutine must be parked on a channel
/// operation that truly cannot proceed.
fn check_deadlock_is_real(s: &Shared, report: &str, workers: usize) {
    let mut parked = 0;
    for (c, ch) in s.chans.iter().enumerate() {
        let (senders, receivers) = ch.waiting();
        let (len, cap, closed) = (ch.len(), ch.cap(), ch.is_closed());
        parked += senders + receivers;
        let why = if closed && senders + receivers > 0 {
            "goroutines parked on a closed channel"
        } else if receivers > 0 && len > 0 {
            "a receiver parked while values are buffered"
        } else if senders > 0 && len < cap {
            "a sender parked while the buffer has room"
        } else if cap == 0 && senders > 0 && receivers > 0 {
            "a sender and a receiver parked on one unbuffered channel"
        } else {
            continue;
        };
        panic!(
            "false deadlock: chan {c} (cap {cap}, len {len}, closed {closed}, {senders} senders, \
             {receivers} receivers parked): {why}\n{report}"
        );
    }
    let unfinished = workers - s.finished.load(Ordering::SeqCst);
    assert!(
        parked >= unfinished,
        "deadlock reported with {unfinished} goroutines unfinished but {parked} parked on \
         channels\n{report}"
    );
}

fn run(p: &Program) {
    let rt = runtime();
    let s = Arc::new(Shared {
        chans: p.caps.iter().map(|&c| Chan::new(c)).collect(),
        close_started: p.caps.iter().map(|_| AtomicUsize::new(0)).collect(),
        close_done: p.caps.iter().map(|_| AtomicUsize::new(0)).collect(),
        logs: Mutex::new(Vec::new()),
        finished: AtomicUsize::new(0),
    });
    let workers = p.scripts.len();
    let model = (workers == 1).then(|| {
        p.caps.iter().map(|&cap| ModelChan { cap, buf: VecDeque::new(), closed: false }).collect()
    });
    let handles: Vec<_> = p
        .scripts
        .iter()
        .enumerate()
        .map(|(me, ops)| {
            let (s, ops, model) = (s.clone(), ops.clone(), model.clone());
            rt.spawn(move || run_script(&s, me, &ops, model)).expect("spawn")
        })
        .collect();
    let mut rescued = false;
    for h in handles {
        match catch_unwind(AssertUnwindSafe(|| h.join())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("a script goroutine panicked: {e}"),
            Err(payload) => {
                let report = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "(no report)".into());
                assert!(report.starts_with(DEADLOCK), "join panicked: {report}");
                assert!(model.is_none(), "a lone goroutine deadlocked: the model skips blocking");
                assert!(!rescued, "deadlocked again after every channel was closed");
                check_deadlock_is_real(&s, &report, workers);
                // Release everyone: parked receivers see "closed", parked senders panic, and
                // from now on no operation blocks.
                for c in 0..s.chans.len() {
                    if !s.chans[c].is_closed() {
                        s.close(c);
                    }
                }
                rescued = true;
            }
        }
    }
    // Goroutines whose handle was lost to a deadlock panic run to the end on their own.
    let t0 = Instant::now();
    while s.finished.load(Ordering::SeqCst) < workers {
        assert!(t0.elapsed() < HANG, "scripts still running {HANG:?} after every channel closed");
        std::thread::sleep(Duration::from_millis(1));
    }
    verify(&s);
}

/// No loss, no duplication, FIFO per sender and receiver, nothing after "closed".
fn verify(s: &Shared) {
    let mut logs = s.logs.lock().unwrap().clone();
    // The final drain is one more receiver.
    let mut drain = Vec::new();
    for (c, ch) in s.chans.iter().enumerate() {
        while let Ok(v) = ch.try_recv() {
            drain.push(Event::Recv(c, v));
        }
        let (senders, receivers) = ch.waiting();
        assert_eq!(
            (senders, receivers),
            (0, 0),
            "chan {c}: nodes left after every goroutine ended"
        );
    }
    logs.push((usize::MAX, drain));
    let mut sent: HashMap<u64, usize> = HashMap::new();
    let mut not_sent: HashMap<u64, usize> = HashMap::new();
    for (_, log) in &logs {
        for e in log {
            match *e {
                Event::Sent(c, v) => assert!(sent.insert(v, c).is_none(), "{v:#x} sent twice"),
                Event::NotSent(c, v) => {
                    assert!(not_sent.insert(v, c).is_none(), "{v:#x} refused twice")
                }
                _ => {}
            }
        }
    }
    let mut received: HashSet<u64> = HashSet::new();
    for (who, log) in &logs {
        // Per channel and sender, the last sequence number this receiver got.
        let mut last: HashMap<(usize, u64), u64> = HashMap::new();
        let mut closed_seen: HashSet<usize> = HashSet::new();
        for e in log {
            match *e {
                Event::Recv(c, v) => {
                    if let Some(to) = not_sent.get(&v) {
                        panic!("{v:#x} received on chan {c}, but its send on chan {to} failed");
                    }
                    assert_eq!(
                        sent.get(&v),
                        Some(&c),
                        "{v:#x} received on chan {c}, not sent there"
                    );
                    assert!(received.insert(v), "{v:#x} received twice");
                    assert!(
                        !closed_seen.contains(&c),
                        "receiver {who} got {v:#x} from chan {c} after seeing it closed"
                    );
                    let (sender, n) = (v >> 32, v & 0xffff_ffff);
                    if let Some(&prev) = last.get(&(c, sender)) {
                        assert!(
                            prev < n,
                            "chan {c}: receiver {who} got #{n} of sender {sender} after #{prev}"
                        );
                    }
                    last.insert((c, sender), n);
                }
                Event::Closed(c) => {
                    closed_seen.insert(c);
                }
                _ => {}
            }
        }
    }
    for (v, c) in &sent {
        assert!(received.contains(v), "{v:#x} sent on chan {c} and never received (lost)");
    }
}

fuzz_target!(|data: &[u8]| {
    let p = decode(data);
    run(&p);
});
