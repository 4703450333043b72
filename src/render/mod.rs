//! Rendering: the measure table (Withings type code → metric, labels, exact scaling) and
//! the metric families and text exposition built from an account's state.

pub mod exposition;
pub mod families;
pub mod measures;
