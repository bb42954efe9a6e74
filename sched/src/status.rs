//! The goroutine status word and its transitions.
//!
//! One 64-bit atomic per goroutine. The low 32 bits hold the state ([`Status`], possibly with
//! the [`SCAN`] bit on top); the high 32 bits hold the goroutine's *park generation*, bumped
//! every time the goroutine parks and when it dies. A wake-up token ([`crate::GoroutineRef`])
//! carries the generation it was issued for, and `ready` is a single compare-and-swap of the
//! whole word from `(gen, Waiting)` to `(gen, Runnable)`: a stale or duplicated token can never
//! wake a later park of the same (possibly reused) goroutine. A state alone would fit an
//! `AtomicU32`; the generation is why this one is twice as wide.
//!
//! Every transition is a CAS. A transition that finds `SCAN` set on the state it expects spins
//! until the bit clears: whoever set it owns the goroutine's stacks for now. A transition that
//! finds any other state is a runtime bug and is fatal.

use crate::shim::{AtomicU64, Ordering, spin_hint};

/// A goroutine's base state. Each answers: does it run user code, is it on a run queue, who owns
/// its stacks, may it be scanned, and who moves it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Just allocated, never run; not on a queue; nothing to scan. Moved out by spawn.
    Idle = 0,
    /// Ready to run: on a run queue (or about to be), not running user code. The queue owns the
    /// stacks; scannable by whoever sets `SCAN`. Moved out by the M that dequeues it.
    Runnable = 1,
    /// Running user code on an M that holds a P. The goroutine owns its stacks; not scannable —
    /// ask it to stop. Only the goroutine itself moves out of Running.
    Running = 2,
    /// Inside a blocking call (`blocking`): runs only native code, its managed stack is frozen.
    /// Scannable. Moved out by the goroutine when the call returns.
    Syscall = 3,
    /// Parked (channel, lock, join, ...): not running, on no run queue; whoever holds its wake-up
    /// token owns it. Scannable. Moved out by `ready`.
    Waiting = 4,
    /// Finished, on a free list; its stacks hold nothing to scan. Moved out by spawn (reuse).
    Dead = 6,
    /// Growing or shrinking its managed stack: not scannable; wait. The goroutine moves itself
    /// back to Running.
    CopyStack = 8,
    /// Stopped at a synchronous safepoint because a suspender asked (`preempt_stop`): owned by
    /// nobody until a suspender CASes it to Waiting and so takes the duty of readying it. Then
    /// scannable.
    Preempted = 9,
    /// Held in place by the preemption signal (asynchronous preemption): not running user code
    /// (its M sits in the signal trampoline's hold, every register saved on the goroutine's
    /// native stack), on no run queue, and its M runs nothing else meanwhile. The goroutine owns
    /// its stacks; scannable by whoever sets `SCAN` (the innermost managed frame conservatively:
    /// it was interrupted at an arbitrary instruction, so its safepoint index may be stale).
    /// Moved out by the goroutine itself (back to Running) when nobody needs it held any more;
    /// it waits while `SCAN` is held.
    AsyncPreempted = 10,
}

/// Set on top of Runnable, Running, Syscall, Waiting, Preempted or AsyncPreempted by whoever claims the right to
/// scan the goroutine's stacks; while set, no other transition can happen and the goroutine
/// cannot start running. The claimer clears it.
pub const SCAN: u32 = 0x1000;

const STATE_MASK: u64 = 0xffff_ffff;

impl Status {
    /// The state for a raw value without the scan bit.
    ///
    /// ```
    /// use safepoint_sched::status::{SCAN, Status};
    /// assert_eq!(Status::from_raw(Status::Waiting as u32), Some(Status::Waiting));
    /// assert_eq!(Status::from_raw(Status::Waiting as u32 | SCAN), None); // the bit is not a state
    /// ```
    pub fn from_raw(v: u32) -> Option<Status> {
        Some(match v {
            0 => Status::Idle,
            1 => Status::Runnable,
            2 => Status::Running,
            3 => Status::Syscall,
            4 => Status::Waiting,
            6 => Status::Dead,
            8 => Status::CopyStack,
            9 => Status::Preempted,
            10 => Status::AsyncPreempted,
            _ => return None,
        })
    }
}

/// A decoded status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    /// State bits, including `SCAN` if set.
    pub state: u32,
    /// Park generation.
    pub generation: u32,
}

impl Word {
    fn decode(w: u64) -> Word {
        Word { state: (w & STATE_MASK) as u32, generation: (w >> 32) as u32 }
    }
    fn encode(self) -> u64 {
        ((self.generation as u64) << 32) | self.state as u64
    }
    /// The base state, without `SCAN`.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Runnable);
    /// assert!(w.cas_to_scan(Status::Runnable));
    /// assert_eq!(w.load().base(), Some(Status::Runnable)); // the state under the SCAN bit
    /// w.cas_from_scan(Status::Runnable, Status::Runnable);
    /// ```
    pub fn base(self) -> Option<Status> {
        Status::from_raw(self.state & !SCAN)
    }
    /// Whether `SCAN` is set.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Waiting);
    /// assert!(!w.load().scanning());
    /// assert!(w.cas_to_scan(Status::Waiting));
    /// assert!(w.load().scanning());
    /// w.cas_from_scan(Status::Waiting, Status::Waiting);
    /// ```
    pub fn scanning(self) -> bool {
        self.state & SCAN != 0
    }
}

impl core::fmt::Display for Word {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.base() {
            Some(s) => write!(f, "{s:?}")?,
            None => write!(f, "?{:#x}", self.state & !SCAN)?,
        }
        if self.scanning() {
            write!(f, "|Scan")?;
        }
        write!(f, " (gen {}, raw {:#x})", self.generation, self.state)
    }
}

/// The atomic status word.
#[derive(Debug)]
pub struct StatusWord(AtomicU64);

/// How a single transition attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Done.
    Ok,
    /// The expected state is held with `SCAN`: wait and retry.
    Scanning,
    /// Some other state (or generation) is there.
    Other(Word),
}

impl StatusWord {
    /// A word in `state` at generation 0.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Idle);
    /// assert_eq!((w.load().base(), w.load().generation), (Some(Status::Idle), 0));
    /// ```
    pub fn new(state: Status) -> StatusWord {
        StatusWord(AtomicU64::new(state as u64))
    }

    /// Reads the word. Acquire: pairs with the Release of every transition, so whoever sees a
    /// state also sees what its setter wrote before (a saved context, a scan's results).
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Running);
    /// let now = w.load();
    /// assert_eq!(now.base(), Some(Status::Running));
    /// assert!(now.to_string().starts_with("Running (gen 0"));
    /// ```
    #[inline]
    pub fn load(&self) -> Word {
        // Under loom a plain load may keep returning a stale value, so a spin-wait on SCAN
        // would branch without end; an RMW always reads the latest value. Every decision taken
        // on a loaded word is re-validated by a CAS, so this loses no interleaving that matters.
        #[cfg(loom)]
        return Word::decode(self.0.fetch_add(0, Ordering::AcqRel));
        #[cfg(not(loom))]
        Word::decode(self.0.load(Ordering::Acquire))
    }

    /// One attempt at `old -> new`, keeping the generation (or requiring `gen` if given).
    ///
    /// ```
    /// use safepoint_sched::status::{Cas, Status, StatusWord};
    /// let w = StatusWord::new(Status::Waiting);
    /// let (waiting, runnable) = (Status::Waiting as u32, Status::Runnable as u32);
    /// assert_eq!(w.try_cas(waiting, runnable, Some(1)), Cas::Other(w.load())); // wrong generation
    /// assert_eq!(w.try_cas(waiting, runnable, Some(0)), Cas::Ok); // a wake-up token's check
    /// assert!(matches!(w.try_cas(waiting, runnable, None), Cas::Other(_))); // not Waiting now
    /// ```
    pub fn try_cas(&self, old: u32, new: u32, generation: Option<u32>) -> Cas {
        let cur = self.load();
        if generation.is_some_and(|g| g != cur.generation) {
            return Cas::Other(cur);
        }
        if cur.state == old {
            let next = Word { state: new, generation: cur.generation };
            // AcqRel: the Release half publishes everything this side did before the
            // transition (pairs with `load`'s Acquire); the Acquire half sees the previous
            // owner's writes.
            match self.0.compare_exchange(
                cur.encode(),
                next.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Cas::Ok,
                Err(w) => {
                    let w = Word::decode(w);
                    if w.state == old | SCAN { Cas::Scanning } else { Cas::Other(w) }
                }
            }
        } else if cur.state == old | SCAN && old & SCAN == 0 {
            Cas::Scanning
        } else {
            Cas::Other(cur)
        }
    }

    /// `old -> new`, spinning while `old|SCAN` is held. Any other state is a runtime bug: fatal.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Runnable);
    /// w.cas(Status::Runnable, Status::Running); // spins while a scanner holds Runnable|SCAN
    /// assert_eq!(w.load().base(), Some(Status::Running));
    /// ```
    pub fn cas(&self, old: Status, new: Status) {
        let mut spins = 0u32;
        loop {
            match self.try_cas(old as u32, new as u32, None) {
                Cas::Ok => return,
                Cas::Scanning => backoff(&mut spins),
                Cas::Other(w) => crate::throw!(
                    "bad goroutine status transition {:?} -> {:?}: found {}",
                    old,
                    new,
                    w
                ),
            }
        }
    }

    /// `old -> new` and a new generation, returned (used when dying).
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Running);
    /// let generation = w.cas_bump(Status::Running, Status::Dead); // tokens of earlier parks go stale
    /// assert_eq!(generation, 1);
    /// assert_eq!(w.load().generation, 1);
    /// ```
    pub fn cas_bump(&self, old: Status, new: Status) -> u32 {
        self.cas_bump_raw(old, new as u32)
    }

    /// `old -> new` (raw state bits, possibly with SCAN) and a new generation, returned;
    /// spinning while `old|SCAN` is held, fatal on any other state.
    fn cas_bump_raw(&self, old: Status, new: u32) -> u32 {
        let mut spins = 0u32;
        loop {
            let cur = self.load();
            if cur.state == old as u32 {
                let next = Word { state: new, generation: cur.generation.wrapping_add(1) };
                // AcqRel: as in `try_cas`.
                if self
                    .0
                    .compare_exchange(
                        cur.encode(),
                        next.encode(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    return next.generation;
                }
            } else if cur.state == old as u32 | SCAN {
                backoff(&mut spins);
            } else {
                crate::throw!(
                    "bad goroutine status transition {:?} -> {:#x}: found {}",
                    old,
                    new,
                    cur
                );
            }
        }
    }

    /// Claims the scan right: `s -> s|SCAN`, one attempt. Only for scannable states.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Waiting);
    /// assert!(w.cas_to_scan(Status::Waiting)); // the scan right is ours
    /// assert!(!w.cas_to_scan(Status::Waiting)); // and no one else's
    /// w.cas_from_scan(Status::Waiting, Status::Waiting);
    /// ```
    pub fn cas_to_scan(&self, s: Status) -> bool {
        debug_assert!(matches!(
            s,
            Status::Runnable
                | Status::Running
                | Status::Syscall
                | Status::Waiting
                | Status::Preempted
                | Status::AsyncPreempted
        ));
        self.try_cas(s as u32, s as u32 | SCAN, None) == Cas::Ok
    }

    /// Releases the scan right: `s|SCAN -> new`. Must succeed: nobody else may change a word
    /// whose `SCAN` we hold.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Runnable);
    /// assert!(w.cas_to_scan(Status::Runnable));
    /// w.cas_from_scan(Status::Runnable, Status::Runnable); // scanned: released as it was
    /// assert!(!w.load().scanning());
    /// ```
    pub fn cas_from_scan(&self, s: Status, new: Status) {
        if self.try_cas(s as u32 | SCAN, new as u32, None) != Cas::Ok {
            crate::throw!("releasing scan of {:?} found {}", s, self.load());
        }
    }

    /// Bumps the generation of a goroutine nobody else can see.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Idle);
    /// w.bump_private();
    /// assert_eq!(w.load().generation, 1);
    /// ```
    pub fn bump_private(&self) {
        let w = self.load();
        let next = Word { state: w.state, generation: w.generation.wrapping_add(1) };
        // Release: pairs with `load`; the goroutine is not shared.
        self.0.store(next.encode(), Ordering::Release);
    }

    /// `Running -> Waiting|SCAN` with a new generation, returned: the first half of a park. The
    /// parker holds `SCAN` while its callback runs, so the token it hands out cannot wake the
    /// goroutine (and nobody can scan it) until the callback is done.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Running);
    /// let generation = w.park_begin(); // Running -> Waiting|SCAN, a new generation
    /// assert!(w.load().scanning() && w.load().base() == Some(Status::Waiting));
    /// w.cas_from_scan(Status::Waiting, Status::Waiting); // the park's callback kept the token
    /// assert_eq!(w.load().generation, generation);
    /// ```
    pub fn park_begin(&self) -> u32 {
        self.cas_bump_raw(Status::Running, Status::Waiting as u32 | SCAN)
    }

    /// Second half of a park whose callback declined: `Waiting|SCAN -> Runnable` with a new
    /// generation, so a token the callback gave out is stale.
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Running);
    /// let generation = w.park_begin();
    /// w.park_cancel(); // the callback declined: Runnable, and its token is stale
    /// assert_eq!(w.load().base(), Some(Status::Runnable));
    /// assert!(w.load().generation != generation);
    /// ```
    pub fn park_cancel(&self) {
        let cur = self.load();
        debug_assert_eq!(cur.state, Status::Waiting as u32 | SCAN);
        let next =
            Word { state: Status::Runnable as u32, generation: cur.generation.wrapping_add(1) };
        // Release: publishes the parked context to whoever dequeues the goroutine; we hold SCAN
        // so nobody else can change the word.
        #[cfg(not(loom))]
        self.0.store(next.encode(), Ordering::Release);
        // Under loom every `load` is an RMW (see `load`), and loom may order this plain store
        // before a concurrent one of them and let that RMW write back the old word: a swap is
        // ordered with them as a real load is with a store.
        #[cfg(loom)]
        self.0.swap(next.encode(), Ordering::Release);
    }

    /// Unconditional store, for a goroutine nobody else can see (being set up or torn down).
    ///
    /// ```
    /// use safepoint_sched::status::{Status, StatusWord};
    /// let w = StatusWord::new(Status::Dead);
    /// w.store_private(Status::Idle); // a G being reused, seen by nobody yet
    /// assert_eq!(w.load().base(), Some(Status::Idle));
    /// ```
    pub fn store_private(&self, state: Status) {
        let g = self.load().generation;
        // Release: pairs with `load`; the goroutine is not yet (or no longer) shared.
        self.0.store(Word { state: state as u32, generation: g }.encode(), Ordering::Release);
    }
}

/// What one look at a goroutine's status word tells a suspender to do next (the state machine
/// of [`crate::suspend_g`], kept here so that the loom models check the very same code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendStep {
    /// The goroutine is dead (or never started): nothing to hold.
    Dead,
    /// Held: its SCAN bit is ours, on top of this scannable state (Runnable, Syscall, Waiting,
    /// or AsyncPreempted: held in place by the preemption signal, which it leaves only once
    /// SCAN is released).
    Held(Status),
    /// Someone else holds it, or its stack is being copied: wait and look again.
    Wait,
    /// It is running: ask it to stop (`request` was called with SCAN held, so it could not
    /// leave Running meanwhile), then wait and look again.
    Requested,
    /// It was running and is not any more... or the request was not sent this time (`ask` was
    /// false): wait and look again.
    Running,
    /// It had parked itself in Preempted; we moved it to Waiting and now owe it a ready.
    /// Look again to hold it.
    Claimed,
}

/// One step of suspending the goroutine whose status word is `w`. `ask` says whether to send a
/// stop request if it is running (requests are re-sent only every so often); `request` sends
/// it.
///
/// ```
/// use safepoint_sched::status::{Status, StatusWord, SuspendStep, suspend_step};
/// let w = StatusWord::new(Status::Waiting);
/// assert_eq!(suspend_step(&w, true, || unreachable!()), SuspendStep::Held(Status::Waiting));
/// w.cas_from_scan(Status::Waiting, Status::Waiting);
/// let running = StatusWord::new(Status::Running);
/// let mut asked = false;
/// assert_eq!(suspend_step(&running, true, || asked = true), SuspendStep::Requested);
/// assert!(asked);
/// ```
pub fn suspend_step(w: &StatusWord, ask: bool, request: impl FnOnce()) -> SuspendStep {
    let cur = w.load();
    if cur.scanning() {
        return SuspendStep::Wait;
    }
    match cur.base() {
        Some(Status::Dead) | Some(Status::Idle) => SuspendStep::Dead,
        Some(Status::CopyStack) => SuspendStep::Wait,
        Some(Status::Preempted) => {
            if w.cas_to_scan(Status::Preempted) {
                w.cas_from_scan(Status::Preempted, Status::Waiting);
                SuspendStep::Claimed
            } else {
                SuspendStep::Wait
            }
        }
        Some(
            s @ (Status::Runnable | Status::Syscall | Status::Waiting | Status::AsyncPreempted),
        ) => {
            if w.cas_to_scan(s) {
                SuspendStep::Held(s)
            } else {
                SuspendStep::Wait
            }
        }
        Some(Status::Running) => {
            if ask && w.cas_to_scan(Status::Running) {
                request();
                w.cas_from_scan(Status::Running, Status::Running);
                SuspendStep::Requested
            } else {
                SuspendStep::Running
            }
        }
        None => crate::throw!("suspend_g: invalid status {}", cur),
    }
}

/// Spin a little, then give the CPU away: the other side is a short critical section on another
/// thread (a scan, a park callback), which can be preempted by the OS.
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        spin_hint();
    } else {
        #[cfg(not(loom))]
        safepoint_arch::os_yield();
        #[cfg(loom)]
        spin_hint();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn generation_guards_ready() {
        let w = StatusWord::new(Status::Running);
        let g = w.cas_bump(Status::Running, Status::Waiting);
        assert_eq!(g, 1);
        // A token for an older park fails.
        assert!(matches!(
            w.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(0)),
            Cas::Other(_)
        ));
        assert_eq!(w.try_cas(Status::Waiting as u32, Status::Runnable as u32, Some(1)), Cas::Ok);
        assert_eq!(w.load().base(), Some(Status::Runnable));
    }

    #[test]
    fn scan_bit_blocks_transitions() {
        let w = StatusWord::new(Status::Waiting);
        assert!(w.cas_to_scan(Status::Waiting));
        assert!(!w.cas_to_scan(Status::Waiting));
        assert_eq!(w.try_cas(Status::Waiting as u32, Status::Runnable as u32, None), Cas::Scanning);
        w.cas_from_scan(Status::Waiting, Status::Waiting);
        assert_eq!(w.try_cas(Status::Waiting as u32, Status::Runnable as u32, None), Cas::Ok);
        assert_eq!(format!("{}", w.load()), "Runnable (gen 0, raw 0x1)");
    }
}
