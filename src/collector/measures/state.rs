//! The latest value of each exported measurement, merged from `getmeas` pages.

use super::model::MeasureGroup;
pub use super::readings::{
    ATTRIB_AMBIGUOUS, CATEGORY_REAL, MAX_FUTURE_SECONDS, MergeOptions, MergeStats, Reading, Slot,
};
use super::readings::{group_readings, version_of};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The latest reading per [`Slot`]: one per table row, and one per body position for the
/// segmental rows. Only slots with a reading exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatestState {
    readings: BTreeMap<Slot, Reading>,
}

impl LatestState {
    /// The latest reading for row `index` of [`MEASURES`](super::table::MEASURES) (for a segmental row, the one
    /// without a position, which a merge never fills: use [`Self::get_at`]).
    pub fn get(&self, index: usize) -> Option<&Reading> {
        self.readings.get(&Slot {
            index,
            position: None,
        })
    }

    /// The latest reading for row `index` of a segmental type at Withings position `position`.
    pub fn get_at(&self, index: usize, position: i64) -> Option<&Reading> {
        self.readings.get(&Slot {
            index,
            position: Some(position),
        })
    }

    /// Every latest reading, in table order, then position order.
    pub fn readings(&self) -> impl Iterator<Item = (Slot, &Reading)> {
        self.readings.iter().map(|(slot, reading)| (*slot, reading))
    }

    pub fn len(&self) -> usize {
        self.readings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// Folds groups into the state, judging "in the future" by the system clock. An
    /// account's fetch uses [`Self::merge_at`] with its own clock instead, which tests pin.
    pub fn merge<'a>(
        &mut self,
        groups: impl IntoIterator<Item = &'a MeasureGroup>,
        options: MergeOptions,
    ) -> MergeStats {
        self.merge_at(
            groups,
            options,
            crate::clock::Clock::default().unix_seconds(),
        )
    }

    /// Folds groups into the state. The order of groups does not matter: Withings does not
    /// sort them, so the greatest `date` wins, not the first group seen. A group dated more
    /// than [`MAX_FUTURE_SECONDS`] after `now` (unix seconds) is ignored.
    pub fn merge_at<'a>(
        &mut self,
        groups: impl IntoIterator<Item = &'a MeasureGroup>,
        options: MergeOptions,
        now: i64,
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
            let retired: Vec<(Slot, i64)> = self
                .readings
                .iter()
                .filter(|(_, r)| r.grpid == group.grpid && r.modified < version)
                .map(|(slot, r)| (*slot, r.date))
                .collect();
            self.merge_group(group, options, now, &mut stats);
            // Each reading this group held must now come from its new version, at a date no
            // earlier than before; otherwise the true latest may be another, older group.
            for (slot, old_date) in retired {
                let still_held = self.readings.get(&slot).is_some_and(|r| {
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
    fn merge_group(
        &mut self,
        group: &MeasureGroup,
        options: MergeOptions,
        now: i64,
        stats: &mut MergeStats,
    ) {
        let mut updated = 0;
        group_readings(group, options, now, stats, |slot, candidate| {
            if supersedes(&candidate, self.readings.get(&slot)) {
                self.readings.insert(slot, candidate);
                updated += 1;
            }
        });
        stats.updated += updated;
    }
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
    use crate::collector::measures::model::Measure;
    use crate::collector::measures::table::{MEASURES, index_of};
    use std::time::{SystemTime, UNIX_EPOCH};

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
                .map(|&(kind, value, unit)| Measure {
                    value,
                    kind,
                    unit,
                    position: None,
                })
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
        // Scaled exactly, and then refused: no heart beats -9.2e15 times a minute.
        assert_eq!(stats.skipped_implausible, 1);
        assert_eq!(value(&state, 11), None);
        assert!(state.is_empty());
    }

    fn segment(grpid: i64, date: i64, measures: &[(i64, i64, Option<i64>)]) -> MeasureGroup {
        let mut g = group(grpid, date, &[]);
        g.measures = measures
            .iter()
            .map(|&(kind, value, position)| Measure {
                value,
                kind,
                unit: -2,
                position,
            })
            .collect();
        g
    }

    fn at(state: &LatestState, code: i64, position: i64) -> Option<f64> {
        state
            .get_at(index_of(code).unwrap(), position)
            .map(|r| r.value)
    }

    #[test]
    fn segmental_types_keep_one_latest_reading_per_position() {
        let mut state = LatestState::default();
        let stats = state.merge(
            &[segment(
                1,
                100,
                &[
                    (174, 107, Some(2)),
                    (174, 105, Some(3)),
                    (174, 1092, Some(12)),
                    // No position, or one the reference does not know: no slot for it.
                    (174, 999, None),
                    (174, 999, Some(7)),
                    // Whole-body types ignore the position they come with.
                    (8, 1781, Some(7)),
                ],
            )],
            ALL,
        );
        assert_eq!(stats.skipped_unknown_position, 2);
        assert_eq!(at(&state, 174, 2), Some(1070.0));
        assert_eq!(at(&state, 174, 3), Some(1050.0));
        assert_eq!(at(&state, 174, 12), Some(10920.0));
        assert_eq!(value(&state, 174), None);
        assert_eq!(value(&state, 8), Some(17810.0));
        assert_eq!(state.len(), 4);
        // A newer sitting that measured only one arm updates that arm alone.
        state.merge(&[segment(2, 200, &[(174, 110, Some(2))])], ALL);
        assert_eq!(at(&state, 174, 2), Some(1100.0));
        assert_eq!(at(&state, 174, 3), Some(1050.0));
        let order: Vec<(i64, Option<i64>)> = state
            .readings()
            .map(|(slot, _)| (MEASURES[slot.index].code, slot.position))
            .collect();
        assert_eq!(
            order,
            [(8, None), (174, Some(2)), (174, Some(3)), (174, Some(12))]
        );
    }

    #[test]
    fn a_correction_that_drops_a_segment_asks_for_a_full_sync() {
        let mut state = LatestState::default();
        state.merge(
            &[segment(1, 100, &[(175, 460, Some(2)), (175, 458, Some(3))])],
            ALL,
        );
        let mut corrected = segment(1, 100, &[(175, 461, Some(2))]);
        corrected.modified = Some(200);
        assert!(state.merge(&[corrected], ALL).needs_full_sync);
        assert_eq!(at(&state, 175, 2), Some(4610.0));
    }

    #[test]
    fn implausible_values_are_ignored_and_counted() {
        let mut state = LatestState::default();
        state.merge(&[group(1, 100, &[(10, 120, 0), (9, 80, 0)])], ALL);
        // A systolic of 9.2e48 mmHg (9.2e18 × 10^30, within what the scaling accepts),
        // beside a plausible diastolic.
        let absurd = (10, 9_200_000_000_000_000_000, 30);
        let stats = state.merge(&[group(2, 200, &[absurd, (9, 81, 0)])], ALL);
        assert_eq!(stats.skipped_out_of_range, 0);
        assert_eq!(stats.skipped_implausible, 1);
        assert_eq!(value(&state, 10), Some(120.0));
        assert_eq!(value(&state, 9), Some(81.0));
        // The bounds themselves are plausible: 300 mmHg and 0.5 kg are kept.
        let stats = state.merge(&[group(3, 300, &[(10, 300, 0), (1, 500, -3)])], ALL);
        assert_eq!(stats.skipped_implausible, 0);
        assert_eq!(value(&state, 10), Some(300.0));
        assert_eq!(value(&state, 1), Some(500.0));
    }

    #[test]
    fn readings_dated_more_than_a_day_ahead_are_ignored_and_counted() {
        const NOW: i64 = 1_800_000_000;
        let mut state = LatestState::default();
        state.merge_at(&[group(1, NOW - 60, &[(10, 120, 0)])], ALL, NOW);
        let ten_years = 10 * 365 * 86_400;
        let stats = state.merge_at(&[group(2, NOW + ten_years, &[(10, 130, 0)])], ALL, NOW);
        assert_eq!(stats.skipped_future, 1);
        assert_eq!(value(&state, 10), Some(120.0));
        // A device clock a few hours ahead is not a broken answer.
        let stats = state.merge_at(&[group(3, NOW + 3 * 3600, &[(10, 125, 0)])], ALL, NOW);
        assert_eq!(stats.skipped_future, 0);
        assert_eq!(value(&state, 10), Some(125.0));
        let stats = state.merge_at(
            &[group(4, NOW + MAX_FUTURE_SECONDS + 1, &[(10, 126, 0)])],
            ALL,
            NOW,
        );
        assert_eq!(stats.skipped_future, 1);
        // `merge` uses the system clock: ten years ahead of it is refused too.
        let real_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let stats = state.merge(&[group(5, real_now + ten_years, &[(10, 127, 0)])], ALL);
        assert_eq!(stats.skipped_future, 1);
        assert_eq!(value(&state, 10), Some(125.0));
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
