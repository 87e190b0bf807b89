//! `POST /v1/consume`: an activated device records use of the license or of one of its features,
//! added atomically to a counter that resets lazily each consumption period.

use super::idempotency::{read_keyed, receipt, Before, Idempotency};
use super::lease::upgraded;
use super::refusals::Refusal;
use super::{committed, redecided, App, Reply};
use crate::error::ApiError;
use crate::input::{FeatureCode, HardwareId, LicenseKey, Product};
use crate::model::{ConsumptionPeriod, CounterKey, Metering};
use crate::rules;
use crate::store::Store;
use crate::time::Timestamp;
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};

/// The most one request may consume.
pub const MAX_AMOUNT: u64 = 1_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeRequest {
    pub license_key: LicenseKey,
    pub product: Product,
    pub hardware_id: HardwareId,
    #[serde(default)]
    pub feature: Option<FeatureCode>,
    pub amount: u64,
}

/// A counter as a client sees it, after a consumption or in a check.
#[derive(Debug, Serialize)]
pub struct Consumption {
    pub total_consumptions: u64,
    pub max_consumptions: Option<u64>,
    pub allow_overages: bool,
    pub max_overages: Option<u64>,
    /// `max_consumptions` plus any allowed overages; absent when unlimited.
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Past `max_consumptions` (into the overages).
    pub overage: bool,
    pub consumption_period: Option<ConsumptionPeriod>,
    pub resets_at: Option<Timestamp>,
}

impl Consumption {
    pub fn of(terms: &Metering, used: u64, now: Timestamp) -> Self {
        let limit = rules::consumption_limit(terms);
        Self {
            total_consumptions: used,
            max_consumptions: terms.max_consumptions,
            allow_overages: terms.allow_overages,
            max_overages: terms.max_overages,
            limit,
            remaining: limit.map(|limit| limit.saturating_sub(used)),
            overage: terms.max_consumptions.is_some_and(|max| used > max),
            consumption_period: terms.consumption_period,
            resets_at: rules::period_ends_at(terms.consumption_period, now),
        }
    }
}

#[derive(Serialize)]
struct Consumed<'a> {
    consumed: u64,
    feature: Option<&'a FeatureCode>,
    #[serde(flatten)]
    usage: Consumption,
}

pub(super) async fn consume<S: Store>(
    app: &App<S>,
    request: ConsumeRequest,
    idempotency: Option<&Idempotency>,
) -> Result<Reply, ApiError> {
    if !(1..=MAX_AMOUNT).contains(&request.amount) {
        return Err(ApiError::field("amount", format!("must be between 1 and {MAX_AMOUNT}")));
    }
    let request = &request;
    redecided(|| async move {
        let now = app.now();
        let (license, device) = match read_keyed(app, &request.license_key, &request.hardware_id, idempotency).await? {
            Before::Answered(reply) => return Ok(Some(reply)),
            Before::Found(license, device) => (license, device),
        };
        let license = license.ok_or(Refusal::LicenseNotFound(&request.license_key))?;
        rules::usable(&license, &request.product, now)?;
        let device = device.ok_or(Refusal::DeviceNotFound(&request.hardware_id))?;
        if license.is_floating && upgraded(app, &license).await? {
            return Ok(None);
        }
        let (key, terms) = match &request.feature {
            Some(code) => {
                let feature = rules::feature_entitled(&license, code.as_str(), now)
                    .map_err(|refusal| Refusal::Feature(refusal, code.as_str()))?;
                (CounterKey::Feature(code.clone()), feature.metering())
            }
            None => (CounterKey::License, license.metering()),
        };
        let plan =
            rules::plan_consumption(&license, &key, &terms, request.amount, now).map_err(Refusal::ConsumptionLimit)?;
        // A floating device counts use only while it holds a seat (its live lease).
        let lease_holder = license.is_floating.then_some((&request.hardware_id, now));
        if license.is_floating && !device.lease_expires_at.is_some_and(|end| rules::lease_is_live(end, now)) {
            return Err(Refusal::LeaseExpired(&request.hardware_id).into());
        }
        let usage = Consumption::of(&terms, plan.used_after, now);
        let answer = Consumed { consumed: request.amount, feature: request.feature.as_ref(), usage };
        let reply = Reply::json(StatusCode::OK, &answer)?;
        let receipt = receipt(idempotency, &reply, now);
        committed(app.store.consume(&request.license_key, &plan, lease_holder, receipt.as_ref()).await, reply)
    })
    .await
}
