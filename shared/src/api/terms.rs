//! The terms a vendor sets on a license, listed once: the issue request (`POST /v1/licenses`), the
//! patch (`PATCH /v1/licenses/{license_key}`) and the copying of either onto a license are all
//! made from the one table at the bottom of this file.
//!
//! A new term is one row of that table, plus its field on `model::License` (with its default in
//! `License::new`, which an issue that leaves the term out keeps) and in docs/openapi.yaml, which
//! the contract tests hold to the server. Each row reads
//!
//! ```text
//! kind name: Type, issue "<deserializer>", patch "<deserializer>";
//! ```
//!
//! - `kind` is `value` for a term stored as `Type` (given: it replaces the default), or `optional`
//!   for one stored as `Option<Type>` (a patch clears it with `null`).
//! - The deserializers say what the wire accepts, e.g. whether `null` stands for "left out".
//! - Rows under `fixed` are set at issue only; no patch names them.
//!
//! Both structs keep `deny_unknown_fields`: a field not in the table is refused by name
//! (tested in api/tests.rs).

use crate::input::{MetadataInput, OrderId, Product};
use crate::model::{ConsumptionPeriod, Customer, Expiration, Feature, License, LicenseStatus, LicenseType};
use crate::time::Timestamp;
use serde::{Deserialize, Deserializer};

/// A term that, when given, must be a value (`null` is refused, not read as "left out").
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A term that may be given as `null`, which means the same as leaving it out.
fn maybe<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(deserializer)
}

/// Accepts `null` as "clear this term" (`Some(None)`), distinct from leaving it out (`None`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// How a patch carries a term of each kind: `None` leaves it; an `optional` one is cleared by `Some(None)`.
macro_rules! patch_type {
    (value, $ty:ty) => { Option<$ty> };
    (optional, $ty:ty) => { Option<Option<$ty>> };
}

/// Sets `$to` from an issue's `$given` when it was given.
macro_rules! issue_term {
    (value, $to:expr, $given:expr) => {
        if let Some(value) = $given {
            $to = value.clone();
        }
    };
    (optional, $to:expr, $given:expr) => {
        if let Some(value) = $given {
            $to = Some(value.clone());
        }
    };
}

macro_rules! license_terms {
    (
        fixed { $( $fkind:ident $fixed:ident: $fty:ty, issue $fissue:literal; )* }
        changeable { $( $ckind:ident $term:ident: $cty:ty, issue $cissue:literal, patch $cpatch:literal; )* }
    ) => {
        /// `POST /v1/licenses`: the essentials, how many, and the terms (every term optional).
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct IssueRequest {
            pub product: Product,
            #[serde(default)]
            pub quantity: Option<u32>,
            pub license_type: LicenseType,
            pub max_activations: u32,
            #[serde(default)]
            pub metadata: Option<MetadataInput>,
            $(
                #[serde(default, deserialize_with = $fissue)]
                pub $fixed: Option<$fty>,
            )*
            $(
                #[serde(default, deserialize_with = $cissue)]
                pub $term: Option<$cty>,
            )*
        }

        impl IssueRequest {
            /// Sets the terms given on `license`, which holds the defaults.
            pub(super) fn set_terms(&self, license: &mut License) {
                $( issue_term!($fkind, license.$fixed, &self.$fixed); )*
                $( issue_term!($ckind, license.$term, &self.$term); )*
            }
        }

        /// `PATCH /v1/licenses/{license_key}`: only the fields given change. `metadata` merges key by
        /// key (a `null` value removes the key); `features` replaces the list. With `version`, the
        /// patch applies only to that version (409 `VERSION_CONFLICT` otherwise); without it, it
        /// applies to the latest, and concurrent patches of different fields all take effect.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct LicensePatch {
            #[serde(default)]
            pub status: Option<LicenseStatus>,
            #[serde(default)]
            pub max_activations: Option<u32>,
            #[serde(default, deserialize_with = "nullable")]
            pub metadata: Option<Option<MetadataInput>>,
            #[serde(default)]
            pub version: Option<u64>,
            $(
                #[serde(default, deserialize_with = $cpatch)]
                pub $term: patch_type!($ckind, $cty),
            )*
        }

        impl LicensePatch {
            /// Whether the patch names nothing to change (`version` alone changes nothing).
            pub(super) fn is_empty(&self) -> bool {
                self.status.is_none()
                    && self.max_activations.is_none()
                    && self.metadata.is_none()
                    $( && self.$term.is_none() )*
            }

            /// Sets the fields the patch names, except `metadata` (merged by the caller).
            pub(super) fn set_fields(&self, license: &mut License) {
                if let Some(status) = self.status {
                    license.status = status;
                }
                if let Some(max) = self.max_activations {
                    license.max_activations = max;
                }
                $(
                    if let Some(value) = &self.$term {
                        license.$term = value.clone();
                    }
                )*
            }
        }
    };
}

license_terms! {
    fixed {
        value is_floating: bool, issue "present";
        optional floating_timeout_minutes: u32, issue "maybe";
        value can_borrow: bool, issue "present";
        optional max_borrow_hours: u32, issue "maybe";
        value is_trial: bool, issue "present";
        value is_test: bool, issue "present";
    }
    changeable {
        optional customer: Customer, issue "crate::input::object::optional", patch "crate::input::object::nullable";
        optional order_id: OrderId, issue "maybe", patch "nullable";
        value expiration: Expiration, issue "crate::input::object::optional", patch "crate::input::object::optional";
        value allow_unlimited_activations: bool, issue "present", patch "maybe";
        value grace_period_days: u32, issue "maybe", patch "maybe";
        optional maintenance_until: Timestamp, issue "maybe", patch "nullable";
        optional max_transfers: u32, issue "maybe", patch "nullable";
        value release_allowance: u32, issue "maybe", patch "maybe";
        value freeze_days: u32, issue "maybe", patch "maybe";
        value device_rotation: bool, issue "present", patch "maybe";
        value prevent_vm: bool, issue "present", patch "maybe";
        optional validation_interval_days: u32, issue "maybe", patch "nullable";
        value work_if_validation_blocked: bool, issue "present", patch "maybe";
        optional max_consumptions: u64, issue "maybe", patch "nullable";
        value allow_overages: bool, issue "present", patch "maybe";
        optional max_overages: u64, issue "maybe", patch "nullable";
        optional consumption_period: ConsumptionPeriod, issue "maybe", patch "nullable";
        value features: Vec<Feature>, issue "crate::input::object::present_list", patch "crate::input::object::optional_list";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::LicenseKey;
    use serde_json::{json, Value};

    /// Every term with a value other than its default, as a vendor would send it.
    fn every_term() -> Value {
        json!({
            "is_floating": true, "floating_timeout_minutes": 30, "can_borrow": true, "max_borrow_hours": 48,
            "is_trial": true, "is_test": true,
            "customer": {"email": "ann@example.com"}, "order_id": "o-1",
            "expiration": {"type": "days_after_creation", "days": 30},
            "allow_unlimited_activations": true, "grace_period_days": 3,
            "maintenance_until": "2030-01-01T00:00:00Z", "max_transfers": 4, "release_allowance": 2,
            "freeze_days": 5, "device_rotation": true, "prevent_vm": true, "validation_interval_days": 9,
            "work_if_validation_blocked": true, "max_consumptions": 100, "allow_overages": true,
            "max_overages": 10, "consumption_period": "month", "features": [{"code": "export"}],
        })
    }

    fn issue(terms: Value) -> Result<IssueRequest, serde_json::Error> {
        let mut body = json!({"product": "editor", "license_type": "perpetual", "max_activations": 2});
        body.as_object_mut().unwrap().extend(terms.as_object().unwrap().clone());
        serde_json::from_value(body)
    }

    fn default_license() -> License {
        let key = LicenseKey::parse("ABCDE-12345").unwrap();
        License::new(
            key,
            "lic_1".into(),
            Product::parse("editor").unwrap(),
            LicenseType::Perpetual,
            2,
            Timestamp::from_unix(0),
        )
    }

    /// The stored form of `license`'s field `name`.
    fn stored(license: &License, name: &str) -> Value {
        serde_json::to_value(license).unwrap()[name].clone()
    }

    #[test]
    fn every_term_an_issue_gives_lands_on_the_license_and_every_one_left_out_keeps_its_default() {
        let terms = every_term();
        let mut license = default_license();
        issue(terms.clone()).unwrap().set_terms(&mut license);
        for (name, sent) in terms.as_object().unwrap() {
            let kept = stored(&license, name);
            assert_ne!(kept, stored(&default_license(), name), "{name}: the test must change it");
            assert_eq!(&kept, sent, "{name}");
        }
        let mut untouched = default_license();
        issue(json!({})).unwrap().set_terms(&mut untouched);
        assert_eq!(untouched, default_license());
    }

    #[test]
    fn a_patch_changes_every_changeable_term_and_no_fixed_one() {
        let fixed =
            ["is_floating", "floating_timeout_minutes", "can_borrow", "max_borrow_hours", "is_trial", "is_test"];
        for (name, value) in every_term().as_object().unwrap() {
            let patch = serde_json::from_value::<LicensePatch>(json!({ name.as_str(): value }));
            if fixed.contains(&name.as_str()) {
                let refused = patch.unwrap_err().to_string();
                assert!(refused.contains("unknown field") && refused.contains(name.as_str()), "{name}: {refused}");
                continue;
            }
            let patch = patch.unwrap();
            assert!(!patch.is_empty(), "{name}");
            let mut license = default_license();
            patch.set_fields(&mut license);
            assert_ne!(stored(&license, name), stored(&default_license(), name), "{name}");
        }
    }

    #[test]
    fn unknown_fields_are_still_refused_and_null_means_what_the_contract_says() {
        for unknown in ["times_activated", "version", "leases", "status"] {
            let refused = issue(json!({ unknown: 1 })).unwrap_err().to_string();
            assert!(refused.contains("unknown field"), "{unknown}: {refused}");
        }
        let refused = serde_json::from_value::<LicensePatch>(json!({"times_activated": 0})).unwrap_err();
        assert!(refused.to_string().contains("unknown field"));
        // At issue, a flag is true or false; a number may be null (left out).
        assert!(issue(json!({"is_floating": null})).is_err());
        assert!(issue(json!({"features": null})).is_err());
        assert_eq!(issue(json!({"grace_period_days": null})).unwrap().grace_period_days, None);
        // In a patch, null clears an optional term and leaves any other.
        let patch: LicensePatch = serde_json::from_value(json!({"max_transfers": null, "prevent_vm": null})).unwrap();
        assert_eq!((patch.max_transfers, patch.prevent_vm), (Some(None), None));
        let mut license = default_license();
        license.max_transfers = Some(3);
        patch.set_fields(&mut license);
        assert_eq!(license.max_transfers, None);
    }
}
