//! `POST /notify`: subscriptions as Withings keeps them (`subscribe`, `list`, `get`,
//! `revoke`), the HEAD check of the callback at `subscribe` (status 293 when it fails), and
//! the notification form POSTed to a user's callbacks when a reading is added.
//!
//! The simulator contacts loopback callbacks only: any other host is refused with 293, as
//! Withings refuses what it cannot reach.

use super::{EXPIRED_TOKEN_BODY, Inner, Simulator, envelope_reply, lock};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// What `list` shows as `expires` (seen in real answers).
const EXPIRES: i64 = 2_147_483_647;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSubscription {
    pub appli: i64,
    pub callbackurl: String,
    pub comment: String,
}

/// Every user's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    by_user: BTreeMap<String, Vec<SimSubscription>>,
    client: Option<reqwest::Client>,
}

/// The simulator's client for callbacks, made on first use and kept, as Withings keeps its
/// connections: building one per notification (TLS roots, a connection pool) cost more than
/// the POST itself, and on a loaded machine pushed deliveries past their timeout. It lives in
/// the simulator, not in a static, because its connections belong to the simulator's runtime.
fn client(inner: &Mutex<Inner>) -> Option<reqwest::Client> {
    let mut guard = lock(inner);
    if guard.notify.client.is_none() {
        // reqwest is built without a default provider, as in the exporter: the first of
        // the two to need one installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        guard.notify.client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok();
    }
    guard.notify.client.clone()
}

/// Only loopback callbacks are ever contacted.
fn loopback(url: &str) -> Option<url::Url> {
    let url = url::Url::parse(url).ok()?;
    let local = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d == "localhost",
    };
    (local && matches!(url.scheme(), "http" | "https")).then_some(url)
}

/// Withings' check: a HEAD that must answer 2xx.
async fn head_ok(inner: &Mutex<Inner>, url: &str) -> bool {
    let (Some(url), Some(client)) = (loopback(url), client(inner)) else {
        return false;
    };
    client
        .head(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn status(code: i64, error: &str) -> Response<Full<Bytes>> {
    envelope_reply(json!({"status": code, "body": {}, "error": error}).to_string())
}

pub(super) async fn endpoint(
    inner: &Mutex<Inner>,
    params: &BTreeMap<String, String>,
    bearer: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(userid) = bearer.and_then(|t| lock(inner).user_of(t)) else {
        return envelope_reply(EXPIRED_TOKEN_BODY.into());
    };
    let appli = params.get("appli").and_then(|a| a.parse::<i64>().ok());
    let callback = params.get("callbackurl").cloned();
    match params.get("action").map(String::as_str) {
        Some("subscribe") => {
            let (Some(appli), Some(callback)) = (appli, callback) else {
                return status(503, "Invalid Params");
            };
            if callback.len() > 255 || !head_ok(inner, &callback).await {
                return status(
                    293,
                    "The callback URL is either absent or incorrect (it must answer a HEAD request)",
                );
            }
            let mut guard = lock(inner);
            let subs = guard.notify.by_user.entry(userid).or_default();
            if !subs
                .iter()
                .any(|s| s.appli == appli && s.callbackurl == callback)
            {
                subs.push(SimSubscription {
                    appli,
                    callbackurl: callback,
                    comment: params.get("comment").cloned().unwrap_or_default(),
                });
            }
            status(0, "")
        }
        Some("list") => {
            let guard = lock(inner);
            let profiles: Vec<_> = guard
                .notify
                .by_user
                .get(&userid)
                .into_iter()
                .flatten()
                .filter(|s| appli.is_none_or(|a| a == s.appli))
                .map(|s| {
                    json!({"appli": s.appli, "callbackurl": s.callbackurl, "comment": s.comment, "expires": EXPIRES})
                })
                .collect();
            envelope_reply(json!({"status": 0, "body": {"profiles": profiles}}).to_string())
        }
        Some("get") => {
            let (Some(appli), Some(callback)) = (appli, callback) else {
                return status(503, "Invalid Params");
            };
            let guard = lock(inner);
            match guard.notify.by_user.get(&userid).and_then(|subs| {
                subs.iter()
                    .find(|s| s.appli == appli && s.callbackurl == callback)
            }) {
                Some(s) => envelope_reply(
                    json!({"status": 0, "body": {"appli": s.appli, "callbackurl": s.callbackurl, "comment": s.comment, "expires": EXPIRES}})
                        .to_string(),
                ),
                None => status(294, "No such subscription"),
            }
        }
        Some("revoke") => {
            let (Some(appli), Some(callback)) = (appli, callback) else {
                return status(503, "Invalid Params");
            };
            let mut guard = lock(inner);
            let subs = guard.notify.by_user.entry(userid).or_default();
            let before = subs.len();
            subs.retain(|s| !(s.appli == appli && s.callbackurl == callback));
            if subs.len() == before {
                status(294, "No such subscription")
            } else {
                status(0, "")
            }
        }
        _ => status(2554, "Not implemented"),
    }
}

impl Simulator {
    /// `userid`'s subscriptions, as `list` would give them.
    pub fn subscriptions(&self, userid: &str) -> Vec<SimSubscription> {
        self.lock()
            .notify
            .by_user
            .get(userid)
            .cloned()
            .unwrap_or_default()
    }

    /// Cancels `userid`'s subscriptions, as Withings does after failed deliveries.
    pub fn drop_subscriptions(&self, userid: &str) {
        self.lock().notify.by_user.remove(userid);
    }

    /// POSTs the notification form for `appli` to each of `userid`'s callbacks subscribed
    /// to it, as Withings does; returns how many answered 2xx.
    pub async fn notify_user(
        &self,
        userid: &str,
        appli: i64,
        startdate: i64,
        enddate: i64,
    ) -> usize {
        let targets: Vec<String> = self
            .subscriptions(userid)
            .into_iter()
            .filter(|s| s.appli == appli)
            .map(|s| s.callbackurl)
            .collect();
        let Some(client) = client(&self.inner) else {
            return 0;
        };
        let mut delivered = 0;
        for target in targets {
            let Some(url) = loopback(&target) else {
                continue;
            };
            let form = [
                ("userid", userid.to_owned()),
                ("appli", appli.to_string()),
                ("startdate", startdate.to_string()),
                ("enddate", enddate.to_string()),
            ];
            if client
                .post(url)
                .form(&form)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                delivered += 1;
            }
        }
        delivered
    }

    /// Adds a measure group for `userid` and notifies its `appli` 1 subscribers (weight),
    /// the way a scale's upload reaches Withings and then its applications.
    pub async fn add_reading_and_notify(
        &self,
        userid: &str,
        group: serde_json::Value,
    ) -> Result<usize, super::SimulatorError> {
        let date = group
            .get("date")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        self.upsert_user_group(userid, group)?;
        Ok(self.notify_user(userid, 1, date, date + 1).await)
    }

    /// Brings every live (demo) user's readings up to now, and notifies the subscribers of
    /// each user who got new ones: the demo's readings then arrive by push, and so do the
    /// generated day's and night's data as they reach Withings (a watch's sync: `appli` 16, a
    /// night uploaded: 44, an ECG: 54; see [`crate::data::arrivals`]). Returns how many
    /// notifications were delivered.
    pub async fn advance_live_and_notify(&self) -> usize {
        let (fresh, arrived) = {
            let mut guard = self.lock();
            let now = guard.clock.unwrap_or_else(super::unix_now);
            let timezone = guard.timezone.clone();
            let mut fresh = Vec::new();
            let mut arrived = Vec::new();
            for (userid, user) in guard.users.iter_mut() {
                if user.live_extras {
                    if let Some(since) = user.extras_notified_until {
                        let extras = user.live_extras_at(now, &timezone);
                        for (appli, first, last) in crate::data::arrivals(&extras, since, now) {
                            arrived.push((userid.clone(), appli, first, last));
                        }
                    }
                    user.extras_notified_until = Some(now);
                }
                let Some((live, profile)) = user.live.as_mut() else {
                    continue;
                };
                let profile = *profile;
                let groups: Vec<_> = live
                    .advance(now)
                    .into_iter()
                    .filter_map(|g| profile.personalize(g))
                    .filter_map(|g| super::StoredGroup::from_json(g).ok())
                    .collect();
                if !groups.is_empty() {
                    user.groups.extend(groups);
                    fresh.push((userid.clone(), now));
                }
            }
            (fresh, arrived)
        };
        let mut delivered = 0;
        for (userid, now) in fresh {
            delivered += self.notify_user(&userid, 1, now - 60, now).await;
        }
        for (userid, appli, first, last) in arrived {
            delivered += self.notify_user(&userid, appli, first, last).await;
        }
        delivered
    }
}
