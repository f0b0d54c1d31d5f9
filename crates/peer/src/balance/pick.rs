//! The pick: power of two choices over a cost that combines the calls we
//! have in flight on an endpoint with the load its server reports.

use crate::reconnect::Rng;

/// What one endpoint costs to send a call to: `(in_flight + 1) / (1 − ρ)`,
/// where `ρ` is the share of its capacity the server reported in use
/// (0 when it reported nothing recent). The first factor is how many calls
/// this one would queue behind on our side; the second is how a queue at a
/// server grows as it nears its capacity (a server at half capacity counts
/// double, at three quarters four times). A server reporting 65535
/// (refusing work) costs 65536 times an idle one: picked only when every
/// other choice is as bad.
pub(crate) fn cost(in_flight: usize, load: Option<u16>) -> f64 {
    let headroom = 65_536.0 - f64::from(load.unwrap_or(0));
    (in_flight as f64 + 1.0) * 65_536.0 / headroom
}

/// Power of two choices: draws two different candidates at random and
/// returns the cheaper (the first drawn on a tie). Unlike "least loaded of
/// all", many clients picking at once do not all pile onto the same
/// endpoint, and the worst endpoint of three or more is never picked while
/// its cost is strictly the highest.
pub(crate) fn choose(costs: &[f64], rng: &mut Rng) -> Option<usize> {
    match costs.len() {
        0 => None,
        1 => Some(0),
        n => {
            let (first, second) = two(n, rng);
            Some(if costs[second] < costs[first] {
                second
            } else {
                first
            })
        }
    }
}

/// Two different indices in `0..n` (`n` at least 2), each pair as likely.
pub(crate) fn two(n: usize, rng: &mut Rng) -> (usize, usize) {
    let first = rng.below(n);
    let mut second = rng.below(n - 1);
    if second >= first {
        second += 1;
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(costs: &[f64], draws: usize, seed: u64) -> Vec<usize> {
        let mut rng = Rng::from_seed(seed);
        let mut counts = vec![0; costs.len()];
        for _ in 0..draws {
            counts[choose(costs, &mut rng).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn no_candidate_and_one_candidate() {
        let mut rng = Rng::from_seed(7);
        assert_eq!(choose(&[], &mut rng), None);
        assert_eq!(choose(&[99.0], &mut rng), Some(0));
    }

    #[test]
    fn equal_costs_spread_evenly() {
        let counts = counts(&[1.0, 1.0, 1.0], 3000, 42);
        for c in &counts {
            assert!((900..=1100).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn the_costliest_of_three_is_never_picked() {
        let counts = counts(&[cost(0, None), cost(3, None), cost(1, None)], 3000, 1);
        assert_eq!(counts[1], 0, "{counts:?}");
        // The cheapest wins both of its pairs, the middle one only against
        // the costliest: two thirds and one third.
        assert!((1900..=2100).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn of_two_the_cheaper_always_wins() {
        assert_eq!(counts(&[2.0, 1.0], 500, 3), [0, 500]);
    }

    #[test]
    fn the_reported_load_weighs_on_the_cost() {
        // Same calls in flight: the loaded server costs more.
        assert!(cost(1, Some(32_768)) > cost(1, Some(0)));
        assert_eq!(cost(1, Some(32_768)), 2.0 * cost(1, None));
        assert_eq!(cost(0, Some(49_152)), 4.0);
        // Idle on our side but three quarters busy with other clients'
        // work: dearer than two calls queued on an idle server.
        assert!(cost(0, Some(49_152)) > cost(2, Some(0)));
        assert_eq!(cost(0, Some(u16::MAX)), 65_536.0);
        // Steering follows: with three endpoints and no call in flight
        // anywhere, the loaded one gets nothing.
        let costs = [cost(0, Some(0)), cost(0, Some(40_000)), cost(0, Some(100))];
        let counts = counts(&costs, 3000, 9);
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(
            counts[0] > counts[2],
            "the idler of the others wins: {counts:?}"
        );
    }

    #[test]
    fn two_draws_differ_and_cover_every_pair() {
        let mut rng = Rng::from_seed(11);
        let mut seen = [[0; 4]; 4];
        for _ in 0..4000 {
            let (a, b) = two(4, &mut rng);
            assert_ne!(a, b);
            seen[a][b] += 1;
        }
        for (a, row) in seen.iter().enumerate() {
            for (b, n) in row.iter().enumerate() {
                if a != b {
                    assert!((250..=420).contains(n), "{seen:?}");
                }
            }
        }
        for _ in 0..10 {
            let (a, b) = two(2, &mut rng);
            assert_eq!(a + b, 1, "of two, both");
        }
    }

    #[test]
    fn a_seed_gives_the_same_picks() {
        let costs = [1.0, 1.0, 1.0, 1.0];
        let picks = |seed| {
            let mut rng = Rng::from_seed(seed);
            (0..50)
                .map(|_| choose(&costs, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(5), picks(5));
        assert_ne!(picks(5), picks(6));
    }
}
