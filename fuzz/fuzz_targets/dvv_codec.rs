#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kv_fuzz::check(kv_fuzz::Target::DvvCodec, data));
