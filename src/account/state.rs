//! The latest value of each exported measurement, merged from `getmeas` pages.

use crate::render::measures::{MEASURES, scale};
use crate::withings::MeasureGroup;
use std::collections::{HashMap, HashSet};

/// Attribution Withings gives a group whose device may belong to another user.
pub const ATTRIB_AMBIGUOUS: i64 = 1;
/// Category of real measures (2 is user objectives, which are not readings).
pub const CATEGORY_REAL: i64 = 1;

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
    /// A newer version of a group that held a latest reading no longer gives that reading
    /// (its date moved back, the measure or the whole group is gone or no longer counts).
    /// Which reading is now the latest may lie in history this merge did not see: the
    /// caller should rebuild the state from the whole history.
    pub needs_full_sync: bool,
}

/// One slot per row of the measure table.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestState {
    readings: Vec<Option<Reading>>,
}

impl Default for LatestState {
    fn default() -> Self {
        Self {
            readings: vec![None; MEASURES.len()],
        }
    }
}

impl LatestState {
    /// The latest reading for row `index` of [`MEASURES`].
    pub fn get(&self, index: usize) -> Option<&Reading> {
        self.readings.get(index).and_then(Option::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.readings.iter().all(Option::is_none)
    }

    /// Folds groups into the state. The order of groups does not matter: Withings does not
    /// sort them, so the greatest `date` wins, not the first group seen.
    pub fn merge<'a>(
        &mut self,
        groups: impl IntoIterator<Item = &'a MeasureGroup>,
        options: MergeOptions,
    ) -> MergeStats {
        let mut stats = MergeStats::default();
        let groups: Vec<&MeasureGroup> = groups.into_iter().collect();
        // One answer can hold two versions of a group (a correction, or the attrib 0/8 pair).
        // Only the newest version is a reading: letting an older one compete would make the
        // result depend on the order Withings happened to list them in.
        let mut newest: HashMap<i64, i64> = HashMap::with_capacity(groups.len());
        for group in &groups {
            let version = version_of(group);
            newest
                .entry(group.grpid)
                .and_modify(|v| *v = (*v).max(version))
                .or_insert(version);
        }
        let mut seen: HashSet<i64> = HashSet::with_capacity(groups.len());
        for group in groups {
            stats.groups += 1;
            // Of equal versions (identical copies), the first stands for all.
            if newest.get(&group.grpid) != Some(&version_of(group)) || !seen.insert(group.grpid) {
                continue;
            }
            let version = version_of(group);
            let retired: Vec<(usize, i64)> = self
                .readings
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
                .filter(|(_, r)| r.grpid == group.grpid && r.modified < version)
                .map(|(i, r)| (i, r.date))
                .collect();
            self.merge_group(group, options, &mut stats);
            // Each reading this group held must now come from its new version, at a date no
            // earlier than before; otherwise the true latest may be another, older group.
            for (index, old_date) in retired {
                let still_held = self.readings[index].as_ref().is_some_and(|r| {
                    r.grpid == group.grpid && r.modified == version && r.date >= old_date
                });
                if !still_held {
                    stats.needs_full_sync = true;
                }
            }
        }
        stats
    }

    /// Folds one version of a group in, after the filters that say whether it counts.
    fn merge_group(&mut self, group: &MeasureGroup, options: MergeOptions, stats: &mut MergeStats) {
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
        for measure in &group.measures {
            let Some(index) = crate::render::measures::index_of(measure.kind) else {
                continue;
            };
            let def = &MEASURES[index];
            let exponent = i32::try_from(measure.unit)
                .ok()
                .and_then(|u| u.checked_add(def.exponent_shift));
            let Some(value) = exponent.and_then(|e| scale(measure.value, e)) else {
                stats.skipped_out_of_range += 1;
                continue;
            };
            let candidate = Reading {
                value,
                date: group.date,
                grpid: group.grpid,
                modified: version_of(group),
                device_id: group.hash_deviceid.clone().unwrap_or_default(),
                device_model: group.model.clone().unwrap_or_default(),
            };
            if supersedes(&candidate, self.readings[index].as_ref()) {
                self.readings[index] = Some(candidate);
                stats.updated += 1;
            }
        }
    }
}

/// Which version of a group this is: its last modification, else its creation, else its date.
fn version_of(group: &MeasureGroup) -> i64 {
    group.modified.or(group.created).unwrap_or(group.date)
}

/// Whether `new` should replace `current` as the latest reading.
fn supersedes(new: &Reading, current: Option<&Reading>) -> bool {
    let Some(current) = current else {
        return true;
    };
    if new.grpid == current.grpid {
        // The same sitting again: a later modification is a correction and wins even if it
        // moved the date; an identical repeat (attrib 0 and 8 under one grpid) changes nothing.
        return new.modified > current.modified;
    }
    // Ties on date are broken by grpid so that the result does not depend on arrival order.
    (new.date, new.grpid) > (current.date, current.grpid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::measures::index_of;
    use crate::withings::Measure;

    fn group(grpid: i64, date: i64, measures: &[(i64, i64, i64)]) -> MeasureGroup {
        MeasureGroup {
            grpid,
            attrib: Some(0),
            date,
            created: Some(date),
            modified: Some(date),
            category: Some(1),
            hash_deviceid: Some(format!("dev{grpid}")),
            model: Some("BPM Core".into()),
            is_inconclusive: false,
            measures: measures
                .iter()
                .map(|&(kind, value, unit)| Measure { value, kind, unit })
                .collect(),
        }
    }

    const ALL: MergeOptions = MergeOptions {
        include_ambiguous: true,
    };

    fn value(state: &LatestState, code: i64) -> Option<f64> {
        state.get(index_of(code).unwrap()).map(|r| r.value)
    }

    #[test]
    fn greatest_date_wins_in_any_order() {
        let groups = [
            group(1, 100, &[(10, 120, 0)]),
            group(2, 300, &[(10, 130, 0)]),
            group(3, 200, &[(10, 125, 0)]),
        ];
        for perm in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]] {
            let mut state = LatestState::default();
            state.merge(perm.iter().map(|&i| &groups[i]), ALL);
            assert_eq!(value(&state, 10), Some(130.0), "{perm:?}");
            assert_eq!(state.get(index_of(10).unwrap()).unwrap().date, 300);
        }
    }

    #[test]
    fn each_measurement_finds_its_own_latest_group() {
        let mut state = LatestState::default();
        state.merge(
            &[
                group(1, 500, &[(9, 80, 0), (10, 120, 0), (11, 60, 0)]),
                group(2, 400, &[(54, 97, 0)]),
                group(3, 300, &[(71, 36600, -3)]),
                group(4, 200, &[(54, 91, 0), (11, 99, 0)]),
            ],
            ALL,
        );
        assert_eq!(value(&state, 11), Some(60.0));
        assert_eq!(value(&state, 54), Some(0.97));
        assert_eq!(value(&state, 71), Some(36.6));
    }

    #[test]
    fn inconclusive_and_optionally_ambiguous_groups_are_skipped() {
        let mut inconclusive = group(2, 900, &[(54, 80, 0)]);
        inconclusive.is_inconclusive = true;
        let mut ambiguous = group(3, 800, &[(10, 200, 0)]);
        ambiguous.attrib = Some(ATTRIB_AMBIGUOUS);
        let groups = [
            group(1, 100, &[(54, 98, 0), (10, 120, 0)]),
            inconclusive,
            ambiguous,
        ];

        let mut with = LatestState::default();
        let stats = with.merge(&groups, ALL);
        assert_eq!(stats.skipped_inconclusive, 1);
        assert_eq!(value(&with, 54), Some(0.98));
        assert_eq!(value(&with, 10), Some(200.0));

        let mut without = LatestState::default();
        let stats = without.merge(
            &groups,
            MergeOptions {
                include_ambiguous: false,
            },
        );
        assert_eq!(stats.skipped_ambiguous, 1);
        assert_eq!(value(&without, 10), Some(120.0));
    }

    #[test]
    fn a_correction_replaces_its_group_even_with_an_earlier_date() {
        let mut state = LatestState::default();
        state.merge(
            &[
                group(1, 100, &[(10, 120, 0)]),
                group(2, 200, &[(10, 190, 0)]),
            ],
            ALL,
        );
        let mut corrected = group(2, 200, &[(10, 119, 0)]);
        corrected.modified = Some(300);
        state.merge(&[corrected], ALL);
        assert_eq!(value(&state, 10), Some(119.0));
        // A stale copy of the same group (older `modified`) does not undo the correction.
        state.merge(&[group(2, 200, &[(10, 190, 0)])], ALL);
        assert_eq!(value(&state, 10), Some(119.0));
    }

    #[test]
    fn two_versions_of_a_group_in_one_answer_give_the_same_result_in_any_order() {
        // Group 1 was corrected (modified 5) from date 300 back to date 100; the stale copy
        // (modified 3) must not count, so group 2 is the latest whatever the order.
        let mut stale = group(1, 300, &[(10, 150, 0)]);
        stale.modified = Some(3);
        let mut corrected = group(1, 100, &[(10, 120, 0)]);
        corrected.modified = Some(5);
        let other = group(2, 200, &[(10, 130, 0)]);
        let groups = [corrected, other, stale];
        for perm in [
            [0, 1, 2],
            [2, 1, 0],
            [1, 2, 0],
            [2, 0, 1],
            [0, 2, 1],
            [1, 0, 2],
        ] {
            let mut state = LatestState::default();
            state.merge(perm.iter().map(|&i| &groups[i]), ALL);
            assert_eq!(value(&state, 10), Some(130.0), "{perm:?}");
        }
    }

    #[test]
    fn a_correction_that_retires_a_latest_reading_asks_for_a_full_sync() {
        let mut state = LatestState::default();
        state.merge(
            &[
                group(1, 100, &[(10, 120, 0)]),
                group(2, 200, &[(10, 130, 0)]),
            ],
            ALL,
        );
        // Corrected in place, same date: settled by the correction itself.
        let mut same_date = group(2, 200, &[(10, 131, 0)]);
        same_date.modified = Some(300);
        assert!(!state.merge(&[same_date], ALL).needs_full_sync);
        // Moved back in time: group 1 may be the latest now, and only history says.
        let mut moved_back = group(2, 50, &[(10, 131, 0)]);
        moved_back.modified = Some(400);
        assert!(state.merge(&[moved_back], ALL).needs_full_sync);
        // A newer version without the measure, or no longer counting, retires it too.
        let mut state = LatestState::default();
        state.merge(&[group(3, 100, &[(10, 120, 0), (54, 97, 0)])], ALL);
        let mut without_spo2 = group(3, 100, &[(10, 120, 0)]);
        without_spo2.modified = Some(200);
        assert!(state.merge(&[without_spo2], ALL).needs_full_sync);
        let mut inconclusive = group(3, 100, &[(10, 120, 0)]);
        inconclusive.modified = Some(300);
        inconclusive.is_inconclusive = true;
        assert!(state.merge(&[inconclusive], ALL).needs_full_sync);
        // An unrelated new group asks for nothing.
        assert!(
            !state
                .merge(&[group(4, 500, &[(10, 1, 0)])], ALL)
                .needs_full_sync
        );
    }

    #[test]
    fn odd_values_never_panic_and_are_skipped() {
        let mut state = LatestState::default();
        let mut negative = group(5, -10, &[(10, 1, 0)]);
        negative.hash_deviceid = None;
        let stats = state.merge(
            &[
                group(
                    1,
                    100,
                    &[(10, 1, 400), (9, i64::MAX, i64::MIN), (11, i64::MIN, -3)],
                ),
                group(2, 100, &[(999, 1, 0)]),
                negative,
            ],
            ALL,
        );
        assert_eq!(stats.skipped_out_of_range, 3);
        assert_eq!(value(&state, 10), None);
        assert_eq!(value(&state, 11), Some(-9223372036854775.808));
    }

    #[test]
    fn objectives_are_not_readings() {
        let mut objective = group(1, 100, &[(10, 120, 0)]);
        objective.category = Some(2);
        let mut state = LatestState::default();
        assert_eq!(state.merge(&[objective], ALL).skipped_not_real, 1);
        assert!(state.is_empty());
    }
}
