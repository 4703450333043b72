//! Rendering: metric families and the text exposition, for any collector. What a sample
//! means lives with its collector.

pub mod exposition;
pub mod families;
