//! The stored shapes: a license and the devices bound to it.

use crate::input::{CustomerName, DeviceName, Email, FeatureCode, HardwareId, LicenseKey, OrderId, Platform, Product};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Metadata = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseType {
    Perpetual,
    Subscription,
    TimeLimited,
    Trial,
    Consumption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Active,
    Suspended,
    Revoked,
}

/// When a license stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "ExpirationFields")]
pub enum Expiration {
    Never,
    OnDate { date: Timestamp },
    DaysAfterActivation { days: u32 },
    DaysAfterCreation { days: u32 },
}

impl Expiration {
    pub const MAX_DAYS: u32 = 36_500;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExpirationType {
    Never,
    OnDate,
    DaysAfterActivation,
    DaysAfterCreation,
}

/// The wire form `{type, date?, days?}`, read field by field so an error names `expiration.date`
/// rather than the whole object (serde's internally tagged enums lose the inner path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpirationFields {
    #[serde(rename = "type")]
    kind: ExpirationType,
    #[serde(default)]
    date: Option<Timestamp>,
    #[serde(default)]
    days: Option<u32>,
}

impl TryFrom<ExpirationFields> for Expiration {
    type Error = String;

    fn try_from(fields: ExpirationFields) -> Result<Self, String> {
        match (fields.kind, fields.date, fields.days) {
            (ExpirationType::Never, None, None) => Ok(Expiration::Never),
            (ExpirationType::OnDate, Some(date), None) => Ok(Expiration::OnDate { date }),
            (ExpirationType::DaysAfterActivation, None, Some(days)) => Ok(Expiration::DaysAfterActivation { days }),
            (ExpirationType::DaysAfterCreation, None, Some(days)) => Ok(Expiration::DaysAfterCreation { days }),
            (ExpirationType::Never, _, _) => Err("of type never takes neither `date` nor `days`".into()),
            (ExpirationType::OnDate, _, _) => Err("of type on_date needs `date` (and no `days`)".into()),
            (_, _, _) => Err("of type days_after_* needs `days` (and no `date`)".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<CustomerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<CustomerName>,
}

/// How often a consumption counter starts again from zero (lazily, at the first use of a new period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumptionPeriod {
    Day,
    Week,
    Month,
    Year,
}

/// Consumption terms, of a license or of one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metering {
    /// Absent: consumption is counted but never limited.
    pub max_consumptions: Option<u64>,
    pub allow_overages: bool,
    /// With `allow_overages`, how far past `max_consumptions` use may go; absent means without end.
    pub max_overages: Option<u64>,
    /// Absent: the counter never resets.
    pub consumption_period: Option<ConsumptionPeriod>,
}

/// An entitlement to one feature of the product, with its own expiry and consumption terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub code: FeatureCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consumptions: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_overages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_overages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_period: Option<ConsumptionPeriod>,
}

impl Feature {
    pub fn metering(&self) -> Metering {
        Metering {
            max_consumptions: self.max_consumptions,
            allow_overages: self.allow_overages,
            max_overages: self.max_overages,
            consumption_period: self.consumption_period,
        }
    }
}

/// Use counted in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub period: Period,
    pub used: u64,
}

/// The period a counter counts in, as stored: `2026-11-25` (day), `2026-W48` (ISO week),
/// `2026-11` (month), `2026` (year), or `all` for a counter that never resets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Period(String);

impl Period {
    /// The period a counter of this kind counts in at `now`.
    pub fn at(period: Option<ConsumptionPeriod>, now: Timestamp) -> Self {
        let name = match (period, now.date()) {
            (None, _) | (_, None) => Self::ALL_TIME.to_string(),
            (Some(ConsumptionPeriod::Day), Some(date)) => {
                format!("{}-{:02}-{:02}", date.year(), date.month() as u8, date.day())
            }
            (Some(ConsumptionPeriod::Week), Some(date)) => {
                let (year, week, _) = date.to_iso_week_date();
                format!("{year}-W{week:02}")
            }
            (Some(ConsumptionPeriod::Month), Some(date)) => format!("{}-{:02}", date.year(), date.month() as u8),
            (Some(ConsumptionPeriod::Year), Some(date)) => date.year().to_string(),
        };
        Period(name)
    }

    /// The name of a never-resetting counter's one period.
    pub const ALL_TIME: &str = "all";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A period by its stored name (for tests).
    #[cfg(test)]
    pub(crate) fn named(name: &str) -> Self {
        Period(name.to_string())
    }
}

/// Which counter: the license's own (stored as `*`; feature codes never contain it) or a feature's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterKey {
    License,
    Feature(FeatureCode),
}

impl CounterKey {
    const LICENSE: &str = "*";

    pub fn as_str(&self) -> &str {
        match self {
            CounterKey::License => Self::LICENSE,
            CounterKey::Feature(code) => code.as_str(),
        }
    }

    pub fn parse(stored: &str) -> Result<Self, crate::input::InvalidValue> {
        match stored {
            Self::LICENSE => Ok(CounterKey::License),
            code => FeatureCode::parse(code).map(CounterKey::Feature),
        }
    }
}

impl Serialize for CounterKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CounterKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = String::deserialize(deserializer)?;
        CounterKey::parse(&stored).map_err(serde::de::Error::custom)
    }
}

/// How many devices released by a client may still hold a valid credential at once, unless the
/// license says otherwise (README, "Seat integrity").
pub const DEFAULT_RELEASE_ALLOWANCE: u32 = 1;
/// The most a license may allow (its outstanding releases live in the license item).
pub const MAX_RELEASE_ALLOWANCE: u32 = 100;

fn default_release_allowance() -> u32 {
    DEFAULT_RELEASE_ALLOWANCE
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A license as stored. Absent options are left out of the item (not stored as NULL), so
/// `attribute_not_exists` and `if_not_exists` in the store's expressions mean what they say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub license_key: LicenseKey,
    pub id: String,
    pub product: Product,
    pub license_type: LicenseType,
    pub status: LicenseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    pub max_activations: u32,
    #[serde(default)]
    pub allow_unlimited_activations: bool,
    #[serde(default)]
    pub times_activated: u32,
    #[serde(default)]
    pub transfer_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_transfers: Option<u32>,
    /// How many devices a client released while their credentials were still valid may hold them
    /// at once (see `releases`).
    #[serde(default = "default_release_allowance")]
    pub release_allowance: u32,
    pub expiration: Expiration,
    #[serde(default)]
    pub grace_period_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_until: Option<Timestamp>,
    #[serde(default)]
    pub is_floating: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_timeout_minutes: Option<u32>,
    #[serde(default)]
    pub can_borrow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_borrow_hours: Option<u32>,
    #[serde(default)]
    pub prevent_vm: bool,
    #[serde(default)]
    pub freeze_days: u32,
    #[serde(default)]
    pub device_rotation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_interval_days: Option<u32>,
    #[serde(default)]
    pub work_if_validation_blocked: bool,
    #[serde(default)]
    pub is_trial: bool,
    #[serde(default)]
    pub is_test: bool,
    /// The e-mail given when a trial started: nobody verified it, so it is never the customer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consumptions: Option<u64>,
    #[serde(default)]
    pub allow_overages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_overages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption_period: Option<ConsumptionPeriod>,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default)]
    pub metadata: Metadata,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_activated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activated_at: Option<Timestamp>,
    #[serde(default)]
    pub version: u64,
    /// How many floating leases there are: devices holding a `lease_expires_at`, live or lapsed
    /// (a lapsed lease keeps its seat until another device takes it over, in the same conditional
    /// write, so a lapsed seat is free at once without any background job). The seat limit holds
    /// in conditions on this counter; each lease lives on its device's item. Written only by the
    /// lease operations, never by a patch (absent until a license's first lease: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leases_held: u32,
    /// Leases the store found still kept the way earlier versions kept them (a map in the license
    /// item): the next lease operation moves them to their devices first. Never stored from here.
    #[serde(skip)]
    pub unmoved_leases: BTreeMap<HardwareId, Timestamp>,
    /// Devices a client released (deactivated, or rotated out) while a credential of theirs was
    /// still valid, and until when it is: at most `release_allowance` entries still ahead. An entry
    /// that has passed is removed by the next release that needs its room, in the same conditional
    /// write. Written only by releases and re-activations, never by a patch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub releases: BTreeMap<HardwareId, Timestamp>,
    /// Consumption counters, the license's own and its features'.
    /// Written only by `consume` (atomically, resetting lazily per period), never by a patch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumption: BTreeMap<CounterKey, Counter>,
}

impl License {
    /// A new active license with the given essentials and every option at its default.
    pub fn new(
        license_key: LicenseKey,
        id: String,
        product: Product,
        license_type: LicenseType,
        max_activations: u32,
        now: Timestamp,
    ) -> Self {
        License {
            license_key,
            id,
            product,
            license_type,
            status: LicenseStatus::Active,
            customer: None,
            order_id: None,
            max_activations,
            allow_unlimited_activations: false,
            times_activated: 0,
            transfer_count: 0,
            max_transfers: None,
            release_allowance: DEFAULT_RELEASE_ALLOWANCE,
            expiration: Expiration::Never,
            grace_period_days: 0,
            maintenance_until: None,
            is_floating: false,
            floating_timeout_minutes: None,
            can_borrow: false,
            max_borrow_hours: None,
            prevent_vm: false,
            freeze_days: 0,
            device_rotation: false,
            validation_interval_days: None,
            work_if_validation_blocked: false,
            is_trial: license_type == LicenseType::Trial,
            is_test: false,
            trial_email: None,
            max_consumptions: None,
            allow_overages: false,
            max_overages: None,
            consumption_period: None,
            features: Vec::new(),
            metadata: Metadata::new(),
            created_at: now,
            updated_at: now,
            first_activated_at: None,
            last_activated_at: None,
            version: 0,
            leases_held: 0,
            unmoved_leases: BTreeMap::new(),
            releases: BTreeMap::new(),
            consumption: BTreeMap::new(),
        }
    }

    pub fn metering(&self) -> Metering {
        Metering {
            max_consumptions: self.max_consumptions,
            allow_overages: self.allow_overages,
            max_overages: self.max_overages,
            consumption_period: self.consumption_period,
        }
    }

    pub fn feature(&self, code: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.code.as_str() == code)
    }
}

/// A device bound to a license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub hardware_id: HardwareId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<DeviceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub is_vm: bool,
    pub activated_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The end of the device's floating lease, while it holds one (live, or lapsed and not taken
    /// over yet): the lease lives here, counted by the license's `leases_held`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// The end of the last borrow (`POST /v1/borrow`), during which the device may work offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowed_until: Option<Timestamp>,
    /// Until when the latest credential signed for this device (verdict token or license file)
    /// may be valid: no token for it is signed to expire later. Kept when the device is released,
    /// so a release knows whether the device can still run. (A floating device's tokens are bounded
    /// by its lease instead.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_until: Option<Timestamp>,
}

/// Who released a device: the tombstone a release leaves says so until its credentials lapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleasedBy {
    /// The client deactivated it (online or with an offline request file).
    Client,
    /// The vendor released it (`DELETE /v1/licenses/{key}/devices/{hardware_id}`).
    Vendor,
    /// A new device replaced it (`device_rotation`).
    Rotation,
}

/// A product's trial terms, set by the vendor: what `POST /v1/trial` issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialTerms {
    pub product: Product,
    pub days: u32,
    pub max_activations: u32,
    #[serde(default)]
    pub features: Vec<Feature>,
    pub updated_at: Timestamp,
}

/// The record that a device has had its trial of a product (at most one per product and device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialMarker {
    pub product: Product,
    pub hardware_id: HardwareId,
    pub license_key: LicenseKey,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod counter_tests {
    use super::*;

    /// Stored counters keep the layout they always had: `*` for the license, the feature code for a feature.
    #[test]
    fn counters_are_stored_as_they_always_were() {
        let counters: BTreeMap<CounterKey, Counter> =
            serde_json::from_str(r#"{"*": {"period": "2026-11", "used": 3}, "export": {"period": "all", "used": 1}}"#)
                .unwrap();
        let export = CounterKey::Feature(FeatureCode::parse("export").unwrap());
        assert_eq!(counters[&CounterKey::License].used, 3);
        assert_eq!(counters[&export].period.as_str(), Period::ALL_TIME);
        let stored = serde_json::to_value(&counters).unwrap();
        assert_eq!(stored["*"]["period"], "2026-11");
        assert!(serde_json::from_str::<BTreeMap<CounterKey, Counter>>(
            r#"{"no spaces": {"period": "all", "used": 1}}"#
        )
        .is_err());
    }
}
