//! Signals: the guard-page SIGSEGV handler (to be filled in).

/// What the SIGSEGV handler must know about the goroutine running on this thread.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StackInfo {
    /// Guard region start.
    pub guard_lo: usize,
    /// Guard region end (exclusive).
    pub guard_hi: usize,
    /// Usable stack size, for the message.
    pub size: usize,
    /// The goroutine's id, for the message.
    pub goroutine: u64,
}

/// Installs the process-wide handler (idempotent) and this thread's alternate signal stack.
pub fn install() {}

/// Makes sure this thread has an alternate signal stack.
pub fn ensure_altstack() {}

/// Records which goroutine stack this thread now runs on (null: the thread's own stack).
#[inline]
pub fn set_current(_info: *const StackInfo) {}
