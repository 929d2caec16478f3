//! Arbitrary bytes as an HTTP Cookie header: see `proxyuserd::fuzzing::cookies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxyuserd::fuzzing::cookies(data));
