//! Asynchronous preemption (the sched crate essay, "Safepoints and preemption", item 6): goroutines that never poll are stopped by
//! the preemption signal and held in place, for a stop of the world, a `suspend_g` and a
//! ragged barrier; every register survives; the handler never holds a goroutine inside a
//! runtime critical section or a `no_preempt` section; malloc-heavy code resumes intact.
//!
//! A goroutine that never polls keeps its P until it ends (holding in place does not switch
//! goroutines, and time slices end only at synchronous safepoints), so in these tests the
//! requesting goroutine never yields or parks while such a goroutine could be queued on its P:
//! it waits by spinning, and there is a P for each of them.

use safepoint_sched::{
    Goroutine, Runtime, for_each_p, go, no_preempt, resume_g, stop_the_world, suspend_g,
};
use std::cell::Cell;
use std::hint::black_box;
#[cfg(target_arch = "x86_64")]
use std::mem::offset_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn rt(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// Spins (no yield, no poll) until `cond` holds; panics after 20 s.
fn spin_until(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::hint::spin_loop();
    }
}

/// Spins for about `us` microseconds without polling.
fn spin_for(us: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

/// A goroutine body with no calls and no polls: an atomic add per iteration until `stop`.
fn nopoll_loop(stop: &AtomicBool, count: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        count.fetch_add(1, Ordering::Relaxed);
        black_box(count);
    }
}

#[cfg(target_arch = "aarch64")]
#[path = "async_preempt/a64.rs"]
mod a64;
#[cfg(target_arch = "aarch64")]
use a64::{Regs, int_vector_loop, int_vector_loop as register_loop};
#[cfg(target_arch = "x86_64")]
use int_xmm_loop as register_loop;

/// What the register loops keep in registers, and their counters.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(32))]
struct Regs {
    /// xmm0..xmm14.
    x: [[u64; 2]; 15],
    /// ymm0..ymm14 (floats, so that `vcmpeqps` compares them).
    y: [[f32; 8]; 15],
    /// r8..r15, rsi, rdi.
    ints: [u64; 10],
    iters: AtomicU64,
    fails: AtomicU64,
    stop: AtomicBool,
}

#[cfg(target_arch = "x86_64")]
impl Regs {
    fn new(seed: u64) -> Arc<Regs> {
        let mix = |i: u64| (seed ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        Arc::new(Regs {
            x: core::array::from_fn(|i| [mix(2 * i as u64 + 100), mix(2 * i as u64 + 101)]),
            y: core::array::from_fn(|i| core::array::from_fn(|j| (i * 8 + j) as f32 * 1.25 + 0.5)),
            ints: core::array::from_fn(|i| mix(i as u64)),
            iters: AtomicU64::new(0),
            fails: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }
}

/// A loop entirely in assembly ("frameless": no calls, no stack use) until `r.stop`: r8..r15,
/// rsi, rdi and xmm0..xmm14 hold constants checked every iteration, and the carry flag is set
/// (then cleared) across a long stretch of flag-preserving instructions and checked after it.
/// Every mismatch counts in `r.fails`.
#[cfg(target_arch = "x86_64")]
fn int_xmm_loop(r: &Regs) {
    // SAFETY: reads `r` (alive for the call) and writes only its atomic counters with locked
    // instructions; every register it changes is declared clobbered.
    unsafe {
        core::arch::asm!(
                "mov r8, qword ptr [rcx + {o_ints} + 0]",
                "mov r9, qword ptr [rcx + {o_ints} + 8]",
                "mov r10, qword ptr [rcx + {o_ints} + 16]",
                "mov r11, qword ptr [rcx + {o_ints} + 24]",
                "mov r12, qword ptr [rcx + {o_ints} + 32]",
                "mov r13, qword ptr [rcx + {o_ints} + 40]",
                "mov r14, qword ptr [rcx + {o_ints} + 48]",
                "mov r15, qword ptr [rcx + {o_ints} + 56]",
                "mov rsi, qword ptr [rcx + {o_ints} + 64]",
                "mov rdi, qword ptr [rcx + {o_ints} + 72]",
                "movdqa xmm0, xmmword ptr [rcx + {o_x} + 0]",
                "movdqa xmm1, xmmword ptr [rcx + {o_x} + 16]",
                "movdqa xmm2, xmmword ptr [rcx + {o_x} + 32]",
                "movdqa xmm3, xmmword ptr [rcx + {o_x} + 48]",
                "movdqa xmm4, xmmword ptr [rcx + {o_x} + 64]",
                "movdqa xmm5, xmmword ptr [rcx + {o_x} + 80]",
                "movdqa xmm6, xmmword ptr [rcx + {o_x} + 96]",
                "movdqa xmm7, xmmword ptr [rcx + {o_x} + 112]",
                "movdqa xmm8, xmmword ptr [rcx + {o_x} + 128]",
                "movdqa xmm9, xmmword ptr [rcx + {o_x} + 144]",
                "movdqa xmm10, xmmword ptr [rcx + {o_x} + 160]",
                "movdqa xmm11, xmmword ptr [rcx + {o_x} + 176]",
                "movdqa xmm12, xmmword ptr [rcx + {o_x} + 192]",
                "movdqa xmm13, xmmword ptr [rcx + {o_x} + 208]",
                "movdqa xmm14, xmmword ptr [rcx + {o_x} + 224]",
                "2:",
                "cmp byte ptr [rcx + {o_stop}], 0",
                "jne 9f",
                "lock inc qword ptr [rcx + {o_iters}]",
                "cmp r8, qword ptr [rcx + {o_ints} + 0]",
                "jne 8f",
                "cmp r9, qword ptr [rcx + {o_ints} + 8]",
                "jne 8f",
                "cmp r10, qword ptr [rcx + {o_ints} + 16]",
                "jne 8f",
                "cmp r11, qword ptr [rcx + {o_ints} + 24]",
                "jne 8f",
                "cmp r12, qword ptr [rcx + {o_ints} + 32]",
                "jne 8f",
                "cmp r13, qword ptr [rcx + {o_ints} + 40]",
                "jne 8f",
                "cmp r14, qword ptr [rcx + {o_ints} + 48]",
                "jne 8f",
                "cmp r15, qword ptr [rcx + {o_ints} + 56]",
                "jne 8f",
                "cmp rsi, qword ptr [rcx + {o_ints} + 64]",
                "jne 8f",
                "cmp rdi, qword ptr [rcx + {o_ints} + 72]",
                "jne 8f",
                "movdqa xmm15, xmm0",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 0]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm1",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 16]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm2",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 32]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm3",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 48]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm4",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 64]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm5",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 80]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm6",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 96]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm7",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 112]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm8",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 128]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm9",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 144]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm10",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 160]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm11",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 176]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm12",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 192]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm13",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 208]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "movdqa xmm15, xmm14",
                "pcmpeqb xmm15, xmmword ptr [rcx + {o_x} + 224]",
                "pmovmskb eax, xmm15",
                "cmp eax, 0xffff",
                "jne 8f",
                "stc",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "jnc 8f",
                "clc",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "lea rax, [rax + 1]",
                "lea rdx, [rdx + 3]",
                "jc 8f",
                "jmp 2b",
                "8:",
                "lock inc qword ptr [rcx + {o_fails}]",
                "jmp 2b",
                "9:",
            in("rcx") r as *const Regs,
            o_x = const offset_of!(Regs, x),
            o_ints = const offset_of!(Regs, ints),
            o_iters = const offset_of!(Regs, iters),
            o_fails = const offset_of!(Regs, fails),
            o_stop = const offset_of!(Regs, stop),
            out("rax") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
            out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _,
            out("xmm15") _,
        )
    }
}

/// Like [`int_xmm_loop`] with ymm0..ymm14 (whole 256-bit registers).
///
/// # Safety
/// The processor must support AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn ymm_loop(r: &Regs) {
    // SAFETY: as in `int_xmm_loop`; AVX is the caller's promise.
    unsafe {
        core::arch::asm!(
                "vmovups ymm0, ymmword ptr [rcx + {o_y} + 0]",
                "vmovups ymm1, ymmword ptr [rcx + {o_y} + 32]",
                "vmovups ymm2, ymmword ptr [rcx + {o_y} + 64]",
                "vmovups ymm3, ymmword ptr [rcx + {o_y} + 96]",
                "vmovups ymm4, ymmword ptr [rcx + {o_y} + 128]",
                "vmovups ymm5, ymmword ptr [rcx + {o_y} + 160]",
                "vmovups ymm6, ymmword ptr [rcx + {o_y} + 192]",
                "vmovups ymm7, ymmword ptr [rcx + {o_y} + 224]",
                "vmovups ymm8, ymmword ptr [rcx + {o_y} + 256]",
                "vmovups ymm9, ymmword ptr [rcx + {o_y} + 288]",
                "vmovups ymm10, ymmword ptr [rcx + {o_y} + 320]",
                "vmovups ymm11, ymmword ptr [rcx + {o_y} + 352]",
                "vmovups ymm12, ymmword ptr [rcx + {o_y} + 384]",
                "vmovups ymm13, ymmword ptr [rcx + {o_y} + 416]",
                "vmovups ymm14, ymmword ptr [rcx + {o_y} + 448]",
                "2:",
                "cmp byte ptr [rcx + {o_stop}], 0",
                "jne 9f",
                "lock inc qword ptr [rcx + {o_iters}]",
                "vcmpeqps ymm15, ymm0, ymmword ptr [rcx + {o_y} + 0]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm1, ymmword ptr [rcx + {o_y} + 32]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm2, ymmword ptr [rcx + {o_y} + 64]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm3, ymmword ptr [rcx + {o_y} + 96]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm4, ymmword ptr [rcx + {o_y} + 128]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm5, ymmword ptr [rcx + {o_y} + 160]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm6, ymmword ptr [rcx + {o_y} + 192]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm7, ymmword ptr [rcx + {o_y} + 224]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm8, ymmword ptr [rcx + {o_y} + 256]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm9, ymmword ptr [rcx + {o_y} + 288]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm10, ymmword ptr [rcx + {o_y} + 320]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm11, ymmword ptr [rcx + {o_y} + 352]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm12, ymmword ptr [rcx + {o_y} + 384]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm13, ymmword ptr [rcx + {o_y} + 416]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "vcmpeqps ymm15, ymm14, ymmword ptr [rcx + {o_y} + 448]",
                "vmovmskps eax, ymm15",
                "cmp eax, 0xff",
                "jne 8f",
                "jmp 2b",
                "8:",
                "lock inc qword ptr [rcx + {o_fails}]",
                "jmp 2b",
                "9:",
                "vzeroupper",
            in("rcx") r as *const Regs,
            o_y = const offset_of!(Regs, y),
            o_iters = const offset_of!(Regs, iters),
            o_fails = const offset_of!(Regs, fails),
            o_stop = const offset_of!(Regs, stop),
            out("rax") _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
            out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
            out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _, out("ymm14") _,
            out("ymm15") _,
        )
    }
}

/// Go's TestAsyncPreempt: goroutines in loops with no calls and no polls (one in Rust, one
/// entirely in assembly) on their own Ps; a stop of the world, a `suspend_g` and a ragged
/// barrier all complete, and nothing runs while stopped.
#[test]
fn stop_suspend_and_barrier_complete_with_goroutines_that_never_poll() {
    let rt = rt(3);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let regs = Regs::new(1);
        let ha = {
            let (stop, count) = (stop.clone(), count.clone());
            go(move || nopoll_loop(&stop, &count))
        };
        let hb = {
            let regs = regs.clone();
            go(move || register_loop(&regs))
        };
        spin_until("the loops to start", || {
            count.load(Ordering::Relaxed) > 0 && regs.iters.load(Ordering::Relaxed) > 0
        });
        for _ in 0..100 {
            let w = stop_the_world("test");
            let (a, b) = (count.load(Ordering::SeqCst), regs.iters.load(Ordering::SeqCst));
            spin_for(20);
            assert_eq!(a, count.load(Ordering::SeqCst), "a loop ran while the world was stopped");
            assert_eq!(b, regs.iters.load(Ordering::SeqCst), "the asm loop ran while stopped");
            w.start();
            spin_for(20);
        }
        for (g, c) in [(ha.goroutine(), &*count), (hb.goroutine(), &regs.iters)] {
            for _ in 0..100 {
                let s = suspend_g(g);
                assert!(!s.dead());
                assert!(s.async_stopped(), "held in {:?}", s.held_state());
                let before = c.load(Ordering::SeqCst);
                spin_for(5);
                assert_eq!(before, c.load(Ordering::SeqCst), "ran while suspended");
                resume_g(s);
            }
        }
        let ran = AtomicUsize::new(0);
        for _ in 0..100 {
            for_each_p(&|_| {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(ran.load(Ordering::SeqCst), 300, "every P runs the function once a barrier");
        stop.store(true, Ordering::Relaxed);
        regs.stop.store(true, Ordering::Relaxed);
        ha.join().unwrap();
        hb.join().unwrap();
        assert_eq!(regs.fails.load(Ordering::SeqCst), 0, "a register changed under preemption");
    });
    let st = rt.stats();
    assert!(st.preempt_signals > 0 && st.async_preemptions > 0, "{st:?}");
}

/// At procs = 1 a goroutine that never polls has the only P for good; a thread outside the
/// runtime can still suspend it (and it resumes where it was).
#[test]
fn suspend_g_from_a_thread_holds_the_only_running_goroutine_at_procs_1() {
    let rt = rt(1);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let h = {
        let (stop, count) = (stop.clone(), count.clone());
        rt.spawn(move || nopoll_loop(&stop, &count)).unwrap()
    };
    spin_until("the loop to start", || count.load(Ordering::Relaxed) > 0);
    for _ in 0..200 {
        let s = suspend_g(h.goroutine());
        assert!(s.async_stopped(), "held in {:?}", s.held_state());
        let before = count.load(Ordering::SeqCst);
        spin_for(5);
        assert_eq!(before, count.load(Ordering::SeqCst));
        resume_g(s);
        let after = count.load(Ordering::SeqCst);
        spin_until("the loop to go on", || count.load(Ordering::SeqCst) > after);
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert!(rt.stats().async_preemptions >= 200);
}

/// aarch64: x0-x30 (x8 is the base pointer; x16 and x17 are checked as copies), sp, NZCV, FPCR,
/// FPSR and v0-v31 survive thousands of asynchronous preemptions.
#[test]
#[cfg(target_arch = "aarch64")]
fn integer_flag_fp_control_and_vector_registers_survive_async_preemption() {
    registers_survive(int_vector_loop);
}

/// Every general-purpose, flag and vector register survives thousands of asynchronous
/// preemptions (debug builds scribble over the vector registers and the carry flag inside the
/// hold, so a trampoline that failed to restore one is caught).
fn registers_survive(run: fn(&Regs)) {
    let rt = rt(2);
    let before = rt.stats().async_preemptions;
    let (fails, iters) = rt.block_on(move || {
        let regs = Regs::new(7);
        let h = {
            let regs = regs.clone();
            go(move || run(&regs))
        };
        spin_until("the loop to start", || regs.iters.load(Ordering::Relaxed) > 0);
        let g = h.goroutine();
        for i in 0..3000 {
            if i % 3 == 0 {
                let w = stop_the_world("registers");
                w.start();
            } else {
                resume_g(suspend_g(g));
            }
            // Let it run again (a hold it has not left yet would be taken again at once).
            let n = regs.iters.load(Ordering::SeqCst);
            spin_until("the loop to go on", || regs.iters.load(Ordering::SeqCst) > n);
        }
        regs.stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        (regs.fails.load(Ordering::SeqCst), regs.iters.load(Ordering::SeqCst))
    });
    let held = rt.stats().async_preemptions - before;
    assert_eq!(fails, 0, "registers changed in {fails} of {iters} iterations ({held} holds)");
    assert!(held >= 1000, "only {held} asynchronous preemptions");
}

#[test]
#[cfg(target_arch = "x86_64")]
fn integer_flag_and_xmm_registers_survive_async_preemption() {
    registers_survive(int_xmm_loop);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn ymm_registers_survive_async_preemption() {
    if !std::arch::is_x86_feature_detected!("avx") {
        eprintln!("no AVX: nothing to check");
        return;
    }
    fn run(r: &Regs) {
        // SAFETY: AVX was detected above.
        unsafe { ymm_loop(r) }
    }
    registers_survive(run);
}

/// The handler declines inside a `no_preempt` section (the collector runs its allocator and
/// write barrier in one): a goroutine is only ever held outside it, and the signals that land
/// inside are counted as declined.
#[test]
fn no_preempt_sections_are_never_held() {
    let rt = rt(2);
    let declined = rt.stats().async_declined;
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let inside = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let h = {
            let (stop, inside, count) = (stop.clone(), inside.clone(), count.clone());
            go(move || {
                while !stop.load(Ordering::Relaxed) {
                    {
                        let _np = no_preempt();
                        inside.store(true, Ordering::Relaxed);
                        spin_for(300);
                        inside.store(false, Ordering::Relaxed);
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    spin_for(50);
                }
            })
        };
        spin_until("the loop to start", || count.load(Ordering::Relaxed) > 0);
        // Violations are counted, not asserted at once: the loop must be stopped first, or a
        // failure would hang the runtime's shutdown.
        let mut bad = 0;
        for _ in 0..200 {
            let s = suspend_g(h.goroutine());
            bad += (!s.async_stopped() || inside.load(Ordering::SeqCst)) as u32;
            resume_g(s);
            // Let it run again before the next request (a held goroutine can be re-taken
            // before it runs, and then no signal is sent at all).
            let seen = count.load(Ordering::Relaxed);
            spin_until("the loop to go on", || count.load(Ordering::Relaxed) > seen);
        }
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
        assert_eq!(bad, 0, "held inside a no_preempt section {bad} times");
    });
    assert!(
        rt.stats().async_declined > declined,
        "no signal landed in a section: {:?}",
        rt.stats()
    );
}

/// The handler declines while the M is in a runtime critical section (`m.locks`): here a
/// goroutine that holds the world stopped, or runs a ragged barrier's function for its own P
/// (its P still Running: only `m.locks` says no), suspended from a thread outside the runtime.
#[test]
fn a_goroutine_in_a_runtime_critical_section_is_never_held() {
    let rt = rt(2);
    let declined = rt.stats().async_declined;
    let stop = Arc::new(AtomicBool::new(false));
    let inside = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let h = {
        let (stop, inside, count) = (stop.clone(), inside.clone(), count.clone());
        rt.spawn(move || {
            let me = safepoint_sched::goroutine_id();
            while !stop.load(Ordering::Relaxed) {
                if count.load(Ordering::Relaxed) % 2 == 0 {
                    let w = stop_the_world("holder");
                    inside.store(true, Ordering::Relaxed);
                    spin_for(300);
                    inside.store(false, Ordering::Relaxed);
                    w.start();
                } else {
                    for_each_p(&|_| {
                        // The caller runs the function for its own P (and for idle Ps).
                        if safepoint_sched::goroutine_id() == me {
                            inside.store(true, Ordering::Relaxed);
                            spin_for(150);
                            inside.store(false, Ordering::Relaxed);
                        }
                    });
                }
                count.fetch_add(1, Ordering::Relaxed);
                spin_for(50);
            }
        })
        .unwrap()
    };
    spin_until("the loop to start", || count.load(Ordering::Relaxed) > 0);
    // Counted, not asserted at once: the loop must be stopped first (see above).
    let mut bad = 0;
    for _ in 0..300 {
        let s = suspend_g(h.goroutine());
        bad += (!s.async_stopped() || inside.load(Ordering::SeqCst)) as u32;
        resume_g(s);
        // Let it run again before the next request (see `no_preempt_sections_are_never_held`).
        let seen = count.load(Ordering::Relaxed);
        spin_until("the loop to go on", || count.load(Ordering::Relaxed) > seen);
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    assert_eq!(bad, 0, "held inside a runtime critical section {bad} times");
    assert!(rt.stats().async_declined > declined, "{:?}", rt.stats());
}

thread_local! {
    static TLS_COUNT: Cell<u64> = const { Cell::new(0) };
}

/// A goroutine held in place again and again inside malloc-heavy Rust code (Vec growth, String
/// formatting, a HashMap) resumes with its heap intact, on the same thread, with that thread's
/// thread-locals as it left them.
#[test]
fn malloc_heavy_code_resumes_with_heap_and_thread_locals_intact() {
    let rt = rt(2);
    let before = rt.stats().async_preemptions;
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(AtomicU64::new(0));
        let h = {
            let (stop, rounds, progress) = (stop.clone(), rounds.clone(), progress.clone());
            go(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let tls0 = TLS_COUNT.get();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut v: Vec<String> = Vec::new();
                    let mut m = std::collections::HashMap::new();
                    for i in 0..500u64 {
                        v.push(format!("{n}:{i}:{}", i * i));
                        m.insert(i, vec![i; (i % 17) as usize]);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                    for (i, s) in v.iter().enumerate() {
                        let i = i as u64;
                        assert_eq!(*s, format!("{n}:{i}:{}", i * i), "heap corrupted");
                        assert_eq!(m[&i], vec![i; (i % 17) as usize], "heap corrupted");
                    }
                    TLS_COUNT.set(TLS_COUNT.get() + 1);
                    n += 1;
                    assert_eq!(TLS_COUNT.get(), tls0 + n, "thread-local changed");
                    // SAFETY: as above.
                    assert_eq!(unsafe { libc::gettid() }, tid, "moved to another thread");
                    rounds.store(n, Ordering::Relaxed);
                }
            })
        };
        spin_until("the loop to start", || rounds.load(Ordering::Relaxed) > 0);
        let g = h.goroutine();
        for i in 0..600 {
            if i % 2 == 0 {
                stop_the_world("malloc").start();
            } else {
                resume_g(suspend_g(g));
            }
            // Let it run again (a hold it has not left yet would be taken again at once).
            let n = progress.load(Ordering::SeqCst);
            spin_until("the loop to go on", || progress.load(Ordering::SeqCst) > n);
        }
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    });
    assert!(rt.stats().async_preemptions - before >= 100, "{:?}", rt.stats());
}

/// Stops, barriers and suspensions while other goroutines keep the runtime's own paths busy
/// (spawn and join, channels, yields: the scheduler lock, wait-queue locks, g0 switches): every
/// request completes, and the handler declines whatever lands in those paths.
#[test]
fn busy_runtime_paths_with_signals_flying() {
    let rt = rt(4);
    rt.block_on(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let spins = Arc::new(AtomicU64::new(0));
        let work = Arc::new(AtomicU64::new(0));
        let spinner = {
            let (stop, spins) = (stop.clone(), spins.clone());
            go(move || nopoll_loop(&stop, &spins))
        };
        let mut busy = Vec::new();
        for k in 0..2 {
            let (stop, work) = (stop.clone(), work.clone());
            busy.push(go(move || {
                let ch = Arc::new(safepoint_sched::Chan::<u64>::new(if k == 0 { 0 } else { 4 }));
                let rx = ch.clone();
                let echo = go(move || {
                    while let Ok(v) = rx.recv() {
                        black_box(v);
                    }
                });
                while !stop.load(Ordering::Relaxed) {
                    go(|| black_box(1)).join().unwrap();
                    ch.send(1);
                    safepoint_sched::yield_now();
                    work.fetch_add(1, Ordering::Relaxed);
                }
                ch.close();
                echo.join().unwrap();
            }));
        }
        spin_until("everyone to start", || {
            spins.load(Ordering::Relaxed) > 0 && work.load(Ordering::Relaxed) > 10
        });
        let ran = AtomicUsize::new(0);
        for i in 0..300 {
            match i % 3 {
                0 => stop_the_world("busy").start(),
                1 => for_each_p(&|_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                }),
                _ => resume_g(suspend_g(spinner.goroutine())),
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 100 * 4);
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        for h in busy {
            h.join().unwrap();
        }
    });
    let st = rt.stats();
    assert!(st.preempt_signals > 0 && st.async_preemptions > 0, "{st:?}");
}

/// With asynchronous preemption off, no signal is ever sent: a suspension of a goroutine that
/// never polls waits until the goroutine ends.
fn no_signals_when_off(rt: Runtime) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let h = {
        let (stop, count) = (stop.clone(), count.clone());
        rt.spawn(move || nopoll_loop(&stop, &count)).unwrap()
    };
    spin_until("the loop to start", || count.load(Ordering::Relaxed) > 0);
    let g: Goroutine = h.goroutine();
    let t = std::thread::spawn(move || suspend_g(g).dead());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!t.is_finished(), "suspended a goroutine that never polls without signals");
    assert_eq!(rt.stats().preempt_signals, 0);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    t.join().unwrap();
    assert_eq!(rt.stats().preempt_signals, 0);
}

#[test]
fn builder_turns_async_preemption_off() {
    no_signals_when_off(Runtime::builder().procs(1).async_preempt(false).build().unwrap());
}

/// `SAFEPOINT_DEBUG=...,asyncpreemptoff=1,...` turns it off; an unknown key is reported once
/// on standard error (however many builders read the list) and otherwise ignored. Checked in
/// a child process, which has the variable from the start.
#[test]
fn safepoint_debug_turns_async_preemption_off() {
    if std::env::var_os("ASYNC_PREEMPT_CHILD").is_some() {
        let _second = Runtime::builder().procs(1).build().unwrap();
        no_signals_when_off(Runtime::builder().procs(1).build().unwrap());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "safepoint_debug_turns_async_preemption_off", "--nocapture"])
        .env("ASYNC_PREEMPT_CHILD", "1")
        .env("SAFEPOINT_DEBUG", "gctrace=1,asyncpreemptoff=1,nosuchknob=3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    assert_eq!(stderr.matches("unknown key \"nosuchknob\"").count(), 1, "{stderr}");
}
