//! Which readings one version of a measure group gives: the filters the live exporter
//! applies (objectives, ambiguous, inconclusive, undatable, future, unknown positions,
//! exponents out of range, implausible values) and the scaling, shared by the latest-value
//! merge ([`super::state`]) and the history ([`super::history`]) so that both leave out
//! exactly the same readings.

use super::model::MeasureGroup;
use super::table::{MEASURES, index_of, is_plausible, position_name, scale};

/// Attribution Withings gives a group whose device may belong to another user.
pub const ATTRIB_AMBIGUOUS: i64 = 1;
/// Category of real measures (2 is user objectives, which are not readings).
pub const CATEGORY_REAL: i64 = 1;
/// How far ahead of the exporter's clock a group may be dated. Device clocks drift by
/// minutes and time zones are sometimes applied twice; a reading dated further ahead would
/// stay "the latest" until that date, hiding every real reading meanwhile.
pub const MAX_FUTURE_SECONDS: i64 = 86_400;

/// The latest reading of one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// When it was taken (the group's `date`), unix seconds.
    pub date: i64,
    pub grpid: i64,
    /// The group's `modified` time, to tell a correction from the version it replaces.
    pub modified: i64,
    pub device_id: String,
    pub device_model: String,
}

/// Where a latest reading is kept: its row of [`MEASURES`](super::table::MEASURES) and, for a segmental type
/// (`by_position`), the Withings `position` code of the body part. Ordered by row, then
/// position, which is the order the exposition lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub index: usize,
    /// `None` for every type that is not segmental; a documented position code otherwise.
    pub position: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct MergeOptions {
    pub include_ambiguous: bool,
}

/// What a merge did with the groups it was given, for the exporter's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub groups: usize,
    pub updated: usize,
    pub skipped_inconclusive: usize,
    pub skipped_ambiguous: usize,
    pub skipped_out_of_range: usize,
    pub skipped_not_real: usize,
    /// Measures whose value lies outside the plausible range of their table row.
    pub skipped_implausible: usize,
    /// Groups dated more than [`MAX_FUTURE_SECONDS`] after the merge's clock.
    pub skipped_future: usize,
    /// Segmental measures without a `position`, or with one the reference does not document.
    pub skipped_unknown_position: usize,
    /// A newer version of a group that held a latest reading no longer gives that reading
    /// (its date moved back, the measure or the whole group is gone or no longer counts).
    /// Which reading is now the latest may lie in history this merge did not see: the
    /// caller should rebuild the state from the whole history.
    pub needs_full_sync: bool,
}

/// Which version of a group this is: its last modification, else its creation, else its date.
pub fn version_of(group: &MeasureGroup) -> i64 {
    group.modified.or(group.created).unwrap_or(group.date)
}

/// Calls `each` with every reading this version of `group` gives, counting what it leaves
/// out in `stats`. `now` (unix seconds) judges "in the future".
pub fn group_readings(
    group: &MeasureGroup,
    options: MergeOptions,
    now: i64,
    stats: &mut MergeStats,
    mut each: impl FnMut(Slot, Reading),
) {
    if group.category.is_some_and(|c| c != CATEGORY_REAL) {
        stats.skipped_not_real += 1;
        return;
    }
    if group.attrib == Some(ATTRIB_AMBIGUOUS) && !options.include_ambiguous {
        stats.skipped_ambiguous += 1;
        return;
    }
    if group.is_inconclusive {
        stats.skipped_inconclusive += 1;
        return;
    }
    // A negative date is not a reading we can place in time.
    if group.date < 0 {
        stats.skipped_out_of_range += 1;
        return;
    }
    if group.date > now.saturating_add(MAX_FUTURE_SECONDS) {
        stats.skipped_future += 1;
        return;
    }
    for measure in &group.measures {
        let Some(index) = index_of(measure.kind) else {
            continue;
        };
        let def = &MEASURES[index];
        let position = if def.by_position {
            match measure.position.filter(|p| position_name(*p).is_some()) {
                Some(p) => Some(p),
                None => {
                    stats.skipped_unknown_position += 1;
                    continue;
                }
            }
        } else {
            // Whole-body types come with position 7 (undocumented): it tells nothing apart.
            None
        };
        let exponent = i32::try_from(measure.unit)
            .ok()
            .and_then(|u| u.checked_add(def.exponent_shift));
        let Some(value) = exponent.and_then(|e| scale(measure.value, e)) else {
            stats.skipped_out_of_range += 1;
            continue;
        };
        if !is_plausible(def, value) {
            stats.skipped_implausible += 1;
            continue;
        }
        each(
            Slot { index, position },
            Reading {
                value,
                date: group.date,
                grpid: group.grpid,
                modified: version_of(group),
                device_id: group.hash_deviceid.clone().unwrap_or_default(),
                device_model: group.model.clone().unwrap_or_default(),
            },
        );
    }
}
