//! Arbitrary bytes as the configuration file: see `proxyuserd::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxyuserd::fuzzing::config(data));
