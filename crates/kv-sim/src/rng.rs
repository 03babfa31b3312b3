//! The simulation's only source of randomness: SplitMix64, seeded per run, so a seed
//! fully determines every choice (faults, workload, network jitter).

/// A small, fast, seedable generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent generator for one component (`stream` names it), so adding draws
    /// in one component does not shift the others.
    pub fn fork(seed: u64, stream: u64) -> Self {
        let mut mixer = Self::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Self::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        debug_assert!(low <= high);
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[cfg(test)]
mod tests {
    use super::SimRng;

    #[test]
    fn a_seed_replays_and_streams_differ() {
        let draws = |mut rng: SimRng| (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>();
        assert_eq!(draws(SimRng::new(5)), draws(SimRng::new(5)));
        assert_ne!(draws(SimRng::fork(5, 1)), draws(SimRng::fork(5, 2)));
        let mut rng = SimRng::new(9);
        assert!((0..1000).all(|_| (3..=7).contains(&rng.between(3, 7))));
    }
}
