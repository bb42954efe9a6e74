//! Doubles as immediates: most `f64` values in one tagged word, no allocation.
//!
//! An interpreter with floating-point numbers would otherwise allocate a heap object for every
//! float result. This module gives an encoding that holds almost every double an arithmetic
//! program meets in a word whose low two bits are `11`, so it fits any [`TagRule`] whose
//! reference tag, under a mask of `3`, is not `11` (the collector never follows such a word):
//! for instance ints `..00`, references `..01`, other immediates `..10`, floats `..11`, which
//! keeps 62-bit integers whose addition is one machine add.
//!
//! The trick (the "flonum" of CRuby, whose idea this is): a double whose top three exponent
//! bits (bits 60..62 of its IEEE 754 form) are `011` or `100` has `bit 61 == bit 60` and
//! `bit 62 != bit 60`, so two of its 64 bits are redundant. Rotating the word left by three puts
//! bits 61 and 62 at bits 0 and 1, free for the tag, and bit 60 at bit 63, from which they are
//! recovered. Those exponents are the magnitudes `2^-255 <= |x| < 2^257`; `+0.0` gets a word of
//! its own. Every other double (`-0.0`, infinities, NaNs, and magnitudes outside the range) is
//! not encodable: [`encode`] returns `None` and the embedder boxes it in a heap object, as
//! before. The encoding of a value is unique, so an embedder that always tries [`encode`] first
//! may compare encoded words for identity.
//!
//! NaN-boxing (every double immediate, references and integers squeezed into the NaN space)
//! was the other choice. It costs integers their width (32 or 48 bits, or a check on every
//! add) and references a mask on every load, and it needs a tag rule that reads high bits; the
//! range above covers the values that numeric programs produce (the benchmarks game's n-body,
//! spectral-norm and mandelbrot never leave it), so the rare boxed float is the cheaper price.
//!
//! [`TagRule`]: crate::TagRule

/// The low two bits of an encoded double.
pub const TAG: usize = 0b11;

/// The mask of [`TAG`].
pub const TAG_MASK: usize = 0b11;

/// The word of `+0.0`: the one encodable value outside the exponent range. It is the word the
/// range's rotation would give `2^-255` (`0x3000_0000_0000_0000`), which is therefore boxed.
pub const ZERO: usize = 0x8000_0000_0000_0003;

/// Whether word `w` is an encoded double.
///
/// ```
/// use safepoint_gc::flonum;
/// let w = flonum::encode(2.5).unwrap();
/// assert!(flonum::is_flonum(w));
/// assert!(!flonum::is_flonum(0));
/// ```
#[inline(always)]
pub fn is_flonum(w: usize) -> bool {
    w & TAG_MASK == TAG
}

/// `x` as an immediate word, or `None` if it must be boxed (see the module docs).
///
/// ```
/// use safepoint_gc::flonum;
/// assert_eq!(flonum::decode(flonum::encode(0.1).unwrap()), 0.1);
/// ```
#[inline(always)]
pub fn encode(x: f64) -> Option<usize> {
    let b = x.to_bits();
    let top = (b >> 60) & 7;
    if (top == 3 || top == 4) && b != 0x3000_0000_0000_0000 {
        Some(((b.rotate_left(3) & !(TAG_MASK as u64)) | TAG as u64) as usize)
    } else if b == 0 {
        Some(ZERO)
    } else {
        None
    }
}

/// The double that [`encode`] made `w` (which must be an encoded double).
///
/// ```
/// use safepoint_gc::flonum;
/// for x in [1.0, -3.75, 1e10] {
///     assert_eq!(flonum::decode(flonum::encode(x).unwrap()), x);
/// }
/// ```
#[inline(always)]
pub fn decode(w: usize) -> f64 {
    debug_assert!(is_flonum(w));
    if w == ZERO {
        return 0.0;
    }
    let w = w as u64;
    // Bit 63 is bit 60 of the double: bit 61 equals it, bit 62 is its opposite.
    let b60 = w >> 63;
    let low = b60 | ((b60 ^ 1) << 1);
    f64::from_bits(((w & !(TAG_MASK as u64)) | low).rotate_right(3))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn check(x: f64) {
        match encode(x) {
            Some(w) => {
                assert!(is_flonum(w), "{x}: {w:#x}");
                assert_eq!(decode(w).to_bits(), x.to_bits(), "{x}: {w:#x}");
            }
            None => {
                let b = x.to_bits();
                let top = (b >> 60) & 7;
                assert!(
                    b == 0x3000_0000_0000_0000 || (b != 0 && top != 3 && top != 4),
                    "{x} ({b:#x}) is in range and must encode"
                );
            }
        }
    }

    #[test]
    fn the_values_programs_use_are_immediates_and_round_trip() {
        for x in
            [0.0, 1.0, -1.0, 0.5, 2.5, std::f64::consts::PI, 1e-9, 1e9, 1e76, -1e-76, 0.1, 365.24]
        {
            assert!(encode(x).is_some(), "{x}");
            check(x);
        }
        assert_eq!(encode(0.0), Some(ZERO));
        assert_eq!(decode(ZERO).to_bits(), 0);
    }

    #[test]
    fn the_rest_is_boxed() {
        for x in
            [-0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e300, 1e-300, f64::MIN_POSITIVE]
        {
            assert_eq!(encode(x), None, "{x}");
        }
        assert_eq!(encode(f64::from_bits(0x3000_0000_0000_0000)), None);
        // Just inside and just outside the range. The powers of two are built from their bits:
        // `powi` need not be exact (Miri, for one, perturbs its result), and 2^257 rounded down
        // by an ulp is inside the range.
        let pow2 = |e: i64| f64::from_bits(((1023 + e) as u64) << 52);
        assert_eq!(pow2(-1), 0.5);
        assert!(encode(pow2(256)).is_some());
        assert!(encode(pow2(257)).is_none());
        assert!(encode(pow2(-254)).is_some());
        assert!(encode(pow2(-256)).is_none());
    }

    proptest! {
        #[test]
        fn every_double_round_trips_or_is_boxed(bits in any::<u64>()) {
            check(f64::from_bits(bits));
        }

        #[test]
        fn encoded_words_are_distinct(a in any::<u64>(), b in any::<u64>()) {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            if let (Some(wa), Some(wb)) = (encode(x), encode(y)) {
                prop_assert_eq!(wa == wb, a == b);
            }
        }
    }
}
