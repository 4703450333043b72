//! The measure table: which Withings measure types this exporter exposes, under which metric
//! name and labels, and how a raw `value × 10^unit` becomes the exposed number.
//!
//! Adding a Withings type is one row in [`MEASURES`].

/// One exported measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureDef {
    /// Withings `type` code.
    pub code: i64,
    /// Value of the `measurement` label on `withings_measurement_timestamp_seconds`.
    pub measurement: &'static str,
    /// Metric family the value is exposed in.
    pub metric: &'static str,
    pub help: &'static str,
    /// Labels that tell rows of the same family apart (`kind="systolic"`).
    pub labels: &'static [(&'static str, &'static str)],
    /// Extra power of ten applied on top of the API's `unit`: -2 turns a percentage into a ratio.
    pub exponent_shift: i32,
}

const BP_HELP: &str = "Latest blood pressure reading from Withings, in mmHg.";

pub const MEASURES: &[MeasureDef] = &[
    MeasureDef {
        code: 10,
        measurement: "systolic_blood_pressure",
        metric: "withings_blood_pressure_mmhg",
        help: BP_HELP,
        labels: &[("kind", "systolic")],
        exponent_shift: 0,
    },
    MeasureDef {
        code: 9,
        measurement: "diastolic_blood_pressure",
        metric: "withings_blood_pressure_mmhg",
        help: BP_HELP,
        labels: &[("kind", "diastolic")],
        exponent_shift: 0,
    },
    MeasureDef {
        code: 11,
        measurement: "heart_rate",
        metric: "withings_heart_rate_bpm",
        help: "Latest heart pulse from Withings, in beats per minute.",
        labels: &[],
        exponent_shift: 0,
    },
    MeasureDef {
        code: 54,
        measurement: "spo2",
        metric: "withings_spo2_ratio",
        help: "Latest blood oxygen saturation (SpO2) from Withings, as a ratio (0.98 = 98 %).",
        labels: &[],
        exponent_shift: -2,
    },
    MeasureDef {
        code: 71,
        measurement: "body_temperature",
        metric: "withings_body_temperature_celsius",
        help: "Latest body temperature from Withings, in degrees Celsius.",
        labels: &[],
        exponent_shift: 0,
    },
];

/// The `meastypes` asked for when the operator does not choose.
pub const DEFAULT_MEASTYPES: &[i64] = &[9, 10, 11, 54, 71];

/// Index of a type code in [`MEASURES`].
pub fn index_of(code: i64) -> Option<usize> {
    MEASURES.iter().position(|m| m.code == code)
}

/// Largest power of ten we accept from the API. Real responses use -3..=0; anything far
/// outside is a corrupted answer, and refusing it keeps the exposition free of 1e300s.
const MAX_ABS_EXPONENT: i32 = 30;

/// `value × 10^exponent`, computed so that the result is the `f64` nearest to the exact
/// decimal: 37370 × 10^-3 is 37.37, not the 37.370000000000005 that float multiplication gives.
///
/// The decimal is written out as text and parsed, since Rust's float parser rounds correctly.
/// Returns `None` for an exponent outside ±30.
pub fn scale(value: i64, exponent: i32) -> Option<f64> {
    if exponent.abs() > MAX_ABS_EXPONENT {
        return None;
    }
    let text = if exponent >= 0 {
        format!("{value}e{exponent}")
    } else {
        let digits = value.unsigned_abs().to_string();
        let frac = exponent.unsigned_abs() as usize;
        let sign = if value < 0 { "-" } else { "" };
        if digits.len() > frac {
            let (int, dec) = digits.split_at(digits.len() - frac);
            format!("{sign}{int}.{dec}")
        } else {
            format!("{sign}0.{}{digits}", "0".repeat(frac - digits.len()))
        }
    };
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_exact_to_the_last_digit() {
        assert_eq!(scale(37370, -3), Some(37.37));
        assert_eq!(
            scale(37370, -3).map(|v| v.to_string()).as_deref(),
            Some("37.37")
        );
        assert_eq!(scale(10600, -2), Some(106.0));
        assert_eq!(scale(109, 0), Some(109.0));
        assert_eq!(
            scale(99, -2).map(|v| v.to_string()).as_deref(),
            Some("0.99")
        );
        assert_eq!(scale(5, -3), Some(0.005));
        assert_eq!(scale(-1234, -2), Some(-12.34));
        assert_eq!(scale(7, 2), Some(700.0));
        assert_eq!(scale(0, -3), Some(0.0));
        assert_eq!(scale(i64::MIN, -3), Some(-9223372036854775.808));
    }

    #[test]
    fn absurd_exponents_are_refused() {
        assert_eq!(scale(1, 400), None);
        assert_eq!(scale(1, -400), None);
        assert_eq!(scale(1, 31), None);
        assert!(scale(i64::MAX, 30).is_some());
    }

    #[test]
    fn every_thermometer_reading_prints_as_its_decimal() {
        // Exhaustive over the plausible range: the printed number is exactly the decimal
        // Withings meant, with no binary-float tail such as 37.370000000000005.
        for value in 30_000..45_000_i64 {
            let want = format!("{}.{:03}", value / 1000, value % 1000);
            let want = want.trim_end_matches('0').trim_end_matches('.');
            assert_eq!(scale(value, -3).unwrap().to_string(), want);
        }
        for value in 0..=100_i64 {
            let got = scale(value, -2).unwrap().to_string();
            let want = if value == 100 {
                "1".to_string()
            } else {
                format!("0.{value:02}").trim_end_matches('0').to_string()
            };
            let want = if value == 0 { "0".to_string() } else { want };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, m) in MEASURES.iter().enumerate() {
            assert_eq!(index_of(m.code), Some(i), "duplicate code {}", m.code);
            assert!(m.metric.starts_with("withings_"));
            let same_family: Vec<_> = MEASURES.iter().filter(|o| o.metric == m.metric).collect();
            for o in same_family {
                assert_eq!(o.help, m.help, "{} rows disagree on HELP", m.metric);
                let names = |d: &MeasureDef| d.labels.iter().map(|l| l.0).collect::<Vec<_>>();
                assert_eq!(
                    names(o),
                    names(m),
                    "{} rows disagree on label names",
                    m.metric
                );
            }
        }
        for code in DEFAULT_MEASTYPES {
            assert!(index_of(*code).is_some());
        }
    }
}
