//! The compiler's messages for a misused `#[gotalk_peer::service]`: each
//! points at the offending part of the trait. Regenerate the expected
//! output with `TRYBUILD=overwrite cargo test -p gotalk-peer --features
//! macros --test service_ui` and read the diff.

#[test]
fn misuse_is_a_clear_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
