//! Native goroutine stacks: mmap'd, lazily committed, guarded, pooled.
//!
//! ```text
//!   map            map + guard                                   map + len = top
//!   +--------------+---------------------------------------------+
//!   | guard page(s) |  usable stack, grows down from top           |
//!   +--------------+---------------------------------------------+
//! ```
//!
//! The mapping is `MAP_NORESERVE`: a goroutine that touches two pages costs two pages of memory
//! however large its virtual stack is. The guard is installed with `MADV_GUARD_INSTALL` (Linux
//! 6.13 and later), which does not split the mapping into two VMAs, so a hundred thousand
//! goroutines do not run into `vm.max_map_count`; older kernels fall back to `mprotect`, and so
//! does an environment that accepts the advice without acting on it (qemu-user answers success
//! to advice it does not know): the first guard installed with the advice is checked once.
//! A [`StackPool`] keeps returned stacks for reuse.
//!
//! The guard is one page of the running kernel's size: 4 KiB on x86_64, and on aarch64 4, 16 or
//! 64 KiB depending on how the kernel was built.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

/// The smallest page size of the targets (4 KiB); the guard is at least this large, and a whole
/// page of the running kernel (see [`page_size`]).
pub const PAGE_SIZE: usize = 4096;

/// The running kernel's page size (`sysconf(_SC_PAGESIZE)`), at least [`PAGE_SIZE`].
///
/// ```
/// let p = safepoint_arch::stack::page_size();
/// assert!(p.is_power_of_two() && p >= 4096);
/// ```
pub fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (n.max(0) as usize).max(PAGE_SIZE)
}

/// Default usable size of a goroutine stack (virtual; committed only as touched).
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Smallest stack size accepted: the entry trampoline, the runtime's own frames and a signal
/// frame must fit.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Why a stack could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackError {
    /// The requested size is below [`MIN_STACK_SIZE`] or would overflow.
    BadSize(usize),
    /// The kernel refused the mapping or its guard (errno given).
    Os(i32),
}

impl core::fmt::Display for StackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StackError::BadSize(n) => {
                write!(f, "goroutine stack size {n} is below the minimum of {MIN_STACK_SIZE} bytes")
            }
            StackError::Os(e) => {
                write!(f, "cannot map a goroutine stack: {}", std::io::Error::from_raw_os_error(*e))
            }
        }
    }
}

impl std::error::Error for StackError {}

/// One goroutine stack. Unmapped on drop.
#[derive(Debug)]
pub struct Stack {
    map: usize,
    len: usize,
    guard: usize,
}

// SAFETY: a Stack is plain ownership of a private mapping; nothing in it is tied to a thread.
unsafe impl Send for Stack {}
// SAFETY: the methods taking &self only read the immutable bounds.
unsafe impl Sync for Stack {}

impl Stack {
    /// Maps a stack with `size` usable bytes (rounded up to pages) and one guard page below.
    ///
    /// ```
    /// use safepoint_arch::stack::{MIN_STACK_SIZE, Stack, StackError};
    /// let s = Stack::new(64 * 1024).unwrap();
    /// assert_eq!(s.size(), 64 * 1024);
    /// let small = MIN_STACK_SIZE - 1;
    /// assert_eq!(Stack::new(small).unwrap_err(), StackError::BadSize(small));
    /// ```
    pub fn new(size: usize) -> Result<Stack, StackError> {
        if size < MIN_STACK_SIZE {
            return Err(StackError::BadSize(size));
        }
        let size = size.checked_next_multiple_of(PAGE_SIZE).ok_or(StackError::BadSize(size))?;
        let guard = page_size();
        let len = size.checked_add(guard).ok_or(StackError::BadSize(size))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
        // existing memory.
        let map = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(StackError::Os(errno()));
        }
        let stack = Stack { map: map as usize, len, guard };
        if !guard_by_advice(map, guard) {
            // SAFETY: as above; the guard page becomes inaccessible, which is the point.
            let rc = unsafe { libc::mprotect(map, guard, libc::PROT_NONE) };
            if rc != 0 {
                return Err(StackError::Os(errno()));
            }
        }
        Ok(stack)
    }

    /// One past the highest usable byte; 16-byte aligned. Stacks grow down from here.
    ///
    /// ```
    /// let s = safepoint_arch::stack::Stack::new(64 * 1024).unwrap();
    /// assert_eq!(s.top() % 16, 0);
    /// assert_eq!(s.top() - s.lo(), s.size());
    /// ```
    pub fn top(&self) -> usize {
        self.map + self.len
    }

    /// The lowest usable byte (just above the guard).
    ///
    /// ```
    /// let s = safepoint_arch::stack::Stack::new(64 * 1024).unwrap();
    /// assert_eq!(s.lo(), s.guard_range().1); // just above the guard
    /// ```
    pub fn lo(&self) -> usize {
        self.map + self.guard
    }

    /// Usable size in bytes.
    ///
    /// ```
    /// let s = safepoint_arch::stack::Stack::new(32 * 1024).unwrap();
    /// assert_eq!(s.size(), 32 * 1024);
    /// ```
    pub fn size(&self) -> usize {
        self.len - self.guard
    }

    /// The guard region `[start, end)`: any access there is a stack overflow.
    ///
    /// ```
    /// let s = safepoint_arch::stack::Stack::new(64 * 1024).unwrap();
    /// let (lo, hi) = s.guard_range();
    /// assert_eq!(hi - lo, safepoint_arch::stack::page_size()); // one page, below the stack
    /// ```
    pub fn guard_range(&self) -> (usize, usize) {
        (self.map, self.map + self.guard)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and nothing runs on it any more (the owner of a Stack only
        // drops it after the execution on it ended for good).
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
    }
}

/// Whether `MADV_GUARD_INSTALL` is known to work: 0 not yet tried, 1 it guards, 2 it does not
/// (refused, or accepted and ignored). Relaxed: a race only repeats the one-time check.
static GUARD_ADVICE: AtomicU8 = AtomicU8::new(0);

/// Installs the guard over `[map, map + guard)` with `MADV_GUARD_INSTALL`; false if the caller
/// must use `mprotect` instead.
fn guard_by_advice(map: *mut libc::c_void, guard: usize) -> bool {
    if GUARD_ADVICE.load(Ordering::Relaxed) == 2 {
        return false;
    }
    // SAFETY: the guard range lies inside a mapping the caller owns and that holds nothing yet.
    if unsafe { libc::madvise(map, guard, MADV_GUARD_INSTALL) } != 0 {
        GUARD_ADVICE.store(2, Ordering::Relaxed);
        return false;
    }
    if GUARD_ADVICE.load(Ordering::Relaxed) == 1 {
        return true;
    }
    let works = unreadable(map as usize);
    GUARD_ADVICE.store(if works { 1 } else { 2 }, Ordering::Relaxed);
    works
}

/// Whether the kernel refuses to read the byte at `addr`, found without touching it: a one-byte
/// `write` from it into a pipe fails with `EFAULT` where the memory is unreadable. False when it
/// cannot tell (no pipe), so that the caller falls back to the guard that always works.
fn unreadable(addr: usize) -> bool {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is valid for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    // SAFETY: write does not dereference `addr` in this process: the kernel copies from it and
    // reports EFAULT if it cannot.
    let n = unsafe { libc::write(fds[1], addr as *const libc::c_void, 1) };
    let err = errno();
    // SAFETY: both descriptors were opened just above and are closed once.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    n < 0 && err == libc::EFAULT
}

/// A pool of stacks of one size, so that spawning does not map on its fast path.
#[derive(Debug)]
pub struct StackPool {
    size: usize,
    max_cached: usize,
    free: Mutex<Vec<Stack>>,
}

impl StackPool {
    /// A pool handing out stacks of `size` usable bytes, keeping at most `max_cached` returned
    /// stacks (the rest are unmapped).
    ///
    /// ```
    /// use safepoint_arch::stack::StackPool;
    /// let pool = StackPool::new(64 * 1024, 8).unwrap();
    /// assert_eq!(pool.stack_size(), 64 * 1024);
    /// assert!(StackPool::new(100, 8).is_err()); // below the minimum size
    /// ```
    pub fn new(size: usize, max_cached: usize) -> Result<StackPool, StackError> {
        if size < MIN_STACK_SIZE {
            return Err(StackError::BadSize(size));
        }
        let size = size.checked_next_multiple_of(PAGE_SIZE).ok_or(StackError::BadSize(size))?;
        Ok(StackPool { size, max_cached, free: Mutex::new(Vec::new()) })
    }

    /// The usable size of this pool's stacks.
    ///
    /// ```
    /// let pool = safepoint_arch::stack::StackPool::new(128 * 1024, 1).unwrap();
    /// assert_eq!(pool.get().unwrap().size(), pool.stack_size());
    /// ```
    pub fn stack_size(&self) -> usize {
        self.size
    }

    /// A stack from the pool, or a new one.
    ///
    /// ```
    /// let pool = safepoint_arch::stack::StackPool::new(64 * 1024, 4).unwrap();
    /// let s = pool.get().unwrap(); // mapped now: the cache is empty
    /// let top = s.top();
    /// pool.put(s);
    /// assert_eq!(pool.get().unwrap().top(), top); // the same stack, reused
    /// ```
    pub fn get(&self) -> Result<Stack, StackError> {
        if let Some(s) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        Stack::new(self.size)
    }

    /// Returns a stack for reuse. Its memory stays committed (warm for the next goroutine).
    ///
    /// ```
    /// let pool = safepoint_arch::stack::StackPool::new(64 * 1024, 1).unwrap();
    /// let (a, b) = (pool.get().unwrap(), pool.get().unwrap());
    /// pool.put(a);
    /// pool.put(b); // over the cache's bound: unmapped
    /// assert_eq!(pool.cached(), 1);
    /// ```
    pub fn put(&self, s: Stack) {
        debug_assert_eq!(s.size(), self.size);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max_cached {
            free.push(s);
        }
    }

    /// How many stacks are cached.
    ///
    /// ```
    /// let pool = safepoint_arch::stack::StackPool::new(64 * 1024, 4).unwrap();
    /// assert_eq!(pool.cached(), 0);
    /// pool.put(pool.get().unwrap());
    /// assert_eq!(pool.cached(), 1);
    /// ```
    pub fn cached(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it maps goroutine stacks (mmap with MAP_NORESERVE, mprotect)"
    )]
    fn bounds_are_consistent() {
        let s = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(s.size(), DEFAULT_STACK_SIZE);
        assert_eq!(s.top() % 16, 0);
        assert_eq!(s.guard_range().1, s.lo());
        // The usable range is writable at both ends.
        // SAFETY: lo and top-8 are inside the usable, writable part of the mapping.
        unsafe {
            (s.lo() as *mut u64).write(1);
            ((s.top() - 8) as *mut u64).write(2);
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it maps goroutine stacks (mmap with MAP_NORESERVE, mprotect)"
    )]
    fn the_guard_is_unreadable_and_the_stack_readable() {
        let s = Stack::new(MIN_STACK_SIZE).unwrap();
        let (lo, hi) = s.guard_range();
        assert_eq!(hi - lo, page_size());
        assert!(unreadable(lo) && unreadable(hi - 1), "the guard can be read");
        assert!(!unreadable(s.lo()) && !unreadable(s.top() - 1), "the stack cannot be read");
    }

    #[test]
    fn too_small_is_an_error() {
        assert_eq!(Stack::new(100).unwrap_err(), StackError::BadSize(100));
        assert!(StackPool::new(0, 4).is_err());
        assert!(StackError::BadSize(100).to_string().contains("minimum"));
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri cannot run it: it maps goroutine stacks (mmap with MAP_NORESERVE, mprotect)"
    )]
    fn pool_reuses() {
        let p = StackPool::new(64 * 1024, 2).unwrap();
        let a = p.get().unwrap();
        let top = a.top();
        p.put(a);
        assert_eq!(p.cached(), 1);
        let b = p.get().unwrap();
        assert_eq!(b.top(), top);
        let c = p.get().unwrap();
        let d = p.get().unwrap();
        p.put(b);
        p.put(c);
        p.put(d);
        assert_eq!(p.cached(), 2);
    }
}
