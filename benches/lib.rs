//! Criterion benchmarks for kvstore live in `benches/`; this library is empty on purpose.
//! Run them with `cargo bench -p kv-benches`; results are recorded in BENCHMARKS.md.
