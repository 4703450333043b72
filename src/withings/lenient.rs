//! Deserializers for fields whose JSON type Withings does not keep to its documentation:
//! integers that arrive as strings, `more`/`offset` that arrive as booleans.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

/// An integer given as a number, a numeric string, or a boolean (false = 0, true = 1).
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// Like [`int`], with `null` or absence meaning `None`.
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(OptVisitor(IntVisitor))
}

/// A string given as a string or a number; `null` is `None`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptVisitor(StringVisitor))
}

/// A flag given as a boolean or a number (non-zero is true); `null` is false.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_option(OptVisitor(FlagVisitor))
        .map(|v| v.unwrap_or(false))
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("integer {v} out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // `1.0` is an integer written oddly; `1.5` is not an integer at all.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("expected an integer, got {v}")))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<i64, E> {
        Ok(i64::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom("expected an integer, got a non-numeric string"))
    }
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean or a number")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        Ok(v != 0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        Ok(v != 0)
    }
}

struct OptVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OptVisitor<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

/// A number exactly as Withings wrote it: `mantissa × 10^exponent`. Kept as decimal digits
/// so that a conversion (kcal to joules) is exact and the one rounding to `f64` happens last:
/// `134.132 × 4184` is 561208.288, where `f64` arithmetic gives 561208.2880000001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    mantissa: i128,
    exponent: i32,
}

impl Decimal {
    /// More digits than an `i128` holds safely are no longer a plausible health value.
    const MAX_DIGITS: usize = 36;

    /// `-12`, `1028.559`, `2.5e3`, surrounding spaces allowed; nothing else (no NaN, no
    /// infinity, no hex).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (number, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().ok()?),
            None => (rest, 0),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = whole.len() + fraction.len();
        if digits == 0
            || digits > Self::MAX_DIGITS
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut mantissa: i128 = 0;
        for b in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa * 10 + i128::from(b - b'0');
        }
        let exponent = exp.checked_sub(i32::try_from(fraction.len()).ok()?)?;
        Some(Self {
            mantissa: if negative { -mantissa } else { mantissa },
            exponent,
        })
    }

    /// The nearest `f64`: Rust's float parsing is correctly rounded, so `1028.559` becomes
    /// the double that prints as `1028.559`.
    pub fn to_f64(self) -> f64 {
        format!("{}e{}", self.mantissa, self.exponent)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// The exact product with an integer; `None` on overflow.
    pub fn times(self, factor: i64) -> Option<Self> {
        Some(Self {
            mantissa: self.mantissa.checked_mul(i128::from(factor))?,
            exponent: self.exponent,
        })
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The exact value times 10^`shift` (a percent to a ratio is -2); `None` on overflow.
    pub fn scaled(self, shift: i32) -> Option<Self> {
        Some(Self {
            mantissa: self.mantissa,
            exponent: self.exponent.checked_add(shift)?,
        })
    }
}

/// A decimal given as a JSON number or a numeric string; `null` or absence is `None`. Read
/// from the number's own text rather than from serde_json's `f64`, whose default parser is
/// not always correctly rounded.
pub fn opt_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    use serde::Deserialize;
    let Some(raw) = Option::<Box<serde_json::value::RawValue>>::deserialize(d)? else {
        return Ok(None);
    };
    let text = raw.get();
    let inner = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted,
        None => text,
    };
    match Decimal::parse(inner) {
        Some(decimal) => Ok(Some(decimal)),
        None => Err(de::Error::custom("expected a decimal number")),
    }
}

/// A JSON number or numeric string already parsed as a value (the maps keyed by time of the
/// high-resolution answers), exactly; anything else `None`.
pub fn value_decimal(raw: &serde_json::Value) -> Option<Decimal> {
    match raw {
        serde_json::Value::Number(n) => Decimal::parse(&n.to_string()),
        serde_json::Value::String(s) => Decimal::parse(s),
        _ => None,
    }
}

/// A JSON string or number as text (a device id, a model); anything else empty.
pub fn value_text(raw: Option<&serde_json::Value>) -> String {
    match raw {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod decimal_tests {
    use super::Decimal;

    #[test]
    fn decimals_are_exact_and_print_as_written() {
        for (text, shown) in [
            ("1028.559", "1028.559"),
            ("85.497", "85.497"),
            ("-0.5", "-0.5"),
            ("2.5e3", "2500"),
            ("12", "12"),
            (" 0.93 ", "0.93"),
        ] {
            let d = Decimal::parse(text).unwrap();
            assert_eq!(d.to_f64().to_string(), shown, "{text}");
        }
        let kcal = Decimal::parse("134.132").unwrap();
        assert_eq!(kcal.times(4184).unwrap().to_f64().to_string(), "561208.288");
        // What plain f64 arithmetic would have printed.
        assert_eq!((134.132_f64 * 4184.0).to_string(), "561208.2880000001");
    }

    #[test]
    fn non_numbers_are_refused() {
        for text in [
            "", "-", ".", "1.2.3", "NaN", "inf", "0x10", "1e", "12a", "true",
        ] {
            assert_eq!(Decimal::parse(text), None, "{text}");
        }
        assert_eq!(Decimal::parse(&"9".repeat(40)), None);
    }
}
