//! The stack guard, the word the scheduler poisons to ask a goroutine to stop, and the hooks
//! through which this crate calls up into the scheduler.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The poison bit: the sign bit of the guard word.
const POISON: usize = 1 << (usize::BITS - 1);

/// The stack guard of one managed stack: the word every frame push and every poll compares
/// against, shared with the scheduler.
///
/// The word holds the stack's capacity in words (its *limit*: a frame may be pushed if the new
/// top stays at or below it) and, in its sign bit, a preemption request. Read as a signed
/// number a poisoned word is negative, so the one comparison `new_top > guard` of a push fails
/// for both reasons (no room, or a request) and the slow path tells them apart.
///
/// Every change is one atomic read-modify-write that keeps the other half intact:
/// [`poison`](StackGuard::poison) sets the bit, [`unpoison`](StackGuard::unpoison) clears it,
/// growth and shrinking replace the limit and keep the bit. So a request is never lost to a
/// concurrent growth, and no thread can ever arm a limit larger than the buffer: the limit is
/// written only by whoever may move the buffer (the owner, or a collector holding the stopped
/// goroutine), never by `unpoison`.
///
/// The guard lives inside its [`ManagedStack`](crate::ManagedStack), at a stable address as
/// long as the stack object itself is not moved (the scheduler keeps it in a heap-allocated G).
#[derive(Debug)]
pub struct StackGuard {
    word: AtomicUsize,
}

impl StackGuard {
    pub(crate) const fn new() -> Self {
        StackGuard { word: AtomicUsize::new(0) }
    }

    /// Asks the owning goroutine to stop at its next frame push or poll, where the slow path
    /// calls the [`Hooks::preempt`] hook. May be called from any thread; idempotent.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.guard().poison();
    /// ms.guard().poison(); // idempotent
    /// assert!(ms.guard().is_poisoned());
    /// ```
    #[inline]
    pub fn poison(&self) {
        // Release: pairs with the Acquire load in the slow path (`ManagedStack::morestack`,
        // `poll_slow`), so whatever the requester wrote before asking (its `preempt` flag) is
        // visible to the preempt hook.
        self.word.fetch_or(POISON, Ordering::Release);
    }

    /// Withdraws a preemption request (the scheduler does this when the goroutine has
    /// stopped, or when the request cannot be honoured now and is kept elsewhere). The limit is
    /// left as it is. May be called from any thread.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// ms.guard().poison();
    /// ms.guard().unpoison();
    /// assert!(!ms.guard().is_poisoned());
    /// ```
    #[inline]
    pub fn unpoison(&self) {
        // Release: ordering for the scheduler's own flags, as for `poison`; the limit half is
        // untouched so nothing of the stack's needs ordering here.
        self.word.fetch_and(!POISON, Ordering::Release);
    }

    /// Whether a preemption request is pending.
    ///
    /// ```
    /// use safepoint_stackmap::{ManagedStack, StackConfig};
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert!(!ms.guard().is_poisoned());
    /// ```
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        // Acquire: pairs with the Release of `poison`.
        self.word.load(Ordering::Acquire) & POISON != 0
    }

    /// The current limit: the stack's capacity in words (0 before its first push).
    ///
    /// ```
    /// use safepoint_stackmap::{FuncDesc, ManagedStack, Registry, StackConfig};
    /// let reg = Registry::new();
    /// let f = reg.register(FuncDesc::new("f", 1, 0, 1)).unwrap();
    /// let ms = ManagedStack::new(1, StackConfig::default());
    /// assert_eq!(ms.guard().limit_words(), 0); // before the first push
    /// ms.push(f);
    /// assert_eq!(ms.guard().limit_words(), ms.capacity_words());
    /// ```
    #[inline]
    pub fn limit_words(&self) -> usize {
        self.word.load(Ordering::Relaxed) & !POISON
    }

    /// The fast check of a push: whether a frame ending at word `new_top` fits and no request
    /// is pending.
    #[inline(always)]
    pub(crate) fn admits(&self, new_top: usize) -> bool {
        // Relaxed: the owner reads a limit only it (or a collector holding it stopped, with the
        // scheduler's hand-off ordering) writes; a request seen late is seen at the next check.
        (new_top as isize) <= (self.word.load(Ordering::Relaxed) as isize)
    }

    /// Whether a request is pending, cheaply, for polls.
    #[inline(always)]
    pub(crate) fn poisoned_relaxed(&self) -> bool {
        // Relaxed: the slow path re-reads with Acquire before acting on it.
        (self.word.load(Ordering::Relaxed) as isize) < 0
    }

    /// Loads the word for the slow path.
    pub(crate) fn load_acquire(&self) -> usize {
        // Acquire: pairs with the Release of `poison`.
        self.word.load(Ordering::Acquire)
    }

    /// Sets the limit, keeping a pending request.
    ///
    /// Only whoever may move the buffer calls this (the owner, or a holder of the stopped
    /// goroutine), right after the buffer of `words` words is installed.
    pub(crate) fn set_limit(&self, words: usize) {
        debug_assert!(words & POISON == 0);
        // AcqRel on the read-modify-write: it must not lose a concurrent `poison`, which an
        // RMW guarantees whatever the ordering; Release so that a thread that reads the new
        // limit after the scheduler's hand-off sees the buffer it describes.
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| Some((w & POISON) | words));
    }

    /// Whether word `w` (from [`load_acquire`](Self::load_acquire)) carries a request.
    pub(crate) fn word_poisoned(w: usize) -> bool {
        w & POISON != 0
    }
}

/// The calls this crate makes up into the scheduler, registered once per process with
/// [`set_hooks`]. Until then every hook does nothing.
///
/// All three run on the goroutine whose managed stack is involved, on its own thread, from
/// inside a frame push or a poll (never with a borrow of the stack's buffer held).
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    /// A push or poll found the guard poisoned. The scheduler may yield, park the goroutine,
    /// or hold it while a collector scans this very stack from another thread (the stack is
    /// consistent: the frame being pushed is not on it yet). When it returns, the push
    /// re-reads the guard and the buffer and carries on (growing if there is no room),
    /// whether or not the request was withdrawn; if it was not, the next push or poll calls
    /// the hook again.
    pub preempt: fn(),
    /// The owner is about to move its buffer (to grow it, or by
    /// [`ManagedStack::shrink`](crate::ManagedStack::shrink)) or free it
    /// ([`ManagedStack::release`](crate::ManagedStack::release)). The scheduler sets the G's
    /// status to `CopyStack` (scanning must wait), and panics where the buffer must stay put:
    /// inside a blocking call (a collector may be reading it) and inside a pinned section
    /// (its code may hold pointers to its frames' slots).
    pub copy_begin: fn(),
    /// The buffer is moved or freed; scanning may resume.
    pub copy_end: fn(),
}

fn nothing() {}

impl Hooks {
    /// Hooks that do nothing: what runs before [`set_hooks`].
    pub const NONE: Hooks = Hooks { preempt: nothing, copy_begin: nothing, copy_end: nothing };
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks::NONE
    }
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// The hooks were registered already; the error carries the ones that are in force.
#[derive(Clone, Copy, Debug)]
pub struct HooksAlreadySet(pub Hooks);

impl std::fmt::Display for HooksAlreadySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("managed-stack hooks are set once per process and were set already")
    }
}

impl std::error::Error for HooksAlreadySet {}

/// Registers the process's hooks. Only the first call takes effect.
///
/// ```
/// use safepoint_stackmap::{Hooks, set_hooks};
/// fn preempt() {}
/// fn nothing() {}
/// let hooks = Hooks { preempt, copy_begin: nothing, copy_end: nothing };
/// // Once per process (a runtime sets the scheduler's): a second call is refused.
/// let _ = set_hooks(hooks);
/// assert!(set_hooks(hooks).is_err());
/// ```
pub fn set_hooks(hooks: Hooks) -> Result<(), HooksAlreadySet> {
    HOOKS.set(hooks).map_err(|_| HooksAlreadySet(*HOOKS.get().expect("set")))
}

/// The hooks in force.
#[inline]
pub(crate) fn hooks() -> &'static Hooks {
    HOOKS.get().unwrap_or(&Hooks::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_and_limit_are_independent() {
        let g = StackGuard::new();
        assert!(!g.is_poisoned());
        assert_eq!(g.limit_words(), 0);
        assert!(!g.admits(1));
        assert!(g.admits(0));
        g.set_limit(100);
        assert!(g.admits(100) && !g.admits(101));
        g.poison();
        assert!(g.is_poisoned() && g.poisoned_relaxed());
        assert!(!g.admits(2), "a poisoned guard admits nothing");
        g.set_limit(200);
        assert!(g.is_poisoned(), "growth keeps a request");
        assert_eq!(g.limit_words(), 200);
        g.unpoison();
        assert!(!g.is_poisoned());
        assert!(g.admits(200) && !g.admits(201));
        g.unpoison();
        assert_eq!(g.limit_words(), 200);
    }
}
