//! The committed fuzz corpora (`fuzz/corpus/<target>/`) as regression tests: every input
//! the fuzzer kept, and every crash it ever found, runs through its target's checks on
//! each `cargo test`.

use std::path::PathBuf;

use kv_fuzz::{Target, check, seeds};

fn corpus_dir(target: Target) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target.name())
}

#[test]
fn every_committed_input_passes_its_checks() {
    for target in Target::ALL {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!("no corpus for {} at {}: {e}", target.name(), dir.display())
        });
        let mut inputs = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            check(target, &data);
            inputs += 1;
        }
        assert!(inputs > 0, "the {} corpus is empty", target.name());
    }
}

#[test]
fn seeds_are_committed_and_pass() {
    for (target, name, data) in seeds() {
        check(target, &data);
        let committed = corpus_dir(target).join(format!("seed-{name}"));
        assert_eq!(
            std::fs::read(&committed).ok().as_deref(),
            Some(data.as_slice()),
            "{} differs from the seed the encoders make now: run `cargo xtask fuzz --write-seeds`",
            committed.display()
        );
    }
}

#[test]
fn truncated_and_flipped_seeds_pass() {
    for (target, _, data) in seeds() {
        for cut in 0..data.len().min(64) {
            check(target, &data[..cut]);
        }
        for at in 0..data.len() {
            let mut flipped = data.clone();
            flipped[at] ^= 0xA5;
            check(target, &flipped);
        }
    }
}
