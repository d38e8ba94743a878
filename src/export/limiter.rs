//! A client-side sliding-window limiter: at most `calls` REST calls in any `window`, so that a
//! lone oppsync never meets Marketo's 606. Identity calls do not count (Marketo exempts them).
//!
//! The limiter stamps a call when it leaves; Marketo counts it when it arrives. With several
//! requests in flight and latency that varies, two calls a window apart here can arrive less
//! than a window apart there, so the window used is the configured one plus a fortieth.
//!
//! Once half the window's allowance is used, calls are also paced, one to a slot, the slots a
//! window's share (window / calls) apart. Without pacing, a sliding window replays the first
//! burst's pattern window after window; with requests in flight whose latency varies, every late
//! answer delays the next call of that burst, and the delays add up (measured: 88% of the
//! allowance instead of 95% under 500-700 ms latency). Evenly spaced calls leave the in-flight
//! requests room.
//!
//! A slot missed because no call was ready (push waits for every answer before the next object
//! may go, or all the requests in flight are slow) may still be used for up to `CATCH_UP_SLOTS`
//! slots after it: the calls that were held back then go together, and the pace recovers the
//! allowance instead of losing it for good. The window itself is never exceeded: a catch-up
//! only fills slots of a window that held fewer calls.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many missed slots calls may catch up on: about a second at Marketo's default 100 calls
/// per 20 s, longer than one request's usual latency, which is what a wait for answers costs.
const CATCH_UP_SLOTS: u32 = 5;

#[derive(Debug)]
pub(crate) struct Limiter {
    calls: usize,
    window: Duration,
    /// The time between two slots once half the allowance is used.
    gap: Duration,
    /// The next slot a paced call may take.
    slot: Option<Instant>,
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
            slot: None,
            sent: VecDeque::new(),
        }
    }

    /// Counts the calls sent before this limiter was made, by the commands before this one,
    /// `ages` ago (in any order; those older than the window are left out): a command started
    /// right after another would otherwise send a window's allowance on top of the other's.
    /// Only before the first call.
    pub(crate) fn remember(&mut self, now: Instant, mut ages: Vec<Duration>) {
        ages.sort_unstable_by(|a, b| b.cmp(a));
        let sent = ages
            .into_iter()
            .filter(|age| *age < self.window)
            .filter_map(|age| now.checked_sub(age));
        self.sent.extend(sent);
        if self.paced() {
            self.slot = self.sent.back().map(|last| *last + self.gap);
        }
    }

    /// Counts a call that may go now and returns zero, or returns how long to wait first.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Duration {
        let wait = self.wait_at(now);
        if wait.is_zero() {
            // A paced call takes the earliest slot it may still catch up on; before pacing, the
            // slots start from each call.
            let taken = match self.slot {
                Some(slot) if self.paced() => now
                    .checked_sub(self.gap * CATCH_UP_SLOTS)
                    .map_or(slot, |oldest| slot.max(oldest)),
                _ => now,
            };
            self.slot = Some(taken + self.gap);
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
        let paced = match self.slot {
            Some(slot) if self.paced() => slot.saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        full.max(paced)
    }

    /// Whether half the allowance is used, so that calls go one to a slot.
    fn paced(&self) -> bool {
        2 * self.sent.len() >= self.calls
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
    fn calls_of_the_commands_before_count_in_the_window() {
        // 4 calls per 20 s (a window of 20.5 s): three calls logged 1, 2 and 30 s ago.
        let mut limiter = Limiter::new(4, Duration::from_secs(20));
        let now = Instant::now();
        limiter.remember(now, vec![MS(1000), MS(30_000), MS(2000)]);
        // The two within the window count: half the allowance, so calls are paced from the
        // newest (a slot 5.125 s after it), and the third of this command, fifth in the window,
        // waits for the oldest to leave it.
        assert_eq!(limiter.try_acquire(now), MS(4125));
        assert_eq!(limiter.try_acquire(now + MS(4125)), Duration::ZERO);
        assert_eq!(limiter.try_acquire(now + MS(9250)), Duration::ZERO);
        assert_eq!(limiter.try_acquire(now + MS(14_375)), MS(4125));
        assert_eq!(limiter.wait_at(now + MS(18_500)), Duration::ZERO);
    }

    #[test]
    fn calls_held_back_catch_up_on_the_slots_they_missed_but_no_further_back() {
        // 10 calls per 10 s: a window of 10.25 s and slots 1.025 s apart.
        let mut limiter = Limiter::new(10, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.try_acquire(start), Duration::ZERO);
        }
        // Paced from here; the next slot is 1.025 s after the last call. Nothing is ready
        // until 3.075 s: the slots at 1.025 and 2.05 s were missed, and are used now.
        assert_eq!(limiter.try_acquire(start), MS(1025));
        let late = start + MS(3075);
        assert_eq!(limiter.try_acquire(late), Duration::ZERO);
        assert_eq!(limiter.try_acquire(late), Duration::ZERO);
        assert_eq!(limiter.try_acquire(late), Duration::ZERO);
        assert_eq!(limiter.try_acquire(late), MS(1025), "then the pace again");
        // Ten calls in the window: the window holds, whatever the slots say.
        let later = start + MS(9000);
        assert_eq!(limiter.try_acquire(later), Duration::ZERO);
        assert_eq!(limiter.try_acquire(later), Duration::ZERO);
        assert_eq!(limiter.try_acquire(later), MS(1250), "the window is full");

        // After a long pause, with room in the window, no more than CATCH_UP_SLOTS calls go
        // at once beyond the one due: 100 calls per 100 s, slots 1.025 s apart.
        let mut limiter = Limiter::new(100, Duration::from_secs(100));
        for _ in 0..50 {
            limiter.try_acquire(start);
        }
        let pause = start + MS(10_000);
        let burst = (0..10)
            .take_while(|_| limiter.try_acquire(pause).is_zero())
            .count();
        assert_eq!(
            burst,
            CATCH_UP_SLOTS as usize + 1,
            "the slots caught up, and the one due"
        );
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
