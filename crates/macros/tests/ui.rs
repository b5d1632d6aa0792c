//! Compile-time behaviour of the macros: what must compile, and the errors for common
//! mistakes. Regenerate snapshots with `TRYBUILD=overwrite cargo test -p tributary-macros`
//! and review the `.stderr` diff (they depend on the stable toolchain's wording).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
