//! Arbitrary bytes as a drop-in rule file (both readers, the live-rule reader, the compiled set): see `proxyuserd::fuzzing::rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxyuserd::fuzzing::rules(data));
