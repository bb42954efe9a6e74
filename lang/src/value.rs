//! How values are words: the tag rule shared by the compiler, the interpreter and the
//! collector.
//!
//! ```text
//!   ...value...00   integer (62 bits, two's complement, shifted left by 2)
//!   ...address.01   reference to a heap object (string, float, vector, map, closure, channel)
//!   0000...0010     nil          (tag 10: other immediates)
//!   0000...0110     false
//!   0000...1010     true
//!   ...double...11  float in [`safepoint_gc::flonum`]'s encoding (no allocation)
//! ```
//!
//! Integers carry tag 00 so that adding two of them is one add (and an overflow check). The
//! collector learns the rule from [`RULE`]: a word is a reference exactly when its low two
//! bits are 01. A float whose magnitude is outside `2^-255 ..< 2^257` (or that is `-0.0`, an
//! infinity or a NaN) does not fit the immediate encoding and is a heap object holding its
//! bits; every float operation tries the immediate first, so each value has one form.

#![forbid(unsafe_code)]

use safepoint_gc::TagRule;
pub use safepoint_gc::flonum::{decode as flo_value, encode as flo, is_flonum as is_flo};

/// The collector's view of the encoding.
pub const RULE: TagRule = TagRule { mask: 3, ref_tag: 1 };
/// `nil`.
pub const NIL: usize = 2;
/// `false`.
pub const FALSE: usize = 6;
/// `true`.
pub const TRUE: usize = 10;

/// Whether `v` fits an immediate integer.
///
/// ```
/// use safepoint_lang::value::int_fits;
/// assert!(int_fits(1 << 60) && int_fits(-(1 << 61)));
/// assert!(!int_fits(1 << 61)); // two bits are the tag
/// ```
#[inline]
pub fn int_fits(v: i64) -> bool {
    (v << 2) >> 2 == v
}

/// The word for the integer `v` (which must fit).
///
/// ```
/// use safepoint_lang::value::{as_int, int, is_int};
/// let w = int(-42);
/// assert!(is_int(w));
/// assert_eq!(as_int(w), -42);
/// ```
#[inline]
pub fn int(v: i64) -> usize {
    debug_assert!(int_fits(v));
    (v << 2) as usize
}

/// Whether `w` is an integer.
///
/// ```
/// use safepoint_lang::value::{NIL, int, is_int};
/// assert!(is_int(int(7)));
/// assert!(!is_int(NIL));
/// ```
#[inline]
pub fn is_int(w: usize) -> bool {
    w & 3 == 0
}

/// The integer in `w` (which must be one).
///
/// ```
/// use safepoint_lang::value::{as_int, int};
/// assert_eq!(as_int(int(1 << 40)), 1 << 40);
/// ```
#[inline]
pub fn as_int(w: usize) -> i64 {
    (w as i64) >> 2
}

/// Whether `w` is a reference.
///
/// ```
/// use safepoint_lang::value::{NIL, TRUE, int, is_ref};
/// // Integers, nil and the booleans are immediates, never references.
/// assert!(![int(3), NIL, TRUE].into_iter().any(is_ref));
/// ```
#[inline]
pub fn is_ref(w: usize) -> bool {
    w & 3 == 1
}

/// The word for a boolean.
///
/// ```
/// use safepoint_lang::value::{FALSE, TRUE, boolean};
/// assert_eq!((boolean(true), boolean(false)), (TRUE, FALSE));
/// ```
#[inline]
pub fn boolean(b: bool) -> usize {
    if b { TRUE } else { FALSE }
}

/// Whether `w` counts as true in a condition (everything but `nil` and `false`).
///
/// ```
/// use safepoint_lang::value::{FALSE, NIL, TRUE, int, truthy};
/// assert!(truthy(TRUE) && truthy(int(0))); // 0 is true, as in Lua
/// assert!(!truthy(NIL) && !truthy(FALSE));
/// ```
#[inline]
pub fn truthy(w: usize) -> bool {
    w != NIL && w != FALSE
}
