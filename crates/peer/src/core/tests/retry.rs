//! Retry results: the policy a runtime follows, and the waits the core
//! puts in its own rate-limit refusals.

use std::time::Duration;

use bytes::Bytes;

use super::{
    MS, config,
    pair::{OnRequest, Pair},
};
use crate::{
    Config,
    core::{Outcome, RetryDecision, RetryPolicy},
};

/// The wait of a retry result, checking its text.
fn retry_wait(outcome: &Result<Outcome, crate::Error>, text: &str) -> u32 {
    match outcome {
        Ok(Outcome::Retry { wait_ms, payload }) => {
            assert_eq!(payload, text.as_bytes());
            *wait_ms
        }
        other => panic!("expected a retry result, got {other:?}"),
    }
}

#[test]
fn a_runtime_retries_by_the_policy_until_it_gives_up() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Retry(300 * MS);
    let mut policy = RetryPolicy::new(3, 50 * MS);
    let mut waits = Vec::new();
    let outcome = loop {
        let (call, _) = p.a.request("op", b"x");
        p.step();
        let wait = Duration::from_millis(u64::from(retry_wait(p.a.answer_of(call), "busy")));
        match policy.on_retry(wait) {
            RetryDecision::RetryAfter(pause) => {
                waits.push(pause);
                p.advance(pause);
                // The second attempt is answered with no wait: the backoff.
                p.b.on_request = OnRequest::Retry(Duration::ZERO);
            }
            give_up => break give_up,
        }
    };
    assert_eq!(
        waits,
        [300 * MS, 100 * MS],
        "the peer's wait, then 2 × 50 ms"
    );
    assert_eq!(outcome, RetryDecision::GiveUp { attempts: 3 });
    assert_eq!(p.b.requests.len(), 3);
    assert_eq!(p.elapsed(), 400 * MS);
}

#[test]
fn a_retry_that_succeeds_stops_the_loop() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Retry(Duration::ZERO);
    let mut policy = RetryPolicy::new(5, 10 * MS);
    let (call, _) = p.a.request("op", b"x");
    p.step();
    let wait = retry_wait(p.a.answer_of(call), "busy");
    assert_eq!(
        policy.on_retry(Duration::from_millis(wait.into())),
        RetryDecision::RetryAfter(10 * MS)
    );
    p.b.on_request = OnRequest::Echo;
    let (call, _) = p.a.request("op", b"x");
    p.step();
    assert_eq!(p.a.value_of(call), Bytes::from_static(b"x"));
    assert_eq!(policy.attempt(), 2);
}

#[test]
fn without_remote_retry_results_a_retry_becomes_an_error_result() {
    let b = Config {
        remote_retry_results: false,
        max_inbound_requests: 1,
        ..config()
    };
    let mut p = Pair::with(&config(), &b);
    p.b.on_request = OnRequest::Retry(300 * MS);
    let (call, _) = p.a.request("op", b"");
    p.step();
    assert_eq!(
        p.a.answer_of(call).as_ref().unwrap(),
        &Outcome::Error("busy".into())
    );
    // The core's own refusals too.
    p.b.on_request = OnRequest::Hold;
    p.a.request("op", b"");
    let (refused, _) = p.a.request("op", b"");
    p.step();
    assert_eq!(
        p.a.answer_of(refused).as_ref().unwrap(),
        &Outcome::Error("request rate limit".into())
    );
}

/// The waits of `n` requests refused over B's limit of one.
fn rate_limit_waits(wait: (Duration, Duration), seed: u64, n: usize) -> Vec<u32> {
    let b = Config {
        max_inbound_requests: 1,
        rate_limit_wait: wait,
        ..config()
    };
    let mut p = Pair::seeded(&config(), &b, 1, seed);
    p.b.on_request = OnRequest::Hold;
    p.a.request("held", b"");
    let calls: Vec<u32> = (0..n).map(|_| p.a.request("op", b"").0).collect();
    p.step();
    calls
        .iter()
        .map(|&c| retry_wait(p.a.answer_of(c), "request rate limit"))
        .collect()
}

#[test]
fn rate_limit_waits_lie_in_the_configured_range() {
    let waits = rate_limit_waits((20 * MS, 40 * MS), 9, 300);
    assert!(waits.iter().all(|w| (20..=40).contains(w)), "{waits:?}");
    for bound in [20, 40] {
        assert!(waits.contains(&bound), "both bounds are reached: {bound}");
    }
}

#[test]
fn rate_limit_waits_are_deterministic_by_seed() {
    let range = (50 * MS, 500 * MS);
    assert_eq!(
        rate_limit_waits(range, 5, 20),
        rate_limit_waits(range, 5, 20)
    );
    assert_ne!(
        rate_limit_waits(range, 5, 20),
        rate_limit_waits(range, 6, 20)
    );
}

#[test]
fn equal_rate_limit_bounds_give_exactly_that_wait() {
    let waits = rate_limit_waits((30 * MS, 30 * MS), 3, 10);
    assert_eq!(waits, [30; 10]);
}
