//! `goals`: `getgoals` (`{api}/v2/user`), the person's daily step goal, sleep goal and
//! weight goal. Goals change rarely and no notification announces a change, so they are
//! asked at most once every [`INTERVAL_SECONDS`]: an account's other fetches in between
//! spend nothing on them. A current state, not a history: nothing to backfill.

use super::{Collector, Fetch, Paged, Settings, State, Synced, lock};
use crate::render::families::GaugeFamilies;
use crate::withings::lenient::{self, Decimal};
use crate::withings::paging::BoxFuture;
use crate::withings::{ApiError, Request, RequestError, success_body_as};
use prometheus::proto::MetricFamily;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Mutex;

const ACTION: &str = "getgoals";

/// At most one `getgoals` an hour for each account.
pub const INTERVAL_SECONDS: i64 = 3600;

/// The goals Withings gives; each is absent when the person set none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoalValues {
    pub steps: Option<Decimal>,
    pub sleep_seconds: Option<Decimal>,
    pub weight_grams: Option<Decimal>,
}

impl Paged for GoalValues {
    fn more(&self) -> bool {
        false
    }
    fn offset(&self) -> Option<i64> {
        None
    }
}

#[derive(Deserialize)]
struct BodyRaw {
    #[serde(default)]
    goals: Option<GoalsRaw>,
}

#[derive(Deserialize)]
struct GoalsRaw {
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    steps: Option<Decimal>,
    #[serde(default, deserialize_with = "lenient::opt_decimal")]
    sleep: Option<Decimal>,
    /// Read on its own: a weight goal that makes no sense leaves the others standing.
    #[serde(default)]
    weight: Option<Box<RawValue>>,
}

/// `value × 10^unit` kilograms, as a measure's value is given.
#[derive(Deserialize)]
struct WeightRaw {
    #[serde(deserialize_with = "lenient::int")]
    value: i64,
    #[serde(deserialize_with = "lenient::int")]
    unit: i64,
}

impl WeightRaw {
    /// Exactly, in grams (the naming guide's base unit for mass, as the weight measures).
    fn grams(&self) -> Option<Decimal> {
        let exponent = self.unit.checked_add(3)?;
        Decimal::parse(&format!("{}e{exponent}", self.value))
    }
}

/// Parses a `getgoals` answer. A goal that makes no sense (a weight without its unit) is
/// left out, the others kept.
pub fn parse_getgoals(body: &[u8]) -> Result<GoalValues, ApiError> {
    let parsed: BodyRaw = success_body_as(ACTION, body)?;
    let Some(goals) = parsed.goals else {
        return Ok(GoalValues::default());
    };
    // A goal of 0 steps or 0 seconds is "not set", as Withings' apps show it.
    let set = |d: Option<Decimal>| d.filter(|d| !d.is_zero());
    Ok(GoalValues {
        steps: set(goals.steps),
        sleep_seconds: set(goals.sleep),
        weight_grams: set(goals
            .weight
            .and_then(|w| serde_json::from_str::<WeightRaw>(w.get()).ok())
            .and_then(|w| w.grams())),
    })
}

pub fn families(goals: &GoalValues) -> Vec<MetricFamily> {
    let mut out = GaugeFamilies::new();
    let mut put = |name, help, value: Option<Decimal>| {
        if let Some(value) = value {
            out.push(name, help, &[], value.to_f64());
        }
    };
    put(
        "withings_goal_steps",
        "The person's daily step goal in Withings (absent when none is set).",
        goals.steps,
    );
    put(
        "withings_goal_sleep_seconds",
        "The person's nightly sleep goal in Withings, in seconds (absent when none is set).",
        goals.sleep_seconds,
    );
    put(
        "withings_goal_weight_grams",
        "The person's weight goal in Withings, in grams (absent when none is set).",
        goals.weight_grams,
    );
    out.finish()
}

/// The `goals` collector.
pub struct Goals;

pub fn request() -> Request {
    Request::new("v2/user", ACTION)
}

impl Collector for Goals {
    fn name(&self) -> &'static str {
        "goals"
    }
    fn scope(&self) -> &'static str {
        "user.info"
    }
    fn applis(&self) -> &'static [i64] {
        &[]
    }
    fn action(&self) -> &'static str {
        ACTION
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(Live::default())
    }
}

#[derive(Default)]
struct Live(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    goals: GoalValues,
    /// Unix time of the last answer.
    asked_at: Option<i64>,
}

impl State for Live {
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>> {
        Box::pin(async move {
            let now = fetch.now();
            let fresh = lock(&self.0)
                .asked_at
                .is_some_and(|at| (0..INTERVAL_SECONDS).contains(&(now - at)));
            if fresh {
                return Ok(Synced::default());
            }
            let goals = fetch.call(&request(), parse_getgoals).await?;
            let mut kept = lock(&self.0);
            let updated = usize::from(kept.goals != goals);
            *kept = Kept {
                goals,
                asked_at: Some(now),
            };
            Ok(Synced { groups: 1, updated })
        })
    }

    fn families(&self) -> Vec<MetricFamily> {
        families(&lock(&self.0).goals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_in_base_units_exactly() {
        let goals = parse_getgoals(
            br#"{"status":0,"body":{"goals":{"steps":10000,"sleep":28800,"weight":{"value":70500,"unit":-3}}}}"#,
        )
        .unwrap();
        assert_eq!(goals.steps.map(Decimal::to_f64), Some(10000.0));
        assert_eq!(goals.sleep_seconds.map(Decimal::to_f64), Some(28800.0));
        assert_eq!(goals.weight_grams.map(Decimal::to_f64), Some(70500.0));
        let text = crate::render::families::encode(families(&goals));
        assert!(
            text.contains("withings_goal_weight_grams 70500\n"),
            "{text}"
        );
        assert!(text.contains("withings_goal_steps 10000\n"), "{text}");
        // 72.25 kg given with another unit.
        let goals =
            parse_getgoals(br#"{"status":0,"body":{"goals":{"weight":{"value":7225,"unit":-2}}}}"#)
                .unwrap();
        assert_eq!(goals.weight_grams.map(Decimal::to_f64), Some(72250.0));
    }

    #[test]
    fn a_goal_not_set_is_absent_not_zero() {
        for body in [
            r#"{"status":0,"body":{}}"#,
            r#"{"status":0,"body":{"goals":{}}}"#,
            r#"{"status":0,"body":{"goals":{"steps":0,"weight":{"value":70}}}}"#,
        ] {
            let goals = parse_getgoals(body.as_bytes()).unwrap();
            assert_eq!(goals, GoalValues::default(), "{body}");
            assert!(families(&goals).is_empty(), "{body}");
        }
        assert!(parse_getgoals(br#"{"status":401,"body":{}}"#).is_err());
    }
}
