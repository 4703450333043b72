//! `devices`: `getdevice` (`{api}/v2/user`), the devices linked to the account, with their
//! battery state and last sync. Each answer is the whole list, so it replaces the last one.

use super::{Collector, Fetch, Merged, Paged, Settings, State, Synced, device_id, lock};
use crate::render::families::GaugeFamilies;
use crate::secret::Secret;
use crate::withings::paging::BoxFuture;
use crate::withings::{
    ApiError, Request, RequestError, WithingsClient, lenient, row_as, success_body_as,
};
use prometheus::proto::MetricFamily;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Mutex;

const ACTION: &str = "getdevice";

/// The states of `withings_device_battery`, in exposition order.
pub const BATTERY_LEVELS: [&str; 4] = ["low", "medium", "high", "unknown"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub device_model: String,
    pub device_type: String,
    /// One of [`BATTERY_LEVELS`]; anything else Withings says is `unknown`.
    pub battery: &'static str,
    pub last_session: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePage {
    /// As listed, duplicates included: [`DevicesState::merge`] folds them.
    pub devices: Vec<Device>,
    pub malformed_rows: usize,
}

impl Paged for DevicePage {
    fn more(&self) -> bool {
        false
    }
    fn offset(&self) -> Option<i64> {
        None
    }
}

#[derive(Deserialize)]
struct BodyRaw<'a> {
    #[serde(borrow, default)]
    devices: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RowRaw {
    #[serde(rename = "type", default, deserialize_with = "lenient::opt_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    battery: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    hash_deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    deviceid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    last_session_date: Option<i64>,
}

fn battery_level(text: Option<&str>) -> &'static str {
    let text = text.unwrap_or("").trim();
    BATTERY_LEVELS
        .into_iter()
        .find(|level| level.eq_ignore_ascii_case(text))
        .unwrap_or("unknown")
}

/// Parses a `getdevice` answer. A malformed entry is counted and skipped.
pub fn parse_getdevice(body: &[u8]) -> Result<DevicePage, ApiError> {
    let parsed: BodyRaw = success_body_as(ACTION, body)?;
    let mut page = DevicePage::default();
    for row in parsed.devices {
        let parsed = row_as::<RowRaw>(ACTION, row, "device");
        match parsed {
            Some(raw) => page.devices.push(Device {
                device_id: device_id(raw.hash_deviceid, raw.deviceid),
                device_model: raw.model.unwrap_or_default(),
                device_type: raw.kind.unwrap_or_default(),
                battery: battery_level(raw.battery.as_deref()),
                last_session: raw.last_session_date,
            }),
            None => page.malformed_rows += 1,
        }
    }
    Ok(page)
}

/// The account's devices, one per (id, type).
#[derive(Debug, Clone, Default)]
pub struct DevicesState {
    devices: BTreeMap<(String, String), Device>,
}

impl DevicesState {
    /// Replaces the list with this answer's. Withings can list one device several times
    /// (seen: the same scale three times, with and without a last session); they become one
    /// device, keyed by id and type, whose last sync is the latest any entry gives and whose
    /// battery and model are those of the entry that synced last (a known battery level and a
    /// non-empty model are preferred over none).
    pub fn merge(&mut self, page: DevicePage) -> Merged {
        let rows = page.devices.len();
        let mut merged: BTreeMap<(String, String), Device> = BTreeMap::new();
        for device in page.devices {
            let key = (device.device_id.clone(), device.device_type.clone());
            match merged.get_mut(&key) {
                None => {
                    merged.insert(key, device);
                }
                Some(kept) => {
                    let rank = |d: &Device| (d.last_session, d.battery != "unknown");
                    let model = if device.device_model.is_empty() {
                        kept.device_model.clone()
                    } else {
                        device.device_model.clone()
                    };
                    let last_session = kept.last_session.max(device.last_session);
                    if rank(&device) > rank(kept) {
                        *kept = device;
                    }
                    if kept.device_model.is_empty() {
                        kept.device_model = model;
                    }
                    kept.last_session = last_session;
                }
            }
        }
        self.devices = merged;
        Merged {
            rows,
            malformed: page.malformed_rows,
            complete: true,
        }
    }

    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = GaugeFamilies::new();
        for device in self.devices.values() {
            let labels = [
                ("device_id", device.device_id.as_str()),
                ("device_model", device.device_model.as_str()),
                ("device_type", device.device_type.as_str()),
            ];
            for level in BATTERY_LEVELS {
                let mut with_level = labels.to_vec();
                with_level.push(("level", level));
                out.push(
                    "withings_device_battery",
                    "Battery state of each device as a state set: 1 for the level Withings reports (high > 75 %, medium > 30 %, low below; unknown when it does not say), 0 for the others.",
                    &with_level,
                    if device.battery == level { 1.0 } else { 0.0 },
                );
            }
            if let Some(t) = device.last_session {
                out.push(
                    "withings_device_last_sync_timestamp_seconds",
                    "Unix time each device last synced with Withings (absent when Withings gives no last session).",
                    &labels,
                    t as f64,
                );
            }
        }
        out.finish()
    }
}

/// The `devices` collector: a current state, not a history, so nothing to backfill.
pub struct Devices;

/// The request of `getdevice`.
pub fn request() -> Request {
    Request::new("v2/user", ACTION)
}

/// The account's devices.
pub async fn getdevice(client: &WithingsClient, token: &Secret) -> Result<DevicePage, ApiError> {
    client.call(token, &request(), parse_getdevice).await
}

impl Collector for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }
    fn scope(&self) -> &'static str {
        "user.info"
    }
    fn applis(&self) -> &'static [i64] {
        &[]
    }
    fn action(&self) -> &'static str {
        ACTION
    }
    fn state(&self, _: &Settings) -> Box<dyn State> {
        Box::new(Live::default())
    }
}

/// One account's devices, as the last answer listed them.
#[derive(Default)]
struct Live(Mutex<DevicesState>);

impl State for Live {
    fn sync<'a>(&'a self, fetch: &'a Fetch<'a>) -> BoxFuture<'a, Result<Synced, RequestError>> {
        Box::pin(async move {
            let page = fetch.call(&request(), parse_getdevice).await?;
            let merged = lock(&self.0).merge(page);
            fetch.skip("malformed", merged.malformed);
            Ok(Synced {
                groups: merged.rows,
                updated: 0,
            })
        })
    }

    fn families(&self) -> Vec<MetricFamily> {
        lock(&self.0).families()
    }
}
