//! Asynchronous preemption: the signal that stops a goroutine which never polls.
//!
//! A scheduler that has asked a goroutine to stop and got no answer at a synchronous safepoint
//! sends [`SIGPREEMPT`] to the goroutine's thread ([`signal_thread`], one `tgkill`). The handler
//! runs on the thread's alternate signal stack and decides whether the interrupted point may be
//! held in place:
//!
//! 1. **Arch's part** ([`classify`]): the thread is on a goroutine stack (the stack the
//!    scheduler registered with [`crate::signal::set_current`], so not g0 and not a signal
//!    stack); the interrupted pc is not inside the runtime's own assembly (a context switch, the
//!    trampoline itself) nor inside the C library (malloc's arena locks, stdio's locks: a held
//!    thread must not keep a lock its requester may need) nor inside a call to a global
//!    allocator wrapped in [`PreemptSafe`]; and the stack has room below the red zone for the
//!    trampoline's frame plus [`HOLD_STACK`] bytes for the hold.
//! 2. **The scheduler's part** (the `decide` hook given to [`install`]): the verdict of step 1,
//!    the M's runtime critical sections, the goroutine's status, whether anyone still waits.
//!
//! If both agree, the handler edits the signal context so that the goroutine, when the handler
//! returns, calls a trampoline (see `x86_64.rs` and `aarch64.rs`) with every general-purpose
//! register, the flags and the vector state saved on the goroutine's own stack, which calls the
//! `hold` hook; when the hold returns everything is restored and the interrupted instruction
//! resumes. (On x86_64 the trampoline saves and restores the registers itself; on aarch64 the
//! handler copies the kernel's signal frame to the goroutine's stack and the trampoline resumes
//! with `rt_sigreturn` on it.) The hold runs
//! on the goroutine's stack on the same thread, as an ordinary function call made by the
//! interrupted code: no goroutine switch, no thread change.
//!
//! # Async-signal safety
//!
//! The handler allocates nothing and takes no lock. It reads the thread-local current-stack
//! pointer (see [`crate::signal`]), statics written before the handler was installed, and calls
//! the `decide` hook, which must be async-signal-safe too (atomics only). It saves and restores
//! `errno`.
//!
//! # System calls
//!
//! The handler is installed with `SA_RESTART`, so most interrupted system calls restart by
//! themselves. Those that do not (futex waits with a timeout, `nanosleep`, `epoll_wait`) return
//! `EINTR`; the runtime's own waits ([`crate::Note`], [`crate::futex_wait`]) treat it as a
//! spurious wake-up and re-check, and std's `thread::sleep` retries.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering, compiler_fence};
use std::sync::Once;

use libc::{c_int, c_void, siginfo_t};

use crate::signal::StackInfo;

/// The preemption signal. `SIGURG`, as Go uses: its default action is to ignore it, nothing in
/// a normal program sends it to a thread, and debuggers pass it through.
pub const SIGPREEMPT: c_int = libc::SIGURG;

/// Stack the hold itself may use below the trampoline's frame. A goroutine interrupted with
/// less room than the trampoline's frame, the red zone and this is not held.
pub const HOLD_STACK: usize = 4096;

/// Why the handler (its architecture part) declined to hold an interrupted thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// The thread is not on a goroutine stack: on g0 (the thread's own stack), on a signal
    /// stack, or not a goroutine thread at all.
    NotOnGoroutineStack,
    /// Inside the runtime's own assembly: a context switch or the preemption trampoline.
    InRuntimeAsm,
    /// Inside the C library, which may hold a lock (malloc, stdio) the requester needs.
    InLibc,
    /// Inside a call to a global allocator wrapped in [`PreemptSafe`], which may hold the
    /// allocator's lock.
    InAllocator,
    /// The goroutine stack lacks room for the trampoline and the hold.
    NoRoom,
    /// The kernel gave no context to edit.
    NoContext,
    /// The signal context holds state this target cannot carry onto the goroutine's stack
    /// (aarch64: an `extra_context` record, or an enabled guarded control stack; see
    /// `aarch64.rs`). Never on x86_64.
    UnsupportedContext,
}

/// What the scheduler provides: the decision and the hold.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// Called by the handler for every preemption signal this process sent itself, with the
    /// architecture's verdict; returns whether to hold the goroutine. Runs in the signal
    /// handler, on the alternate signal stack: it must be async-signal-safe (atomics and plain
    /// loads only, no allocation, no lock).
    pub decide: fn(Result<(), Decline>) -> bool,
    /// Called on the goroutine's stack, with every register saved, when `decide` said yes.
    /// Returning resumes the goroutine at the interrupted instruction. It runs inside whatever
    /// the goroutine was doing: it must not switch goroutines, unwind, or take a lock that user
    /// code may hold.
    pub hold: fn(),
}

/// Returned by [`install`] when hooks other than the given ones are installed already.
#[derive(Debug, Clone, Copy)]
pub struct HooksAlreadySet;

impl core::fmt::Display for HooksAlreadySet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the preemption signal's handler is installed already, with other hooks")
    }
}

impl std::error::Error for HooksAlreadySet {}

/// The hooks as function addresses: 0 until [`install`] stores them (Release, before the
/// handler is installed; read with Acquire by the handler and the trampoline).
static DECIDE: AtomicUsize = AtomicUsize::new(0);
static HOLD: AtomicUsize = AtomicUsize::new(0);

/// Executable ranges of the C library, found once at install (at most four; unused are (0, 0)).
static LIBC_TEXT: [(AtomicUsize, AtomicUsize); 4] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 4];

/// The `SIGPREEMPT` action that was in place before ours, for signals not sent by us.
static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// Installs the preemption handler (once per process) with `hooks`. A second call with the same
/// hooks is a no-op; with other hooks it fails, because one handler serves every runtime of the
/// process.
///
/// The handler is installed with `SA_SIGINFO | SA_ONSTACK | SA_RESTART`. Every thread that runs
/// goroutines needs an alternate signal stack ([`crate::signal::ensure_altstack`]).
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use safepoint_arch::preempt::{Decline, Hooks, current_tid, install, signal_thread};
/// static ASKED: AtomicUsize = AtomicUsize::new(0);
/// fn decide(verdict: Result<(), Decline>) -> bool {
///     // The main thread is on no goroutine stack: the architecture's part declines.
///     assert_eq!(verdict, Err(Decline::NotOnGoroutineStack));
///     ASKED.fetch_add(1, Ordering::Relaxed);
///     false
/// }
/// fn hold() {}
/// safepoint_arch::signal::ensure_altstack();
/// install(Hooks { decide, hold }).unwrap();
/// install(Hooks { decide, hold }).unwrap(); // the same hooks again: nothing to do
/// assert!(signal_thread(current_tid()));
/// // A signal a thread sends itself is handled before the system call returns.
/// assert_eq!(ASKED.load(Ordering::Relaxed), 1);
/// ```
pub fn install(hooks: Hooks) -> Result<(), HooksAlreadySet> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        crate::imp::detect_save_area();
        find_libc_text();
        find_malloc();
        // Release: pairs with the Acquire loads in the handler and `run_hold`.
        DECIDE.store(hooks.decide as usize, Ordering::Release);
        HOLD.store(hooks.hold as usize, Ordering::Release);
        install_handler();
    });
    let same = DECIDE.load(Ordering::Acquire) == hooks.decide as usize
        && HOLD.load(Ordering::Acquire) == hooks.hold as usize;
    if same { Ok(()) } else { Err(HooksAlreadySet) }
}

fn install_handler() {
    let mut old = core::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: all-zero is a valid sigaction (empty mask, no flags); we fill what we need.
    let mut new: libc::sigaction = unsafe { core::mem::zeroed() };
    new.sa_sigaction = handle_preempt as *const () as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: `new.sa_mask` is a valid sigset_t to write.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    // SAFETY: `new` is a fully initialised action whose handler has the SA_SIGINFO signature;
    // `old` is valid for a write.
    let rc = unsafe { libc::sigaction(SIGPREEMPT, &new, old.as_mut_ptr()) };
    assert_eq!(rc, 0, "sigaction(SIGURG) failed: {}", std::io::Error::last_os_error());
    // SAFETY: the call succeeded, so the kernel filled `old`.
    let _ = PREVIOUS.set(unsafe { old.assume_init() });
}

/// The calling thread's kernel id, for [`signal_thread`].
///
/// ```
/// let main = safepoint_arch::preempt::current_tid();
/// let other = std::thread::spawn(safepoint_arch::preempt::current_tid).join().unwrap();
/// assert!(main > 0 && other > 0 && main != other);
/// ```
pub fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Sends [`SIGPREEMPT`] to thread `tid` of this process. False if the thread does not exist
/// (any more).
///
/// ```
/// use safepoint_arch::preempt::{current_tid, signal_thread};
/// // Without the handler installed the signal is ignored (SIGURG's default action).
/// assert!(signal_thread(current_tid()));
/// let gone = std::thread::spawn(current_tid).join().unwrap();
/// std::thread::sleep(std::time::Duration::from_millis(10));
/// assert!(!signal_thread(gone)); // that thread has exited
/// ```
pub fn signal_thread(tid: i32) -> bool {
    // SAFETY: tgkill only sends a signal; with our own pid it cannot reach another process.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, SIGPREEMPT) == 0 }
}

/// Bytes of the interrupted stack the trampoline and the hold need below the stack pointer.
///
/// ```
/// // The trampoline's frame and the hold: a goroutine stack must keep this much below its
/// // stack pointer for an asynchronous preemption to be taken.
/// let n = safepoint_arch::preempt::headroom_needed();
/// assert!(n > 0 && n < safepoint_arch::stack::MIN_STACK_SIZE);
/// ```
pub fn headroom_needed() -> usize {
    crate::imp::trampoline_frame_bytes() + HOLD_STACK
}

/// The architecture's verdict on holding a thread interrupted at `pc` with stack pointer `sp`,
/// when the goroutine stack registered for the thread is `stack` (None on g0). `asm` are the
/// runtime's assembly ranges, `libc` the C library's code, `in_allocator` whether the thread is
/// inside a [`PreemptSafe`] allocator's call, `needed` the headroom the hold takes.
///
/// ```
/// use safepoint_arch::preempt::{Decline, classify, headroom_needed};
/// use safepoint_arch::signal::StackInfo;
/// use safepoint_arch::stack::Stack;
/// let stack = Stack::new(64 * 1024).unwrap();
/// let info = StackInfo::for_stack(&stack, 1);
/// let need = headroom_needed();
/// let sp = stack.top() - 1024; // on the goroutine's stack, with room below
/// assert_eq!(classify(0x1000, sp, Some(&info), &[], &[], false, need), Ok(()));
/// assert_eq!(classify(0x1000, sp, None, &[], &[], false, need), Err(Decline::NotOnGoroutineStack));
/// let libc = [(0x1000, 0x2000)];
/// assert_eq!(classify(0x1800, sp, Some(&info), &[], &libc, false, need), Err(Decline::InLibc));
/// assert_eq!(classify(0x1000, sp, Some(&info), &[], &[], true, need), Err(Decline::InAllocator));
/// assert_eq!(
///     classify(0x1000, stack.lo() + 8, Some(&info), &[], &[], false, need),
///     Err(Decline::NoRoom)
/// );
/// ```
pub fn classify(
    pc: usize,
    sp: usize,
    stack: Option<&StackInfo>,
    asm: &[(usize, usize)],
    libc: &[(usize, usize)],
    in_allocator: bool,
    needed: usize,
) -> Result<(), Decline> {
    let Some(stack) = stack else { return Err(Decline::NotOnGoroutineStack) };
    let lo = stack.guard_hi;
    let top = stack.guard_hi.saturating_add(stack.size);
    if sp < lo || sp > top {
        return Err(Decline::NotOnGoroutineStack);
    }
    if asm.iter().any(|&(a, b)| (a..b).contains(&pc)) {
        return Err(Decline::InRuntimeAsm);
    }
    if libc.iter().any(|&(a, b)| (a..b).contains(&pc)) {
        return Err(Decline::InLibc);
    }
    if in_allocator {
        return Err(Decline::InAllocator);
    }
    if sp - lo < needed {
        return Err(Decline::NoRoom);
    }
    Ok(())
}

/// Records the executable segments of the C library (glibc's `libc.so.6`, found by name among
/// the loaded objects). In a statically linked program nothing is found and nothing is declined
/// for being in libc.
fn find_libc_text() {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        _data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the callback.
        let info = unsafe { &*info };
        if info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        let name = unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
        let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        if !file.starts_with(b"libc.so") {
            return 0;
        }
        let mut slot = 0;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 && slot < LIBC_TEXT.len()
            {
                let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                LIBC_TEXT[slot].0.store(start, Ordering::Relaxed);
                LIBC_TEXT[slot].1.store(start + ph.p_memsz as usize, Ordering::Relaxed);
                slot += 1;
            }
        }
        1
    }
    // SAFETY: the callback only reads what the loader passes it and writes our statics.
    unsafe { libc::dl_iterate_phdr(Some(each), core::ptr::null_mut()) };
}

/// Set by [`install`] when the process's `malloc` is not the C library's: a sanitizer's
/// (AddressSanitizer intercepts it inside the executable), an allocator linked statically or
/// preloaded, or a statically linked C library.
static MALLOC_OUTSIDE_LIBC: AtomicBool = AtomicBool::new(false);

/// Looks up the `malloc` that calls in this process resolve to and records whether it lies
/// outside the C library's code (see [`malloc_outside_libc`]).
fn find_malloc() {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
    let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize;
    // Not found (a static program without a dynamic symbol table) counts as outside: with no
    // C library's text known, the handler's check protects no malloc.
    let inside = addr != 0 && libc_text().iter().any(|&(a, b)| (a..b).contains(&addr));
    MALLOC_OUTSIDE_LIBC.store(!inside, Ordering::Relaxed);
}

/// Whether `malloc` lives outside the C library (valid after [`install`]): then the handler's
/// check "not inside the C library" does not keep a held thread from holding malloc's lock,
/// and a scheduler should not hold goroutines in place (the requester of a stop may call
/// `malloc` while they are held). True under AddressSanitizer, with an allocator linked in
/// statically or preloaded, and in a statically linked program.
///
/// ```
/// use safepoint_arch::preempt::malloc_outside_libc;
/// // A dynamically linked glibc program without a sanitizer uses glibc's malloc (the answer
/// // is meaningful once the handler is installed, which a runtime does when it starts).
/// let _ = malloc_outside_libc();
/// ```
pub fn malloc_outside_libc() -> bool {
    MALLOC_OUTSIDE_LIBC.load(Ordering::Relaxed)
}

thread_local! {
    /// How many [`PreemptSafe`] allocator calls this thread is inside (nested only if an
    /// allocator allocates). `const`-initialised and without a destructor, like the current
    /// stack (see "Async-signal safety" in [`crate::signal`]): the handler may read it, and
    /// the allocator may use it while the thread is being torn down.
    static ALLOC_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// A global allocator wrapper that keeps the preemption signal from holding a goroutine inside
/// the allocator.
///
/// A goroutine held in place by the preemption signal stays at the interrupted instruction
/// while the runtime that asked for it (a stop of the world, a stack scan) goes on, and that
/// runtime allocates. If the goroutine was inside the allocator and holding its lock, the
/// runtime would wait for that lock for ever. The handler declines inside the C library, which
/// covers the default allocator (glibc's `malloc`); an allocator linked into the program
/// (jemalloc, mimalloc, a sanitizer's) is code the handler cannot tell from the program's own.
/// Wrap it, and the handler declines while any call into it is under way:
///
/// ```
/// use safepoint_arch::preempt::PreemptSafe;
/// use std::alloc::System;
///
/// // In the program's root: `#[global_allocator] static ALLOC: ... = PreemptSafe(System);`
/// static ALLOC: PreemptSafe<System> = PreemptSafe(System);
///
/// use std::alloc::{GlobalAlloc, Layout};
/// let layout = Layout::from_size_align(64, 8).unwrap();
/// // SAFETY: the layout has a nonzero size, and the block is freed with the same layout.
/// unsafe {
///     let p = ALLOC.alloc(layout);
///     assert!(!p.is_null());
///     ALLOC.dealloc(p, layout);
/// }
/// ```
///
/// The cost is a thread-local increment and decrement around each call.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreemptSafe<A>(pub A);

/// Marks the calling thread as inside the allocator while it lives.
struct InAllocator;

impl InAllocator {
    #[inline(always)]
    fn enter() -> InAllocator {
        ALLOC_DEPTH.with(|d| d.set(d.get() + 1));
        // The handler runs on this thread: a compiler fence orders the mark before the call.
        compiler_fence(Ordering::SeqCst);
        InAllocator
    }
}

impl Drop for InAllocator {
    #[inline(always)]
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        ALLOC_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

// SAFETY: every method forwards to the wrapped allocator with the same arguments and returns
// its result, so `A`'s guarantees are this type's; the depth count changes nothing it returns.
unsafe impl<A: GlobalAlloc> GlobalAlloc for PreemptSafe<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _in = InAllocator::enter();
        // SAFETY: the caller's contract for `alloc` is `A::alloc`'s.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _in = InAllocator::enter();
        // SAFETY: the caller's contract for `alloc_zeroed` is `A::alloc_zeroed`'s.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _in = InAllocator::enter();
        // SAFETY: the caller's contract for `dealloc` is `A::dealloc`'s.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _in = InAllocator::enter();
        // SAFETY: the caller's contract for `realloc` is `A::realloc`'s.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

fn libc_text() -> [(usize, usize); 4] {
    core::array::from_fn(|i| {
        (LIBC_TEXT[i].0.load(Ordering::Relaxed), LIBC_TEXT[i].1.load(Ordering::Relaxed))
    })
}

/// Called by the trampoline (through `hold_entry`): runs the scheduler's hold.
pub(crate) fn run_hold() {
    // Acquire: pairs with the Release in `install`.
    let f = HOLD.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: a nonzero HOLD was stored from a `fn()` in `install`.
        let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
        f();
    }
}

/// The preemption signal handler.
///
/// Runs on: the alternate signal stack. Allocates: no. Async-signal-safe.
///
/// # Safety
/// Only the kernel calls it, as an `SA_SIGINFO` handler for [`SIGPREEMPT`].
unsafe extern "C" fn handle_preempt(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: `info` is null or this signal's siginfo.
    let ours = !info.is_null() && unsafe { is_from_us(&*info) };
    if ours {
        // SAFETY: `ctx` is null or this signal's ucontext.
        unsafe { preempt(ctx as *mut libc::ucontext_t) };
    } else {
        // SAFETY: forwarded as received.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Whether this process sent the signal with `tgkill` (not the kernel, not another process).
fn is_from_us(info: &siginfo_t) -> bool {
    // SAFETY: for SI_TKILL the union holds the sender's pid; getpid is async-signal-safe.
    info.si_code == libc::SI_TKILL && unsafe { info.si_pid() == libc::getpid() }
}

/// The decision and, if it says yes, the redirection to the trampoline.
///
/// # Safety
/// `uc` is null or the ucontext of the signal being handled on this thread.
unsafe fn preempt(uc: *mut libc::ucontext_t) {
    let verdict = if uc.is_null() {
        Err(Decline::NoContext)
    } else {
        // SAFETY: `uc` is this signal's ucontext.
        let (pc, sp) = unsafe { crate::imp::interrupted_pc_sp(uc) };
        let cur = crate::signal::current_info();
        // SAFETY: set_current's contract: a current pointer is valid and unchanged while
        // current, and only this thread changes it.
        let stack = unsafe { cur.as_ref() };
        let asm = crate::imp::runtime_asm_ranges();
        let in_allocator = ALLOC_DEPTH.with(Cell::get) != 0;
        classify(pc, sp, stack, &asm, &libc_text(), in_allocator, headroom_needed()).and_then(
            |()| {
                // SAFETY: `uc` is this signal's ucontext.
                if unsafe { crate::imp::context_movable(uc) } {
                    Ok(())
                } else {
                    Err(Decline::UnsupportedContext)
                }
            },
        )
    };
    // Acquire: pairs with the Release in `install`.
    let decide = DECIDE.load(Ordering::Acquire);
    if decide == 0 {
        return;
    }
    // SAFETY: a nonzero DECIDE was stored from a `fn(Result<(), Decline>) -> bool`.
    let decide: fn(Result<(), Decline>) -> bool = unsafe { core::mem::transmute(decide) };
    if decide(verdict) && verdict.is_ok() {
        // SAFETY: classify checked that the interrupted stack pointer lies in the current
        // goroutine's stack with the trampoline's frame and HOLD_STACK of room below it; the
        // goroutine's stack is used by nothing but this thread while it runs.
        unsafe { crate::imp::redirect_to_trampoline(uc) };
    }
}

/// Hands a `SIGURG` we did not send to whoever handled it before; ignores it otherwise (the
/// default action of `SIGURG` is to ignore it).
///
/// # Safety
/// The arguments must be those of the signal being handled on this thread.
unsafe fn chain(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    let Some(prev) = PREVIOUS.get() else { return };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: installed with SA_SIGINFO, so it has the three-argument signature.
        let f: unsafe extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(handler) };
        // SAFETY: the handler receives what the kernel gave us.
        unsafe { f(sig, info, ctx) };
    } else {
        // SAFETY: without SA_SIGINFO the handler takes the signal number.
        let f: unsafe extern "C" fn(c_int) = unsafe { core::mem::transmute(handler) };
        // SAFETY: as the kernel would have called it.
        unsafe { f(sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: StackInfo =
        StackInfo { guard_lo: 0x10_0000, guard_hi: 0x10_1000, size: 0x4_0000, goroutine: 3 };
    const ASM: [(usize, usize); 1] = [(0x5000, 0x5100)];
    const LIBC: [(usize, usize); 1] = [(0x9000, 0xA000)];
    const NEED: usize = 0x2000;

    fn v(pc: usize, sp: usize, s: Option<&StackInfo>) -> Result<(), Decline> {
        classify(pc, sp, s, &ASM, &LIBC, false, NEED)
    }

    #[test]
    fn user_code_on_a_goroutine_stack_with_room_is_accepted() {
        assert_eq!(v(0x7000, 0x12_0000, Some(&STACK)), Ok(()));
        assert_eq!(v(0x7000, STACK.guard_hi + NEED, Some(&STACK)), Ok(()));
    }

    #[test]
    fn g0_and_signal_stacks_are_declined() {
        // No current goroutine: g0.
        assert_eq!(v(0x7000, 0x12_0000, None), Err(Decline::NotOnGoroutineStack));
        // A goroutine is current but sp is elsewhere (the alternate signal stack, or g0
        // between set_current and the switch).
        assert_eq!(v(0x7000, 0x90_0000, Some(&STACK)), Err(Decline::NotOnGoroutineStack));
        assert_eq!(v(0x7000, STACK.guard_lo + 8, Some(&STACK)), Err(Decline::NotOnGoroutineStack));
    }

    #[test]
    fn runtime_asm_libc_and_low_stack_are_declined() {
        assert_eq!(v(0x5000, 0x12_0000, Some(&STACK)), Err(Decline::InRuntimeAsm));
        assert_eq!(v(0x50ff, 0x12_0000, Some(&STACK)), Err(Decline::InRuntimeAsm));
        assert_eq!(v(0x5100, 0x12_0000, Some(&STACK)), Ok(()));
        assert_eq!(v(0x9800, 0x12_0000, Some(&STACK)), Err(Decline::InLibc));
        assert_eq!(v(0x7000, STACK.guard_hi + NEED - 8, Some(&STACK)), Err(Decline::NoRoom));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it reads the addresses of the assembly's symbols (extern statics)"
    )]
    fn real_ranges_cover_the_switch_and_the_trampoline_and_libc_is_found() {
        let asm = crate::imp::runtime_asm_ranges();
        for (a, b) in asm {
            assert!(a < b && b - a < 4096, "{a:#x}..{b:#x}");
        }
        assert!(asm[0].0 == crate::switch as *const () as usize);
        find_libc_text();
        // A glibc test binary links libc.so.6 dynamically.
        #[cfg(target_env = "gnu")]
        assert!(libc_text()[0].1 > libc_text()[0].0, "libc's text not found");
        // And its malloc is the C library's (no sanitizer, no interposed allocator).
        find_malloc();
        #[cfg(target_env = "gnu")]
        assert!(!malloc_outside_libc(), "this test binary's malloc is glibc's");
    }

    #[test]
    fn inside_a_wrapped_allocator_is_declined() {
        let at = |in_alloc| classify(0x7000, 0x12_0000, Some(&STACK), &ASM, &LIBC, in_alloc, NEED);
        assert_eq!(at(true), Err(Decline::InAllocator));
        assert_eq!(at(false), Ok(()));
    }

    /// The wrapper marks the thread for exactly the length of each call into the allocator it
    /// wraps, nested calls included.
    #[test]
    fn the_wrapper_marks_the_thread_during_each_call() {
        struct Probe(Cell<[u32; 4]>);
        // SAFETY: test-only; every method forwards to System.
        unsafe impl GlobalAlloc for Probe {
            unsafe fn alloc(&self, l: Layout) -> *mut u8 {
                self.record(0);
                // SAFETY: forwarded contract.
                unsafe { std::alloc::System.alloc(l) }
            }
            unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
                self.record(1);
                // SAFETY: forwarded contract.
                unsafe { std::alloc::System.alloc_zeroed(l) }
            }
            unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
                self.record(2);
                // SAFETY: forwarded contract.
                unsafe { std::alloc::System.dealloc(p, l) }
            }
            unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
                self.record(3);
                // SAFETY: forwarded contract.
                unsafe { std::alloc::System.realloc(p, l, n) }
            }
        }
        impl Probe {
            fn record(&self, i: usize) {
                let mut seen = self.0.get();
                seen[i] = ALLOC_DEPTH.with(Cell::get);
                self.0.set(seen);
            }
        }
        let a = PreemptSafe(Probe(Cell::new([0; 4])));
        let l = Layout::from_size_align(32, 8).unwrap();
        assert_eq!(ALLOC_DEPTH.with(Cell::get), 0);
        // SAFETY: nonzero sizes; each block is freed once with the layout it has.
        unsafe {
            let p = a.alloc(l);
            let q = a.alloc_zeroed(l);
            let p = a.realloc(p, l, 64);
            a.dealloc(p, Layout::from_size_align(64, 8).unwrap());
            a.dealloc(q, l);
        }
        assert_eq!(a.0.0.get(), [1, 1, 1, 1], "the depth seen inside each call");
        assert_eq!(ALLOC_DEPTH.with(Cell::get), 0, "and none after");
    }

    /// End to end, with the real signal, handler and trampoline, and test hooks: a thread on
    /// its own stack (g0) is declined; a "goroutine" on a stack registered with `set_current`
    /// is held (the hold hook runs on its stack) and resumes; one registered with too little
    /// room below its stack pointer is declined.
    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot run it: it runs the signal handler's assembly")]
    fn the_real_handler_classifies_and_holds() {
        use crate::signal::set_current;
        use crate::{Context, switch};
        use std::sync::atomic::Ordering::SeqCst;
        use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize};

        // Last verdict: 0 none, 1 ok, 2 + Decline as usize.
        static VERDICT: AtomicU32 = AtomicU32::new(0);
        // Every verdict seen since the last reset, as a bit mask of the codes.
        static SEEN: AtomicU32 = AtomicU32::new(0);
        static HOLDS: AtomicUsize = AtomicUsize::new(0);
        static HOLD_SP: AtomicUsize = AtomicUsize::new(0);
        static SPINNING: AtomicBool = AtomicBool::new(false);
        static TID: AtomicI32 = AtomicI32::new(0);
        fn decide(v: Result<(), Decline>) -> bool {
            let code = match v {
                Ok(()) => 1,
                Err(d) => 2 + d as u32,
            };
            VERDICT.store(code, SeqCst);
            SEEN.fetch_or(1 << code, SeqCst);
            v.is_ok()
        }
        fn hold() {
            let probe = 0u8;
            HOLD_SP.store(&probe as *const u8 as usize, SeqCst);
            HOLDS.fetch_add(1, SeqCst);
        }
        install(Hooks { decide, hold }).expect("only this test installs hooks here");
        crate::signal::ensure_altstack();

        // g0: nothing is current on this thread.
        VERDICT.store(0, SeqCst);
        assert!(signal_thread(current_tid()));
        assert_eq!(VERDICT.load(SeqCst), 2 + Decline::NotOnGoroutineStack as u32);

        // A goroutine-like stack, spinning in Rust code until the hold has run.
        thread_local! {
            static MAIN: core::cell::Cell<*mut Context> = const { core::cell::Cell::new(core::ptr::null_mut()) };
            static CO: core::cell::Cell<*mut Context> = const { core::cell::Cell::new(core::ptr::null_mut()) };
        }
        unsafe extern "C" fn spin(info: usize, _: usize) -> ! {
            // SAFETY: `info` outlives this coroutine's run (the test owns it).
            unsafe { set_current(info as *const StackInfo) };
            SPINNING.store(true, SeqCst);
            let t = std::time::Instant::now();
            let mut x = 0u64;
            let before = HOLDS.load(SeqCst);
            while HOLDS.load(SeqCst) == before && t.elapsed().as_secs() < 10 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            SPINNING.store(false, SeqCst);
            // SAFETY: null is always allowed.
            unsafe { set_current(core::ptr::null()) };
            // SAFETY: both contexts belong to this thread and are valid for the test.
            unsafe { switch(CO.get(), MAIN.get(), x as usize) };
            unreachable!()
        }
        let run = |room_ok: bool| -> (u32, usize) {
            let stack = crate::stack::Stack::new(256 * 1024).unwrap();
            let mut info = StackInfo::for_stack(&stack, 1);
            if !room_ok {
                // Pretend the usable stack ends a little less than the headroom below the top,
                // so below where the spinner runs.
                let room = headroom_needed() - 256;
                info.guard_hi = stack.top() - room;
                info.size = room;
            }
            let mut main = Context::default();
            // SAFETY: the stack outlives the coroutine, which ends by switching back once.
            let mut co = unsafe {
                Context::new_on_stack(stack.top(), spin, &info as *const StackInfo as usize)
            };
            MAIN.set(&mut main);
            CO.set(&mut co);
            TID.store(current_tid(), SeqCst);
            VERDICT.store(0, SeqCst);
            SEEN.store(0, SeqCst);
            let holds = HOLDS.load(SeqCst);
            let sender = std::thread::spawn(move || {
                let t = std::time::Instant::now();
                while !SPINNING.load(SeqCst) && t.elapsed().as_secs() < 10 {
                    std::hint::spin_loop();
                }
                // Until held (or, when it must be declined, until a verdict has come).
                while SPINNING.load(SeqCst) && t.elapsed().as_secs() < 10 {
                    signal_thread(TID.load(SeqCst));
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    if !room_ok && VERDICT.load(SeqCst) == 2 + Decline::NoRoom as u32 {
                        break;
                    }
                }
            });
            if !room_ok {
                // Declined: end the spinner by pretending a hold ran.
                let t = std::time::Instant::now();
                std::thread::spawn(move || {
                    while VERDICT.load(SeqCst) != 2 + Decline::NoRoom as u32
                        && t.elapsed().as_secs() < 10
                    {
                        std::hint::spin_loop();
                    }
                    HOLDS.fetch_add(1, SeqCst);
                });
            }
            // SAFETY: `co` is fresh and its stack alive.
            unsafe { switch(&mut main, &co, 0) };
            sender.join().unwrap();
            let sp = HOLD_SP.load(SeqCst);
            let held_on_stack =
                HOLDS.load(SeqCst) > holds && (stack.lo()..stack.top()).contains(&sp);
            (SEEN.load(SeqCst), held_on_stack as usize)
        };
        let (seen, held) = run(true);
        assert_ne!(seen & 1 << 1, 0, "never accepted: {seen:#b}");
        assert_eq!(held, 1, "the hold did not run on the goroutine's stack");
        let (seen, _) = run(false);
        assert_ne!(seen & 1 << (2 + Decline::NoRoom as u32), 0, "never NoRoom: {seen:#b}");
        assert_eq!(seen & 1 << 1, 0, "accepted without room: {seen:#b}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it reads the CPU's save-area size with cpuid (inline assembly)"
    )]
    fn headroom_covers_the_save_area() {
        crate::imp::detect_save_area();
        let n = headroom_needed();
        // x86_64: the FXSAVE area at least, the red zone and 17 words; aarch64: the signal
        // frame's siginfo and ucontext_t.
        #[cfg(target_arch = "x86_64")]
        assert!(n >= 512 + 128 + 17 * 8 + HOLD_STACK, "{n}");
        #[cfg(target_arch = "aarch64")]
        assert!(n >= 128 + core::mem::size_of::<libc::ucontext_t>() + HOLD_STACK, "{n}");
        assert!(n < 64 * 1024, "{n}");
    }
}
