//! Compile-fail tests (trybuild): misuse of the rooting API that must not compile.
//! A `Bytes` view borrows its mutator, so it cannot live across an operation
//! that can reach a safepoint (allocation, store, collection); a `Mutator` and a `Slot` are
//! bound to their goroutine (neither is `Send`). A section's values (`section_*.rs`) carry
//! its invariant brand: kept past the section, returned from it, stored in a `static` or in a
//! `Vec` declared outside, used in another section or moved into `go`, they do not compile,
//! and none can be made from an integer. Each case's expected error is in
//! `tests/ui/<case>.stderr` (regenerate with `TRYBUILD=overwrite` and review the diff).
//!
//! A slot escaping its scope closure does compile (a `Slot` is a plain `Copy` name); that
//! misuse is caught at run time as `GcError::StaleSlot` (see `bad_input.rs`).

#[test]
fn misuse_of_the_rooting_api_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
