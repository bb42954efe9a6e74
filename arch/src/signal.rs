//! Signals: the guard-page fault handler.
//!
//! A goroutine's native stack has a guard page below it (see [`crate::stack`]). When a goroutine
//! recurses too deep it touches the guard, the kernel raises `SIGSEGV`, and without help the
//! process dies with a bare "Segmentation fault" that names neither the goroutine nor the cause.
//! This module turns that into
//!
//! ```text
//! goroutine 42: native stack overflow (stack limit 65536 bytes)
//! ```
//!
//! on stderr followed by `abort()`, and leaves every other fault to whoever handled it before.
//!
//! # The protocol
//!
//! 1. **Once per process**, [`install`] saves the current `SIGSEGV` and `SIGBUS` actions (Rust's
//!    std has installed its own at start-up to report thread stack overflows) and installs
//!    ours with `SA_SIGINFO | SA_ONSTACK`. Later calls only do step 2.
//! 2. **Once per thread that runs goroutines** (every M, at start), [`ensure_altstack`] gives the
//!    thread an alternate signal stack unless it has one. A handler for a stack overflow cannot
//!    run on the stack that overflowed: without an alternate stack the kernel cannot push the
//!    signal frame, and kills the process with a plain `SIGSEGV`. std gives the threads it
//!    starts an alternate stack only when its own handler is installed; threads started by
//!    anyone else (a C host, `pthread_create`) have none. Ours is freed when the thread exits.
//! 3. **On every switch** into a goroutine the scheduler calls [`set_current`] with that
//!    goroutine's [`StackInfo`], and on every switch back to the thread's own stack (g0) it calls
//!    `set_current(null)`. It is one thread-local store. Goroutines move between threads only at
//!    synchronous switch points, and the thread that runs a goroutine is the one that called
//!    `set_current` for it, so the thread-local always describes the stack this thread runs on.
//! 4. **On a fault**, the handler (running on the alternate stack) reads the current
//!    `StackInfo`. If it is non-null and the fault is a guard hit (below), it writes the line
//!    above with `write(2)` and aborts. Otherwise it *chains* to the saved action:
//!    * a `SA_SIGINFO` handler is called with the same `(signal, siginfo, ucontext)`;
//!    * a plain handler is called with the signal number;
//!    * `SIG_DFL` (and `SIG_IGN`, which cannot ignore a fault) restores `SIG_DFL` and returns:
//!      the faulting instruction runs again and the kernel kills the process with the signal,
//!      core dump and all, exactly as if we had never been there. A signal *sent* by a process
//!      (`kill`, `raise`; `si_code <= 0`) does not re-execute, so it is raised again; it stays
//!      blocked until the handler returns, and is then delivered with the default action.
//!
//!    The previous handler is called with its own `sa_mask` added to the blocked set and, if it
//!    asked for `SA_RESETHAND`, with the disposition reset to `SIG_DFL` first, as the kernel
//!    would have done. It runs on the alternate stack and sees our `SA_ONSTACK`, which is what
//!    std's handler expects anyway. This keeps std's "thread 'x' has overflowed its stack"
//!    working for plain threads: std's handler checks the fault against the thread's own guard
//!    page and, when it is not a hit, resets the action to `SIG_DFL` and returns.
//!
//! # What counts as a guard hit
//!
//! Only a fault raised by the kernel (`si_code > 0`), on a thread whose current `StackInfo` is
//! non-null, where the fault address `addr` and the interrupted stack pointer `sp` satisfy
//!
//! * `guard_lo <= addr < guard_hi` (the guard itself: nothing else may touch it), or
//! * `guard_lo - GUARD_SLACK <= addr < guard_lo` **and** `guard_lo - GUARD_SLACK <= sp < guard_hi`.
//!
//! The second case exists because a frame larger than the guard can step over it. Rust (and C
//! built with `-fstack-clash-protection`) probes every page of a large frame in order, so its
//! overflows land in the guard; code without probes can land up to a frame size below it. We
//! accept [`GUARD_SLACK`] (64 KiB) below the guard, but only when the stack pointer itself has
//! left the usable stack: a stray pointer dereferenced by code whose stack is healthy has its
//! stack pointer above `guard_hi`, so it is never mistaken for an overflow. A frame that jumps
//! further than the slack, or into memory that happens to be mapped, is not caught (nothing
//! but probes can catch it); it dies as an ordinary fault.
//!
//! # Async-signal safety
//!
//! The handler allocates nothing, takes no lock and formats numbers by hand into a buffer on
//! its own stack. It calls only async-signal-safe functions: `write`, `abort`, `sigaction`,
//! `pthread_sigmask`, `raise`. It reads two kinds of memory: the saved previous actions,
//! written once before the handler is installed and published with a Release flag, and the
//! thread-local current pointer, which is a `const`-initialised `Cell` of a type without a
//! destructor. Such a thread-local compiles to a plain `#[thread_local]` static: no lazy
//! initialisation, no destructor registration, no "already destroyed" state, just a load
//! relative to the thread pointer (std's own overflow handler reads its guard range the same
//! way). One caveat: if this crate is linked into a shared object that is `dlopen`ed, the first
//! access to its thread-locals on a thread may go through `__tls_get_addr`, which can allocate.
//! [`install`] and [`ensure_altstack`] touch the thread-local so that this first access never
//! happens inside the handler on a thread that runs goroutines.
//!
//! # Limits
//!
//! * The alternate stack is freed by a thread-local destructor. A stack overflow in a
//!   thread-local destructor that runs after ours, during thread exit, has no alternate stack
//!   and dies as a plain `SIGSEGV`.
//! * An existing alternate stack is kept whatever its size (std's is at least `SIGSTKSZ`); our
//!   handler needs a few hundred bytes of it.
//! * Between reading the old action and installing ours, [`install`] is not atomic with respect
//!   to another library calling `sigaction` for the same signals at the same moment; the other
//!   library's action would be lost.

use core::cell::{Cell, RefCell, UnsafeCell};
use core::mem::{ManuallyDrop, MaybeUninit};
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use libc::{c_int, c_void, siginfo_t};

use crate::stack::Stack;

/// What the SIGSEGV handler must know about the goroutine running on this thread.
///
/// The scheduler keeps one per goroutine (next to its [`Stack`]) and passes a pointer to it to
/// [`set_current`]; it must stay valid and unchanged while it is current.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackInfo {
    /// Guard region start.
    pub guard_lo: usize,
    /// Guard region end (exclusive): the lowest usable byte of the stack.
    pub guard_hi: usize,
    /// Usable stack size, for the message.
    pub size: usize,
    /// The goroutine's id, for the message.
    pub goroutine: u64,
}

impl StackInfo {
    /// The description of `stack` when goroutine `goroutine` runs on it.
    ///
    /// ```
    /// use safepoint_arch::{signal::StackInfo, stack::Stack};
    /// let stack = Stack::new(64 * 1024).unwrap();
    /// let info = StackInfo::for_stack(&stack, 9);
    /// assert_eq!((info.guard_lo, info.guard_hi), stack.guard_range());
    /// assert_eq!((info.size, info.goroutine), (64 * 1024, 9));
    /// ```
    pub fn for_stack(stack: &Stack, goroutine: u64) -> StackInfo {
        let (guard_lo, guard_hi) = stack.guard_range();
        StackInfo { guard_lo, guard_hi, size: stack.size(), goroutine }
    }
}

/// How far below the guard page a fault still counts as an overflow of the stack above it, when
/// the interrupted stack pointer has left the usable stack too. See the module docs.
pub const GUARD_SLACK: usize = 64 * 1024;

/// Usable size of the alternate signal stacks we map (a guard page comes on top). Generous: a
/// signal frame with AVX-512 or AMX state takes up to ~11 KiB (on aarch64, one with SVE state a
/// few KiB, more with SME's ZA array), and a chained handler (std's formats its message with
/// `core::fmt`) needs room of its own.
pub const ALTSTACK_SIZE: usize = 64 * 1024;

/// The signals we handle: a guard hit is a `SIGSEGV`; `SIGBUS` is handled alike, as std does.
const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

thread_local! {
    /// The goroutine stack this thread runs on, or null on the thread's own stack.
    ///
    /// `const`-initialised and without a destructor: see "Async-signal safety" in the module
    /// docs for why the handler may read it.
    static CURRENT: Cell<*const StackInfo> = const { Cell::new(core::ptr::null()) };

    /// The alternate signal stack this module mapped for this thread, if any. Its destructor
    /// unregisters and unmaps it at thread exit. Never touched by the handler.
    static ALTSTACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

/// Records which goroutine stack this thread now runs on (null: the thread's own stack).
///
/// Called by the scheduler on every switch into a goroutine, with that goroutine's info, and on
/// every switch back to g0, with null. `info` must stay valid and unchanged for as long as it is
/// current on this thread, because the fault handler reads it.
///
/// Runs on: any stack. Preemption: irrelevant (one store). Allocates: no.
///
/// # Safety
/// `info` is null or points at a `StackInfo` that stays valid and unchanged while it is current
/// on this thread (until the next `set_current` here): the fault handler dereferences it.
///
/// ```
/// use safepoint_arch::signal::{StackInfo, set_current};
/// use safepoint_arch::stack::Stack;
/// let stack = Stack::new(64 * 1024).unwrap();
/// let info = StackInfo::for_stack(&stack, 3);
/// // SAFETY: `info` is not moved or changed while it is current; cleared before it goes.
/// unsafe { set_current(&info) };
/// // ... switch into goroutine 3's stack, run it, switch back ...
/// // SAFETY: null: this thread is on its own stack again.
/// unsafe { set_current(std::ptr::null()) };
/// ```
#[inline]
pub unsafe fn set_current(info: *const StackInfo) {
    CURRENT.set(info);
}

/// The goroutine stack info current on this thread (null on g0), for the preemption handler.
///
/// Async-signal-safe: a plain thread-local load (see "Async-signal safety" above).
#[inline]
pub(crate) fn current_info() -> *const StackInfo {
    CURRENT.get()
}

/// Installs the process-wide handler (idempotent) and this thread's alternate signal stack.
///
/// Safe to call from any number of threads at once: the first call installs, the others wait
/// for it to finish, and every call then runs [`ensure_altstack`] for its own thread.
///
/// # Panics
/// If `sigaction` refuses (it cannot for these signals) or [`ensure_altstack`] panics.
///
/// ```
/// // Once per process (later calls only give the calling thread its alternate signal stack):
/// // from then on a hit on a registered goroutine stack's guard page ends the process with
/// // "goroutine N: native stack overflow" instead of a bare SIGSEGV.
/// safepoint_arch::signal::install();
/// safepoint_arch::signal::install();
/// ```
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        for (sig, saved) in SIGNALS.iter().zip(&SAVED) {
            install_one(*sig, saved);
        }
    });
    ensure_altstack();
}

/// Makes sure this thread has an alternate signal stack.
///
/// If the thread already has one (std's, a host's, or ours) it is kept. Otherwise an
/// [`ALTSTACK_SIZE`] stack with a guard page below is mapped and registered, and it is
/// unregistered and unmapped when the thread exits. Called during thread exit, after this
/// module's thread-locals are gone, it does nothing.
///
/// Runs on: the thread's own stack, not inside a signal handler. Allocates: a mapping, once.
///
/// # Panics
/// If the kernel refuses the mapping or `sigaltstack` (out of memory).
///
/// ```
/// // Once per thread that runs goroutines; later calls do nothing.
/// safepoint_arch::signal::ensure_altstack();
/// safepoint_arch::signal::ensure_altstack();
/// ```
pub fn ensure_altstack() {
    // Allocate this thread's TLS block for CURRENT now, outside any handler (matters only for a
    // dlopen'ed shared object; see the module docs).
    let _ = CURRENT.try_with(Cell::get);
    if has_altstack() {
        return;
    }
    let _ = ALTSTACK.try_with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            let stack = Stack::new(ALTSTACK_SIZE)
                .unwrap_or_else(|e| panic!("cannot map an alternate signal stack: {e}"));
            *slot = Some(AltStack { stack: ManuallyDrop::new(stack) });
        }
        // Ours may exist but be unregistered, if someone disabled it: register it again.
        if let Some(alt) = slot.as_ref() {
            alt.register();
        }
    });
}

/// Whether this thread has an enabled alternate signal stack.
fn has_altstack() -> bool {
    current_altstack().ss_flags & libc::SS_DISABLE == 0
}

/// This thread's alternate signal stack, as `sigaltstack` reports it.
fn current_altstack() -> libc::stack_t {
    let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
    // SAFETY: with a null new stack, sigaltstack only writes the current one into `cur`, which
    // is valid for a write.
    let rc = unsafe { libc::sigaltstack(core::ptr::null(), cur.as_mut_ptr()) };
    assert_eq!(rc, 0, "sigaltstack: {}", std::io::Error::last_os_error());
    // SAFETY: the call succeeded, so the kernel filled `cur` (and all-zero is valid anyway).
    unsafe { cur.assume_init() }
}

/// An alternate signal stack mapped by this module for the thread that owns it.
struct AltStack {
    /// Dropped (unmapped) by our Drop only once no thread has it registered.
    stack: ManuallyDrop<Stack>,
}

impl AltStack {
    fn lo(&self) -> usize {
        self.stack.lo()
    }

    /// Makes this the thread's alternate signal stack.
    fn register(&self) {
        let ss = libc::stack_t {
            ss_sp: self.stack.lo() as *mut c_void,
            ss_flags: 0,
            ss_size: self.stack.size(),
        };
        // SAFETY: the range is a mapping we own, readable and writable, that lives until our
        // Drop, which unregisters it before unmapping.
        let rc = unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaltstack failed: {}", std::io::Error::last_os_error());
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
        // SAFETY: a query only writes the current alternate stack into `cur`.
        let rc = unsafe { libc::sigaltstack(core::ptr::null(), cur.as_mut_ptr()) };
        // SAFETY: zeroed is a valid stack_t, and a successful call filled it.
        let cur = unsafe { cur.assume_init() };
        if rc != 0 {
            return; // cannot tell whether it is still registered: leak it
        }
        if cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_sp as usize == self.lo() {
            let off = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling takes no memory; it fails (EPERM) only while running on it.
            if unsafe { libc::sigaltstack(&off, core::ptr::null_mut()) } != 0 {
                return; // still registered: leaking beats unmapping a live stack
            }
        }
        // SAFETY: the stack is not registered on this thread (checked or just disabled), only
        // this thread ever registered it, and it is never used again after this drop.
        unsafe { ManuallyDrop::drop(&mut self.stack) };
    }
}

/// A previous action, saved before our handler is installed and never changed after.
struct Saved {
    /// Set (Release) once `action` is written; the handler reads `action` only after seeing it
    /// (Acquire).
    ready: AtomicBool,
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: `action` is written once, inside `INSTALL.call_once`, before `ready` is set with
// Release; it is read only after `ready` is seen with Acquire, and never written again.
unsafe impl Sync for Saved {}

/// The actions that were in place before ours, in the order of [`SIGNALS`].
static SAVED: [Saved; 2] = [const {
    Saved { ready: AtomicBool::new(false), action: UnsafeCell::new(MaybeUninit::uninit()) }
}; 2];

fn install_one(sig: c_int, saved: &Saved) {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, core::ptr::null(), old.as_mut_ptr()) };
    assert_eq!(rc, 0, "sigaction({sig}) query failed: {}", std::io::Error::last_os_error());
    // SAFETY: we are inside INSTALL.call_once, the only writer, and `ready` is still false, so
    // no reader looks at `action` yet.
    unsafe { (*saved.action.get()).write(old.assume_init()) };
    // Release: pairs with the Acquire in `previous`; the handler that reads it can only run
    // after the sigaction call below, which comes after this store.
    saved.ready.store(true, Ordering::Release);

    // SAFETY: all-zero is a valid sigaction (empty mask, no flags); we fill what we need.
    let mut new: libc::sigaction = unsafe { core::mem::zeroed() };
    new.sa_sigaction = handle_fault as *const () as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `new.sa_mask` is a valid sigset_t to write.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    // SAFETY: `new` is a fully initialised action whose handler has the SA_SIGINFO signature.
    let rc = unsafe { libc::sigaction(sig, &new, core::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction({sig}) failed: {}", std::io::Error::last_os_error());
}

/// The saved previous action for `sig`, once it has been published.
fn previous(sig: c_int) -> Option<&'static libc::sigaction> {
    let i = SIGNALS.iter().position(|&s| s == sig)?;
    let saved = &SAVED[i];
    // Acquire: pairs with the Release in `install_one`, so `action` is fully written.
    if !saved.ready.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `ready` is set, so `action` was initialised and is never written again.
    Some(unsafe { (*saved.action.get()).assume_init_ref() })
}

/// The signal handler.
///
/// Runs on: the thread's alternate signal stack. Allocates: no. Async-signal-safe.
///
/// # Safety
/// Only the kernel calls it, as an `SA_SIGINFO` handler for `SIGSEGV`/`SIGBUS` (or a handler
/// installed after ours chains to it with the arguments it received).
unsafe extern "C" fn handle_fault(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: `info` and `ctx` come from the kernel for this delivery (or are null).
    if let Some(overflow) = unsafe { goroutine_overflow(info, ctx) } {
        report_overflow_and_abort(&overflow);
    }
    // SAFETY: same arguments, forwarded as received.
    unsafe { chain(sig, info, ctx) };
    // A chained handler that returns expects the interrupted code to see its errno unchanged.
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// The current goroutine's info, if this fault is a hit on its guard.
///
/// # Safety
/// `info` and `ctx` must be null or the siginfo and ucontext of the signal being handled on this
/// thread.
unsafe fn goroutine_overflow(info: *const siginfo_t, ctx: *mut c_void) -> Option<StackInfo> {
    // Async-signal-safe: CURRENT is a const-initialised thread-local without a destructor, so
    // this is a plain load from this thread's TLS block (see the module docs).
    let cur = CURRENT.get();
    if cur.is_null() || info.is_null() {
        return None;
    }
    // SAFETY: non-null, given by the kernel for this signal.
    let info = unsafe { &*info };
    if info.si_code <= 0 {
        // Sent by a process: si_addr is not an address.
        return None;
    }
    // SAFETY: for a kernel-generated SIGSEGV/SIGBUS the union holds the fault address.
    let addr = unsafe { info.si_addr() } as usize;
    // SAFETY: set_current's contract: a current pointer is valid and unchanged while current,
    // and only this thread changes it, so the goroutine cannot have switched away meanwhile.
    let stack = unsafe { *cur };
    // SAFETY: `ctx` is null or this signal's ucontext.
    let sp = unsafe { interrupted_sp(ctx) };
    is_guard_hit(&stack, addr, sp).then_some(stack)
}

/// The classification rule of the module docs ("What counts as a guard hit").
fn is_guard_hit(stack: &StackInfo, addr: usize, sp: Option<usize>) -> bool {
    if (stack.guard_lo..stack.guard_hi).contains(&addr) {
        return true;
    }
    let window_lo = stack.guard_lo.saturating_sub(GUARD_SLACK);
    (window_lo..stack.guard_lo).contains(&addr)
        && sp.is_some_and(|sp| (window_lo..stack.guard_hi).contains(&sp))
}

/// The stack pointer of the interrupted code.
///
/// # Safety
/// `ctx` must be null or point to the `ucontext_t` of the signal being handled.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn interrupted_sp(ctx: *mut c_void) -> Option<usize> {
    if ctx.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `ctx` is this signal's ucontext_t.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    Some(uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize)
}

/// The stack pointer of the interrupted code.
///
/// # Safety
/// `ctx` must be null or point to the `ucontext_t` of the signal being handled.
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
unsafe fn interrupted_sp(ctx: *mut c_void) -> Option<usize> {
    if ctx.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `ctx` is this signal's ucontext_t.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    Some(uc.uc_mcontext.sp as usize)
}

/// Writes the overflow line to stderr and aborts.
///
/// Runs on: the alternate signal stack. Allocates: no.
fn report_overflow_and_abort(stack: &StackInfo) -> ! {
    let line = overflow_line(stack);
    write_stderr(line.as_bytes());
    // SAFETY: abort is async-signal-safe and ends the process.
    unsafe { libc::abort() }
}

/// `goroutine N: native stack overflow (stack limit S bytes)\n`, formatted without allocating.
fn overflow_line(stack: &StackInfo) -> Line {
    let mut line = Line::new();
    line.push(b"goroutine ");
    line.push_u64(stack.goroutine);
    line.push(b": native stack overflow (stack limit ");
    line.push_u64(stack.size as u64);
    line.push(b" bytes)\n");
    line
}

/// Writes all of `bytes` to fd 2 with raw `write` calls, retrying on EINTR and short writes.
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length; write is async-signal-safe.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = bytes.get(n as usize..).unwrap_or_default();
        // SAFETY: __errno_location returns this thread's errno.
        } else if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// A fixed buffer for one line; bytes past its capacity are dropped (never a panic).
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { buf: [0; 128], len: 0 }
    }

    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20]; // u64::MAX has 20 decimal digits
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Hands a fault that is not ours to the action that was there before.
///
/// # Safety
/// The arguments must be those of the signal being handled on this thread.
unsafe fn chain(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let Some(prev) = previous(sig) else {
        // SAFETY: forwarded as received.
        return unsafe { die_by_default(sig, info) };
    };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL
        || handler == libc::SIG_IGN
        || handler == handle_fault as *const () as libc::sighandler_t
    {
        // SAFETY: forwarded as received.
        return unsafe { die_by_default(sig, info) };
    }
    if prev.sa_flags & libc::SA_RESETHAND != 0 {
        // The kernel would have reset the disposition on delivery to the previous handler.
        restore_default(sig);
    }
    // SAFETY: blocking more signals is always allowed; the kernel restores this thread's mask
    // from the ucontext when the handler returns.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &prev.sa_mask, core::ptr::null_mut()) };
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its handler has the
        // three-argument signature; it was a valid handler when saved and handlers are code,
        // never unmapped while installed.
        let f: unsafe extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(handler) };
        // SAFETY: the handler receives exactly what the kernel gave us for this signal.
        unsafe { f(sig, info, ctx) };
    } else {
        // SAFETY: without SA_SIGINFO the handler has the one-argument signature (same reason).
        let f: unsafe extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        // SAFETY: the handler receives the signal number, as the kernel would have passed.
        unsafe { f(sig) };
    }
}

/// Lets the default action of `sig` end the process, as if we had never been installed.
///
/// # Safety
/// `info` must be null or the siginfo of the signal being handled on this thread.
unsafe fn die_by_default(sig: c_int, info: *const siginfo_t) {
    restore_default(sig);
    // SAFETY: non-null `info` is this signal's siginfo.
    let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
    if sent {
        // Sent by a process: returning would not re-raise it. It stays pending (blocked while
        // we handle it) and is delivered with SIG_DFL as soon as the handler returns.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
    // A fault re-executes the faulting instruction on return and dies with the default action.
}

/// Sets the disposition of `sig` back to `SIG_DFL`. Async-signal-safe.
fn restore_default(sig: c_int) {
    // SAFETY: all-zero is a valid sigaction: SIG_DFL (0), empty mask, no flags.
    let dfl: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: `dfl` is a valid action; sigaction is async-signal-safe.
    unsafe { libc::sigaction(sig, &dfl, core::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: StackInfo =
        StackInfo { guard_lo: 0x10_0000, guard_hi: 0x10_1000, size: 0x4_0000, goroutine: 7 };

    #[test]
    fn guard_page_is_a_hit_wherever_sp_is() {
        for addr in [INFO.guard_lo, INFO.guard_lo + 8, INFO.guard_hi - 1] {
            assert!(is_guard_hit(&INFO, addr, None), "{addr:#x}");
            assert!(is_guard_hit(&INFO, addr, Some(INFO.guard_hi + 0x100)), "{addr:#x}");
        }
        assert!(!is_guard_hit(&INFO, INFO.guard_hi, Some(INFO.guard_hi)));
        assert!(!is_guard_hit(&INFO, INFO.guard_hi + 0x1000, Some(INFO.guard_lo)));
    }

    #[test]
    fn below_the_guard_needs_sp_out_of_the_stack() {
        let below = INFO.guard_lo - 0x2000;
        // sp has left the usable stack: a frame stepped over the guard.
        assert!(is_guard_hit(&INFO, below, Some(below)));
        assert!(is_guard_hit(&INFO, below, Some(INFO.guard_hi - 8)));
        assert!(is_guard_hit(&INFO, INFO.guard_lo - GUARD_SLACK, Some(below)));
        // sp still in the usable stack: a stray pointer, not an overflow.
        assert!(!is_guard_hit(&INFO, below, Some(INFO.guard_hi)));
        assert!(!is_guard_hit(&INFO, below, Some(INFO.guard_hi + 0x800)));
        // No sp known: only the guard itself counts.
        assert!(!is_guard_hit(&INFO, below, None));
        // Beyond the slack, or sp beyond it.
        assert!(!is_guard_hit(&INFO, INFO.guard_lo - GUARD_SLACK - 1, Some(below)));
        assert!(!is_guard_hit(&INFO, below, Some(INFO.guard_lo - GUARD_SLACK - 8)));
    }

    #[test]
    fn slack_window_does_not_wrap_at_address_zero() {
        let low = StackInfo { guard_lo: 0x1000, guard_hi: 0x2000, size: 0x4000, goroutine: 1 };
        assert!(is_guard_hit(&low, 0x800, Some(0x900)));
        assert!(!is_guard_hit(&low, usize::MAX - 10, Some(0x900)));
    }

    #[test]
    fn overflow_line_matches_the_documented_format() {
        for (g, size) in [(0u64, 0usize), (42, 65536), (u64::MAX, usize::MAX)] {
            let info = StackInfo { guard_lo: 0, guard_hi: 0, size, goroutine: g };
            let want = format!("goroutine {g}: native stack overflow (stack limit {size} bytes)\n");
            assert_eq!(std::str::from_utf8(overflow_line(&info).as_bytes()).unwrap(), want);
        }
    }

    #[test]
    fn line_truncates_instead_of_panicking() {
        let mut line = Line::new();
        for _ in 0..10 {
            line.push(b"0123456789abcdef");
        }
        assert_eq!(line.as_bytes().len(), 128);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it maps a goroutine stack (mmap with MAP_NORESERVE, mprotect)"
    )]
    fn for_stack_describes_the_stack() {
        let s = Stack::new(64 * 1024).unwrap();
        let info = StackInfo::for_stack(&s, 9);
        assert_eq!((info.guard_lo, info.guard_hi), s.guard_range());
        assert_eq!(info.guard_hi, s.lo());
        assert_eq!(info.size, 64 * 1024);
        assert_eq!(info.goroutine, 9);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it calls sigaltstack")]
    fn altstack_is_mapped_on_a_thread_without_one_and_unregistered_on_drop() {
        /// Registers `ss` (or disables the alternate stack) for this thread.
        fn set_altstack(ss: &libc::stack_t) {
            // SAFETY: callers pass a disable request or std's stack, which std keeps mapped
            // until this thread exits.
            let rc = unsafe { libc::sigaltstack(ss, core::ptr::null_mut()) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
        // A std thread may or may not have std's alternate stack; take it away (restoring it
        // afterwards) so that ensure_altstack must map its own.
        std::thread::spawn(|| {
            let std_alt = current_altstack();
            let off = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            set_altstack(&off);
            assert!(!has_altstack());

            ensure_altstack();
            let cur = current_altstack();
            assert_eq!(cur.ss_flags & libc::SS_DISABLE, 0);
            assert_eq!(cur.ss_size, ALTSTACK_SIZE);
            let ours = ALTSTACK.with(|a| a.borrow().as_ref().map(AltStack::lo));
            assert_eq!(Some(cur.ss_sp as usize), ours);
            // A second call keeps it.
            ensure_altstack();
            let again = ALTSTACK.with(|a| a.borrow().as_ref().map(AltStack::lo));
            assert_eq!(again, ours);
            // Someone disables it: the next call registers the same one again.
            set_altstack(&off);
            ensure_altstack();
            assert_eq!(Some(current_altstack().ss_sp as usize), ours);

            // Dropping ours unregisters it; then give std its own back for its thread exit.
            ALTSTACK.with(|a| a.borrow_mut().take());
            assert!(!has_altstack());
            if std_alt.ss_flags & libc::SS_DISABLE == 0 {
                set_altstack(&std_alt);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn set_current_is_per_thread() {
        let info = INFO;
        // SAFETY: `info` outlives its time as current (reset to null below).
        unsafe { set_current(&info) };
        assert_eq!(CURRENT.get(), &info as *const StackInfo);
        std::thread::spawn(|| assert!(CURRENT.get().is_null())).join().unwrap();
        // SAFETY: null is always allowed.
        unsafe { set_current(core::ptr::null()) };
        assert!(CURRENT.get().is_null());
    }
}
