//! Which account may fetch from Withings now: the application's decision, taken here and
//! nowhere else. Two rules, in this order: a subscribed account fetches only when a
//! notification or its safety poll asks for it ([`schedule`]), and then, like every other
//! account, only with the fair share's yes ([`share`]), so that the request budget bounds it.
//! The notification receiver and the subscriptions (`notify`) stand above and only tell the
//! schedule what they learnt.

pub mod schedule;
pub mod share;

use crate::account::{ServedFrom, Wake};
use prometheus::proto::MetricFamily;
use schedule::Schedule;
use share::FairShare;
use std::any::Any;
use std::sync::{Arc, OnceLock};

/// What the notifications add to an account's probe, told the application by the layer
/// that owns them (it stands above and hands itself down).
pub trait Notifications: Any + Send + Sync {
    /// This account's notification families, for its probe.
    fn account_families(&self, account: &str) -> Vec<MetricFamily>;
    /// So that the layer that made it can find its own type again.
    fn as_any(&self) -> &dyn Any;
}

/// The application's admission: the fair share, and the schedule once notifications are on.
pub struct Gate {
    share: FairShare,
    schedule: OnceLock<Arc<Schedule>>,
    notifications: OnceLock<Arc<dyn Notifications>>,
}

impl Gate {
    pub fn new(share: FairShare) -> Self {
        Self {
            share,
            schedule: OnceLock::new(),
            notifications: OnceLock::new(),
        }
    }

    /// Turns notifications on (once): subscribed accounts then follow `schedule`.
    pub fn notifications_on(&self, schedule: Arc<Schedule>, notifications: Arc<dyn Notifications>) {
        let _ = self.schedule.set(schedule);
        let _ = self.notifications.set(notifications);
    }

    pub fn schedule(&self) -> Option<&Arc<Schedule>> {
        self.schedule.get()
    }

    pub fn notifications(&self) -> Option<&Arc<dyn Notifications>> {
        self.notifications.get()
    }

    /// Whether a fetch for `account` may start now, and which collectors it runs (when its
    /// schedule let it, it is counted as started). `cost`: the requests a fetch woken so
    /// makes, for the fair share to count it at its own size.
    pub fn admit(&self, account: &str, cost: impl Fn(&Wake) -> usize) -> Option<Wake> {
        let Some(schedule) = self.schedule() else {
            return self.share.admit(account).then_some(Wake::All);
        };
        if schedule.wants(account) == Some(false)
            || !self
                .share
                .admit_costing(account, cost(&schedule.upcoming(account)))
        {
            return None;
        }
        Some(schedule.started(account))
    }

    /// Where a refused probe's data came from: a subscribed account waits for its
    /// notifications, any other was held back by the budget.
    pub fn refused_as(&self, account: &str) -> ServedFrom {
        match self.schedule().and_then(|s| s.wants(account)) {
            Some(false) => ServedFrom::Subscribed,
            _ => ServedFrom::Budget,
        }
    }
}
