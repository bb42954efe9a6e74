//! Goroutine-local storage.
//!
//! A goroutine can move to another OS thread at any safepoint, so a `thread_local!` is the
//! wrong home for per-goroutine state: [`GoroutineLocal`] is the right one. Each goroutine sees
//! its own value, created on first use and dropped when the goroutine exits.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

/// A goroutine-local value of type `T`, declared as a `static`:
///
/// ```
/// use safepoint_sched::GoroutineLocal;
/// use std::cell::Cell;
/// static DEPTH: GoroutineLocal<Cell<u32>> = GoroutineLocal::new(|| Cell::new(0));
/// ```
pub struct GoroutineLocal<T: 'static> {
    key: AtomicUsize,
    init: fn() -> T,
}

impl<T: 'static> core::fmt::Debug for GoroutineLocal<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GoroutineLocal(key {})", self.key.load(Ordering::Relaxed))
    }
}

impl<T: 'static> GoroutineLocal<T> {
    /// A key whose value starts as `init()` in each goroutine.
    ///
    /// ```
    /// use safepoint_sched::{GoroutineLocal, Runtime, go};
    /// use std::cell::Cell;
    /// static DEPTH: GoroutineLocal<Cell<u32>> = GoroutineLocal::new(|| Cell::new(0));
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// rt.block_on(|| {
    ///     DEPTH.with(|d| d.set(5));
    ///     // Each goroutine has its own value, made by `init` on its first use.
    ///     assert_eq!(go(|| DEPTH.with(|d| d.get())).join().unwrap(), 0);
    ///     assert_eq!(DEPTH.with(|d| d.get()), 5);
    /// });
    /// ```
    pub const fn new(init: fn() -> T) -> GoroutineLocal<T> {
        GoroutineLocal { key: AtomicUsize::new(0), init }
    }

    fn key(&self) -> usize {
        let k = self.key.load(Ordering::Acquire);
        if k != 0 {
            return k;
        }
        let new = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        // AcqRel: one key wins; everyone reads the winner's.
        match self.key.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => new,
            Err(k) => k,
        }
    }

    /// Runs `f` with this goroutine's value. Panics off a goroutine.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use safepoint_sched::{GoroutineLocal, Runtime};
    /// type Log = RefCell<Vec<u32>>;
    /// static LOG: GoroutineLocal<Log> = GoroutineLocal::new(|| RefCell::new(vec![]));
    /// # let rt = Runtime::builder().procs(1).build().unwrap();
    /// let n = rt.block_on(|| {
    ///     LOG.with(|l| l.borrow_mut().push(1));
    ///     LOG.with(|l| l.borrow_mut().push(2));
    ///     LOG.with(|l| l.borrow().len())
    /// });
    /// assert_eq!(n, 2);
    /// ```
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let g = crate::runtime::current_g()
            .unwrap_or_else(|| panic!("GoroutineLocal::with called outside a goroutine"));
        let key = self.key();
        // SAFETY: only the running goroutine touches its locals, and the reference handed to `f`
        // points into a Box that stays put until the goroutine exits (the Vec may grow during
        // `f`, moving the Box pointers but not the boxes).
        let value: *const T = unsafe {
            let locals = &mut *g.locals.get();
            if locals.len() <= key {
                locals.resize_with(key + 1, || None);
            }
            let slot = &mut locals[key];
            if slot.is_none() {
                *slot = Some(Box::new((self.init)()) as Box<dyn Any>);
            }
            slot.as_ref()
                .and_then(|b| b.downcast_ref::<T>())
                .expect("goroutine-local of another type") as *const T
        };
        // SAFETY: see above: the box lives until the goroutine exits, which cannot happen while
        // `f` runs on it.
        f(unsafe { &*value })
    }
}
