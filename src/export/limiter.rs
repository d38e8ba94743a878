//! A client-side sliding-window limiter: at most `calls` REST calls in any `window`, so that a
//! lone oppsync never meets Marketo's 606. Identity calls do not count (Marketo exempts them).
//!
//! The limiter stamps a call when it leaves; Marketo counts it when it arrives. With several
//! requests in flight and latency that varies, two calls a window apart here can arrive less
//! than a window apart there, so the window used is the configured one plus a twentieth.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Limiter {
    calls: usize,
    window: Duration,
    sent: VecDeque<Instant>,
}

impl Limiter {
    pub(crate) fn new(calls: u32, window: Duration) -> Limiter {
        Limiter {
            calls: calls.max(1) as usize,
            window: window + window / 20,
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
        match self.sent.front() {
            Some(oldest) if self.sent.len() >= self.calls => {
                (*oldest + self.window).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        }
    }

    /// Waits out a whole window: what Marketo's 606 asks for.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_call_waits_for_the_oldest_to_leave_the_window() {
        let mut limiter = Limiter::new(2, Duration::from_secs(20));
        let start = Instant::now();
        assert_eq!(limiter.try_acquire(start), Duration::ZERO);
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(5)),
            Duration::ZERO
        );
        // The window is 20 s plus a twentieth (1 s) of margin for latency jitter.
        assert_eq!(
            limiter.try_acquire(start + Duration::from_secs(6)),
            Duration::from_secs(15)
        );
        assert_eq!(
            limiter.wait_at(start + Duration::from_secs(21)),
            Duration::ZERO
        );
        assert_eq!(
            limiter.sent.len(),
            1,
            "calls older than the window are forgotten"
        );
    }
}
