//! Which readings one version of a measure group gives: the filters the live exporter
//! applies (objectives, ambiguous, inconclusive, undatable, future, unknown positions,
//! exponents out of range, implausible values) and the scaling, shared by the latest-value
//! merge ([`super::state`]) and the history backfill ([`crate::backfill`]) so that both
//! leave out exactly the same readings.

use super::state::{
    ATTRIB_AMBIGUOUS, CATEGORY_REAL, MAX_FUTURE_SECONDS, MergeOptions, MergeStats, Reading, Slot,
};
use crate::render::measures::{MEASURES, index_of, is_plausible, position_name, scale};
use crate::withings::MeasureGroup;

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
