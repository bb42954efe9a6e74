//! The few OS calls the heap makes: reserve, unmap, release.

use std::ptr::NonNull;

/// Maps `len` bytes of anonymous memory aligned to `align` (a power of two), readable and
/// writable but `MAP_NORESERVE`: no page costs memory until it is first touched.
pub(crate) fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    map_aligned_prot(len, align, libc::PROT_READ | libc::PROT_WRITE)
}

fn map_aligned_prot(len: usize, align: usize, prot: libc::c_int) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && len.is_multiple_of(4096));
    let over = len.checked_add(align)?;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = p as usize;
    let aligned = (base + align - 1) & !(align - 1);
    let head = aligned - base;
    let tail = over - head - len;
    // SAFETY: both trims lie inside the mapping just made, which nothing else knows of yet.
    unsafe {
        if head > 0 {
            libc::munmap(p, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(aligned as *mut u8)
}

/// Reserves `len` bytes of address space aligned to `align` (a power of two): inaccessible
/// (`PROT_NONE`) and `MAP_NORESERVE`, so it costs neither memory nor commit charge until
/// parts of it are made accessible with [`commit`].
pub(crate) fn reserve_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    map_aligned_prot(len, align, libc::PROT_NONE)
}

/// Makes `[addr, addr + len)` of a reservation from [`reserve_aligned`] readable and
/// writable; whether the OS agreed.
///
/// # Safety
/// The range is page-aligned and inside a reservation that nothing else uses yet.
pub(crate) unsafe fn commit(addr: usize, len: usize) -> bool {
    // SAFETY: per the contract, the range is ours and unused.
    let r = unsafe {
        libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE)
    };
    r == 0
}

/// Unmaps a mapping made by [`map_aligned`].
///
/// # Safety
/// `[addr, addr + len)` is exactly one mapping from [`map_aligned`] and no reference into it
/// outlives this call.
pub(crate) unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: the caller owns the whole range and nothing points into it any more.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Gives the pages of `[addr, addr + len)` back to the OS; the next touch reads zeroes.
///
/// # Safety
/// The range is page-aligned, inside a heap arena, and holds no live data (it is a free run).
pub(crate) unsafe fn release(addr: usize, len: usize) {
    // SAFETY: the caller guarantees the range is free heap memory; MADV_DONTNEED on private
    // anonymous memory only drops contents nobody needs.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// Hints that `[addr, addr + len)`, part of a mapping from [`map_aligned`], be backed by
/// transparent huge pages (`MADV_HUGEPAGE`). Only a hint: where the system has them off, or
/// refuses, nothing changes.
pub(crate) fn hint_huge(addr: usize, len: usize) {
    // SAFETY: madvise with MADV_HUGEPAGE changes how the kernel backs the range, never its
    // contents; the range is ours (the caller's mapping). Not under Miri, which has no madvise.
    #[cfg(not(miri))]
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_HUGEPAGE)
    };
    #[cfg(miri)]
    let _ = (addr, len);
}

/// Asks that `[addr, addr + len)`, part of a mapping from [`map_aligned`] whose pages are all
/// in use, be backed by transparent huge pages now: hinted as by [`hint_huge`], then
/// collapsed in place (`MADV_COLLAPSE`, Linux 6.1 and later), which copies the range into
/// huge pages at once rather than leaving it to the kernel's background scan. Only a
/// request: where the system has no huge pages to give, or predates the call, nothing
/// changes. A range already touched in full costs no more memory as a huge page.
pub(crate) fn collapse_huge(addr: usize, len: usize) {
    hint_huge(addr, len);
    // SAFETY: MADV_COLLAPSE changes how the kernel backs the range, never its contents (it
    // copies them); the range is ours (the caller's mapping). Not under Miri, which has no
    // madvise.
    #[cfg(all(target_env = "gnu", not(miri)))]
    unsafe {
        libc::madvise(addr as *mut libc::c_void, len, libc::MADV_COLLAPSE)
    };
}
