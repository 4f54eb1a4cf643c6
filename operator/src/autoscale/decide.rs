//! The autoscaler's arithmetic, pure: the HPA's replica formula with its tolerance, and its
//! stabilization windows (kube-controller-manager's `replica_calculator.go` and
//! `stabilizeRecommendationWithBehaviors`), then the resource's bounds.

use crate::crd::AutoscalingSpec;

/// The HPA's default tolerance: a usage ratio within 10 % of 1 changes nothing.
pub const TOLERANCE: f64 = 0.1;

/// One raw recommendation of the formula, kept for the stabilization windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// Unix seconds.
    pub at: i64,
    pub replicas: i32,
}

/// The per-replica signal read from the active revision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Signal {
    /// Ready pods the value was read from.
    pub pods: i32,
    /// The per-replica value, in the target's unit.
    pub value: f64,
}

/// What the autoscaler decided at one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The formula's raw recommendation (to remember), when there was a signal.
    pub recommendation: Option<i32>,
    /// Replicas to run: stabilized, held during a rollout's traffic switch, and bounded.
    pub desired: i32,
}

/// The HPA's formula: `ceil(pods x value / target)`, or `current` when the ratio is within the
/// tolerance (so a signal hovering at its target never flaps the replica count).
pub fn formula(current: i32, signal: Signal, target: f64) -> i32 {
    let ratio = signal.value / target;
    if !ratio.is_finite() || (ratio - 1.0).abs() <= TOLERANCE {
        return current;
    }
    let raw = (f64::from(signal.pods.max(0)) * ratio).ceil();
    // A finite ratio of a bounded pod count; the bounds come later, this only keeps it an i32.
    raw.clamp(0.0, f64::from(i32::MAX)) as i32
}

/// The HPA's stabilization: scale-up goes at most to the lowest recommendation of the
/// scale-up window, scale-down at most to the highest of the scale-down window; both windows
/// include `recommended` itself. `history` holds earlier recommendations, any order.
pub fn stabilize(
    current: i32,
    recommended: i32,
    history: &[Recommendation],
    now: i64,
    up_window_seconds: u32,
    down_window_seconds: u32,
) -> i32 {
    let up_cutoff = now - i64::from(up_window_seconds);
    let down_cutoff = now - i64::from(down_window_seconds);
    let mut up = recommended;
    let mut down = recommended;
    for earlier in history {
        if earlier.at > up_cutoff {
            up = up.min(earlier.replicas);
        }
        if earlier.at > down_cutoff {
            down = down.max(earlier.replicas);
        }
    }
    current.max(up).min(down)
}

/// One tick: the formula on `signal` (none: the replica count stays, only the bounds apply),
/// the stabilization over `history`, no scale-down while `hold_down` (a rollout moving traffic,
/// whose windows must see the pods they started with), then `[minReplicas, maxReplicas]`.
pub fn decide(
    spec: &AutoscalingSpec,
    target: f64,
    current: i32,
    signal: Option<Signal>,
    history: &[Recommendation],
    now: i64,
    hold_down: bool,
) -> Decision {
    let recommendation = signal.map(|signal| formula(current, signal, target));
    let stabilized = match recommendation {
        Some(recommended) => stabilize(
            current,
            recommended,
            history,
            now,
            spec.scale_up_stabilization_seconds,
            spec.scale_down_stabilization_seconds,
        ),
        None => current,
    };
    let held = if hold_down { stabilized.max(current) } else { stabilized };
    Decision { recommendation, desired: held.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas)) }
}

/// Drops the recommendations no window can reach any more.
pub fn prune(history: &mut Vec<Recommendation>, now: i64, spec: &AutoscalingSpec) {
    let longest = spec.scale_up_stabilization_seconds.max(spec.scale_down_stabilization_seconds);
    let cutoff = now - i64::from(longest);
    history.retain(|r| r.at > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::AutoscalingTarget;

    fn spec(min: i32, max: i32, up: u32, down: u32) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target: AutoscalingTarget {
                queue_depth_per_replica: Some(2.0),
                in_flight_per_replica: None,
                ttft_p95_ms: None,
            },
            scale_up_stabilization_seconds: up,
            scale_down_stabilization_seconds: down,
        }
    }

    fn signal(pods: i32, value: f64) -> Signal {
        Signal { pods, value }
    }

    fn at(at: i64, replicas: i32) -> Recommendation {
        Recommendation { at, replicas }
    }

    #[test]
    fn the_formula_is_the_hpas_ceil_of_pods_times_ratio() {
        // 2 pods at 5 waiting each, target 2: ceil(2 x 2.5) = 5.
        assert_eq!(formula(2, signal(2, 5.0), 2.0), 5);
        // ceil rounds a fraction of a pod up: 3 x 1.5 / 2 = 2.25 -> 3.
        assert_eq!(formula(3, signal(3, 1.5), 2.0), 3);
        // Idle pods recommend zero; the bounds lift that to minReplicas later.
        assert_eq!(formula(4, signal(4, 0.0), 2.0), 0);
        // Fewer ready pods than replicas: the formula counts the pods it read.
        assert_eq!(formula(3, signal(1, 8.0), 2.0), 4);
    }

    #[test]
    fn a_ratio_within_ten_percent_keeps_the_current_count() {
        assert_eq!(formula(3, signal(3, 2.18), 2.0), 3);
        assert_eq!(formula(3, signal(3, 1.82), 2.0), 3);
        // Just past the tolerance it moves: 3 x 2.3 / 2 = 3.45 -> 4.
        assert_eq!(formula(3, signal(3, 2.3), 2.0), 4);
        // 3 x 1.7 / 2 = 2.55 -> 3: past the tolerance but the ceil keeps 3.
        assert_eq!(formula(3, signal(3, 1.7), 2.0), 3);
        assert_eq!(formula(3, signal(3, 1.2), 2.0), 2);
    }

    #[test]
    fn a_degenerate_target_changes_nothing() {
        assert_eq!(formula(3, signal(3, 1.0), 0.0), 3);
        assert_eq!(formula(3, signal(3, f64::NAN), 2.0), 3);
    }

    #[test]
    fn scale_down_follows_the_highest_recommendation_of_its_window() {
        let history = [at(70, 5), at(80, 4), at(95, 2)];
        // Window 30 s at t=100: 5 (t=70) is out (cutoff 70 is exclusive), 4 is in.
        assert_eq!(stabilize(5, 1, &history, 100, 0, 30), 4);
        // Once the window has only low recommendations, scale down goes through.
        assert_eq!(stabilize(5, 1, &history, 111, 0, 30), 2);
        assert_eq!(stabilize(5, 1, &[], 111, 0, 30), 1);
    }

    #[test]
    fn scale_up_follows_the_lowest_recommendation_of_its_window() {
        let history = [at(90, 2), at(95, 6)];
        assert_eq!(stabilize(2, 8, &history, 100, 20, 0), 2);
        // Past the low one, up to the lowest left: 6.
        assert_eq!(stabilize(2, 8, &history, 111, 20, 0), 6);
        // A zero window scales up at once.
        assert_eq!(stabilize(2, 8, &history, 100, 0, 0), 8);
    }

    #[test]
    fn stabilization_never_moves_against_the_recommendation() {
        // Current 3, recommendations between 2 and 4 over both windows: stays 3.
        let history = [at(95, 2), at(96, 4)];
        assert_eq!(stabilize(3, 3, &history, 100, 60, 60), 3);
    }

    #[test]
    fn decide_bounds_holds_and_keeps_without_a_signal() {
        let s = spec(1, 4, 0, 0);
        let d = decide(&s, 2.0, 2, Some(signal(2, 10.0)), &[], 100, false);
        assert_eq!(d, Decision { recommendation: Some(10), desired: 4 });
        let d = decide(&s, 2.0, 2, Some(signal(2, 0.0)), &[], 100, false);
        assert_eq!(d, Decision { recommendation: Some(0), desired: 1 });
        // A rollout switching traffic: no scale-down, scale-up still goes.
        assert_eq!(decide(&s, 2.0, 3, Some(signal(3, 0.0)), &[], 100, true).desired, 3);
        assert_eq!(decide(&s, 2.0, 2, Some(signal(2, 4.0)), &[], 100, true).desired, 4);
        // No reading: nothing moves but a count outside the bounds.
        assert_eq!(decide(&s, 2.0, 2, None, &[], 100, false), Decision { recommendation: None, desired: 2 });
        assert_eq!(decide(&s, 2.0, 7, None, &[], 100, false).desired, 4);
    }

    #[test]
    fn prune_keeps_what_the_longest_window_reaches() {
        let s = spec(1, 4, 10, 30);
        let mut history = vec![at(60, 1), at(71, 2), at(99, 3)];
        prune(&mut history, 100, &s);
        assert_eq!(history, vec![at(71, 2), at(99, 3)]);
    }
}
