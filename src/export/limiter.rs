//! A client-side sliding-window limiter: at most `calls` REST calls in any `window`, so that a
//! lone oppsync never meets Marketo's 606. Identity calls do not count (Marketo exempts them).
//!
//! The limiter stamps a call when it leaves; Marketo counts it when it arrives. With several
//! requests in flight and latency that varies, two calls a window apart here can arrive less
//! than a window apart there, so the window used is the configured one plus a fortieth.
//!
//! Once half the window's allowance is used, calls are also paced, at least a window's share
//! (window / calls) apart. Without pacing, a sliding window replays the first burst's pattern
//! window after window; with requests in flight whose latency varies, every late answer delays
//! the next call of that burst, and the delays add up (measured: 88% of the allowance instead
//! of 95% under 500-700 ms latency). Evenly spaced calls leave the in-flight requests room.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Limiter {
    calls: usize,
    window: Duration,
    /// The least time between two calls once half the allowance is used.
    gap: Duration,
    sent: VecDeque<Instant>,
}

impl Limiter {
    pub(crate) fn new(calls: u32, window: Duration) -> Limiter {
        let calls = calls.max(1);
        let window = window + window / 40;
        Limiter {
            calls: calls as usize,
            window,
            gap: window / calls,
            sent: VecDeque::new(),
        }
    }

    /// Counts a call that may go now and returns zero, or returns how long to wait first.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Duration {
        let wait = self.wait_at(now);
        if wait.is_zero() {
            self.sent.push_back(now);
        }
        wait
    }

    /// How long to wait before the next call may go, given the calls sent so far.
    pub(crate) fn wait_at(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        let full = match self.sent.front() {
            Some(oldest) if self.sent.len() >= self.calls => {
                (*oldest + self.window).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        let paced = match self.sent.back() {
            Some(last) if 2 * self.sent.len() >= self.calls => {
                (*last + self.gap).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        full.max(paced)
    }

    /// Waits out a whole window: what Marketo's 606 asks for.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_burst_goes_at_once_until_half_the_allowance_then_calls_are_paced() {
        // 4 calls per 20 s: a window of 20.5 s with its margin, and a gap of 5.125 s.
        let mut limiter = Limiter::new(4, Duration::from_secs(20));
        let start = Instant::now();
        assert_eq!(limiter.try_acquire(start), Duration::ZERO);
        assert_eq!(limiter.try_acquire(start), Duration::ZERO);
        assert_eq!(limiter.try_acquire(start), MS(5125), "paced from half");
        assert_eq!(limiter.try_acquire(start + MS(5125)), Duration::ZERO);
        assert_eq!(limiter.try_acquire(start + MS(10_250)), Duration::ZERO);
        // Four calls in the window: the next waits for the oldest to leave it.
        assert_eq!(limiter.try_acquire(start + MS(15_375)), MS(5125));
        assert_eq!(limiter.wait_at(start + MS(20_500)), Duration::ZERO);
    }

    #[test]
    fn calls_older_than_the_window_are_forgotten() {
        let mut limiter = Limiter::new(100, Duration::from_secs(20));
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(limiter.try_acquire(start), Duration::ZERO);
        }
        assert_eq!(limiter.wait_at(start + MS(20_500)), Duration::ZERO);
        assert!(limiter.sent.is_empty());
    }
}
