//! A token bucket on tokio's clock: background repairs wait for tokens, so anti-entropy
//! never moves more than its configured keys per second, whatever it finds.

use std::time::Duration;

use tokio::time::Instant;

/// Tokens refill at `per_sec`; at most one second's worth is saved up.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_sec: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub(crate) fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            per_sec,
            tokens: per_sec,
            refilled: Instant::now(),
        }
    }

    /// How long to wait before `count` tokens are available; takes them (the bucket may
    /// go into debt, which later callers wait out).
    pub(crate) fn take(&mut self, count: u32) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + earned).min(self.per_sec);
        self.refilled = now;
        self.tokens -= f64::from(count);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_holds_the_rate() {
        let mut limiter = RateLimiter::new(100);
        let started = Instant::now();
        for _ in 0..300 {
            tokio::time::sleep(limiter.take(1)).await;
        }
        // 100 saved up, then 200 more at 100 per second.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1990) && elapsed <= Duration::from_millis(2010),
            "{elapsed:?}"
        );
    }
}
