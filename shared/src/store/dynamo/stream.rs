//! The table's change stream read as changes: each record's two images decoded into the items
//! events derive from, then the events appended to the audit log. The events function is given
//! records by Lambda (JSON, [`records_from_lambda`]); `keygate serve` reads DynamoDB Local's stream
//! itself ([`StreamFollower`], feature `local-stream`). Both go through [`DynamoStore::record`].

use super::records::{device_from, license_from, Item, DEVICE_PREFIX, LICENSE_SK, TRIAL_SK};
use super::DynamoStore;
use crate::events::{derive, Change, Event, Image};
use crate::input::{LicenseKey, Product};
use crate::model::{ReleasedBy, TrialMarker};
use crate::store::StoreError;
use crate::time::Timestamp;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;

/// One change of one item, as the stream reports it.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub event_id: String,
    pub sequence: String,
    pub at: Timestamp,
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// The change a record reports, when it is of an item events follow (a license, a device, a
/// trial record); `None` for the rest (idempotency records, receipts, trial terms).
pub fn change_of(record: &StreamRecord) -> Result<Option<Change>, StoreError> {
    let image = |item: &Option<Item>| item.as_ref().map(image_of).transpose().map(Option::flatten);
    let (before, after) = (image(&record.old)?, image(&record.new)?);
    if before.is_none() && after.is_none() {
        return Ok(None);
    }
    // A vendor call names its token on what it writes; a later client write of the item keeps the
    // attribute, but only the vendor's own changes yield events with a vendor actor.
    let vendor_token = record
        .new
        .as_ref()
        .and_then(|item| item.get(crate::actor::CHANGED_BY))
        .and_then(|by| by.as_s().ok())
        .and_then(|by| by.strip_prefix("vendor:"))
        .map(str::to_string);
    // Through a license file: the new image says so, of the activation that wrote the item (a put)
    // and of the release (an update that sets or removes `released_via`).
    let via = |name: &str| {
        let new = record.new.as_ref().and_then(|item| item.get(name)).and_then(|v| v.as_s().ok());
        new.is_some_and(|via| via == crate::actor::VIA_OFFLINE)
    };
    Ok(Some(Change {
        id: record.event_id.clone(),
        sequence: record.sequence.clone(),
        at: record.at,
        vendor_token,
        request_id: record
            .new
            .as_ref()
            .and_then(|item| item.get(crate::actor::REQUEST_ATTRIBUTE))
            .and_then(|id| id.as_s().ok())
            .cloned(),
        lease_moved: record.new.as_ref().is_some_and(|item| item.contains_key("lease_moved")),
        activated_offline: via(crate::actor::ACTIVATED_VIA),
        released_offline: via(crate::actor::RELEASED_VIA),
        before,
        after,
    }))
}

fn image_of(item: &Item) -> Result<Option<Image>, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str);
    let (Some(pk), Some(sk)) = (text("PK"), text("SK")) else { return Ok(None) };
    let unreadable = |what: &str| StoreError::Internal(format!("a streamed {what} without a readable key"));
    if let Some(key) = pk.strip_prefix("L#") {
        if sk == LICENSE_SK {
            return Ok(Some(Image::License(Box::new(license_from(item.clone())?))));
        }
        if sk.starts_with(DEVICE_PREFIX) {
            let license_key = LicenseKey::parse(key).map_err(|_| unreadable("device"))?;
            let product = text("product").and_then(|p| Product::parse(p).ok());
            let released = match (item.contains_key("released_at"), text("released_by")) {
                (false, _) => None,
                (true, Some("vendor")) => Some(ReleasedBy::Vendor),
                (true, Some("rotation")) => Some(ReleasedBy::Rotation),
                (true, _) => Some(ReleasedBy::Client),
            };
            // A tombstone leaves the sightings index, so it has no `last_seen_at`: its release
            // stands in (what the event reports does not use it).
            let mut item = item.clone();
            if let (false, Some(at)) = (item.contains_key("last_seen_at"), item.get("released_at").cloned()) {
                item.insert("last_seen_at".into(), at);
            }
            return Ok(Some(Image::Device { license_key, product, device: device_from(item)?, released }));
        }
    }
    if pk.starts_with("T#") && sk == TRIAL_SK {
        let marker: TrialMarker = serde_dynamo::from_item(item.clone())
            .map_err(|e| StoreError::Internal(format!("unreadable trial record: {e}")))?;
        return Ok(Some(Image::TrialMarker(marker)));
    }
    Ok(None)
}

/// A batch's outcome: every record's events stored, or the first record whose events were not
/// (it and every later one are to be delivered again).
#[derive(Debug)]
pub struct Unrecorded {
    pub record: usize,
    pub error: StoreError,
}

impl DynamoStore {
    /// Derives the events of `records` (in stream order) and appends them to the audit log,
    /// kept `keep_days` when set. Idempotent: a record delivered again writes the same items.
    pub async fn record(&self, records: &[StreamRecord], keep_days: Option<u32>) -> Result<usize, Unrecorded> {
        let mut events: Vec<(usize, Event)> = Vec::new();
        let mut changes = Vec::new();
        for (index, record) in records.iter().enumerate() {
            // A record this code cannot read is a fault to look at, not to retry forever: it is
            // logged and passed over (its item's later changes still yield their events).
            match change_of(record) {
                Ok(Some(change)) => {
                    events.extend(derive(&change).into_iter().map(|e| (index, e)));
                    changes.push((index, change));
                }
                Ok(None) => {}
                Err(err) => tracing::error!(record = %record.event_id, error = %err, "an unreadable change"),
            }
        }
        let mut written = 0;
        for chunk in events.chunks(super::audit::EVENTS_PER_WRITE) {
            let batch: Vec<&Event> = chunk.iter().map(|(_, e)| e).collect();
            // The events, then their deliveries: both idempotent, so a retry from this record on
            // writes nothing twice.
            let recorded = match self.put_events(&batch, keep_days).await {
                Ok(()) => self.enqueue_events(&batch).await.map(|_| ()),
                Err(error) => Err(error),
            };
            if let Err(error) = recorded {
                return Err(Unrecorded { record: chunk[0].0, error });
            }
            written += batch.len();
        }
        // A moved end moves the license's reminders (idempotent: a batch delivered again from a
        // record moves them again, harmlessly).
        for (index, change) in &changes {
            if let Err(error) = self.move_reminders(change).await {
                return Err(Unrecorded { record: *index, error });
            }
        }
        Ok(written)
    }
}

/// The records of a Lambda DynamoDB stream event. A record this code cannot read is logged and
/// left out (delivering it again would not make it readable); the others are recorded.
pub fn records_from_lambda(event: &Value) -> Result<Vec<StreamRecord>, String> {
    let records = event.get("Records").and_then(Value::as_array).ok_or("an event without Records")?;
    let mut read = Vec::with_capacity(records.len());
    for record in records {
        match record_from_lambda(record) {
            Ok(record) => read.push(record),
            Err(err) => tracing::error!(error = %err, "an unreadable stream record, passed over"),
        }
    }
    Ok(read)
}

fn record_from_lambda(record: &Value) -> Result<StreamRecord, String> {
    let text = |value: Option<&Value>, what: &str| {
        value.and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("a record without {what}"))
    };
    let dynamodb = record.get("dynamodb").ok_or("a record without dynamodb")?;
    let at = dynamodb
        .get("ApproximateCreationDateTime")
        .and_then(Value::as_f64)
        .ok_or("a record without ApproximateCreationDateTime")?;
    let image = |name: &str| match dynamodb.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), attribute_from_json(v)?)))
            .collect::<Result<Item, String>>()
            .map(Some),
        Some(_) => Err(format!("{name} is not an item")),
    };
    Ok(StreamRecord {
        event_id: text(record.get("eventID"), "eventID")?,
        sequence: text(dynamodb.get("SequenceNumber"), "SequenceNumber")?,
        at: Timestamp::from_unix(at as i64),
        old: image("OldImage")?,
        new: image("NewImage")?,
    })
}

/// A value in DynamoDB's JSON form (`{"S": "text"}`, `{"N": "1"}`, `{"M": {…}}`, …).
pub fn attribute_from_json(value: &Value) -> Result<AttributeValue, String> {
    let bad = || format!("not a DynamoDB value: {value}");
    // An empty map as DynamoDB Local writes it in stream records.
    if value.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(AttributeValue::M(HashMap::new()));
    }
    let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(bad)?;
    let (kind, inner) = object.iter().next().ok_or_else(bad)?;
    let text = || inner.as_str().map(str::to_string).ok_or_else(bad);
    let texts = || -> Result<Vec<String>, String> {
        inner.as_array().ok_or_else(bad)?.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(bad)).collect()
    };
    let binary = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(aws_sdk_dynamodb::primitives::Blob::new)
            .map_err(|_| bad())
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(bad)?),
        "NULL" => AttributeValue::Null(true),
        "B" => AttributeValue::B(binary(&text()?)?),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(texts()?.iter().map(|t| binary(t)).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            inner.as_array().ok_or_else(bad)?.iter().map(attribute_from_json).collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(
            inner
                .as_object()
                .ok_or_else(bad)?
                .iter()
                .map(|(k, v)| Ok((k.clone(), attribute_from_json(v)?)))
                .collect::<Result<HashMap<_, _>, String>>()?,
        ),
        _ => return Err(bad()),
    })
}

#[cfg(feature = "local-stream")]
pub use follower::StreamFollower;

#[cfg(feature = "local-stream")]
mod follower {
    use super::{StreamRecord, Unrecorded};
    use crate::store::dynamo::errors::classify;
    use crate::store::dynamo::DynamoStore;
    use crate::store::StoreError;
    use crate::time::Timestamp;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
    use std::collections::{HashMap, HashSet};

    /// Reads a table's stream (DynamoDB Local's, for `keygate serve` and the tests) from its
    /// oldest record on, shard by shard, recording each record's events: what the events
    /// function does in AWS, on the same code path.
    pub struct StreamFollower {
        streams: aws_sdk_dynamodbstreams::Client,
        stream_arn: String,
        /// Where each open shard was read up to.
        iterators: HashMap<String, String>,
        /// Shards read to their end.
        finished: HashSet<String>,
        keep_days: Option<u32>,
    }

    impl StreamFollower {
        pub async fn new(
            config: &aws_config::SdkConfig,
            store: &DynamoStore,
            keep_days: Option<u32>,
        ) -> Result<Self, StoreError> {
            let table = store.client().describe_table().table_name(store.table()).send().await.map_err(classify)?;
            let stream_arn = table
                .table
                .and_then(|t| t.latest_stream_arn)
                .ok_or_else(|| StoreError::Internal(format!("table {} has no stream", store.table())))?;
            // DynamoDB Local serves its streams on its own endpoint: DynamoDB's, unless the
            // streams endpoint is configured apart.
            let mut streams = aws_sdk_dynamodbstreams::config::Builder::from(config);
            let apart = std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB_STREAMS").is_some();
            if let Some(endpoint) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok().filter(|_| !apart) {
                streams = streams.endpoint_url(endpoint);
            }
            Ok(Self {
                streams: aws_sdk_dynamodbstreams::Client::from_conf(streams.build()),
                stream_arn,
                iterators: HashMap::new(),
                finished: HashSet::new(),
                keep_days,
            })
        }

        /// Reads every shard up to its newest record and records the events: the number of
        /// events written. A failure leaves the failed record to be read again next time.
        pub async fn catch_up(&mut self, store: &DynamoStore) -> Result<usize, StoreError> {
            let described =
                self.streams.describe_stream().stream_arn(&self.stream_arn).send().await.map_err(classify)?;
            let shards = described.stream_description.map(|d| d.shards.unwrap_or_default()).unwrap_or_default();
            let mut written = 0;
            // Parents before children: a shard is read once its parent is finished (or unknown).
            let known: HashSet<String> = shards.iter().filter_map(|s| s.shard_id.clone()).collect();
            for shard in &shards {
                let Some(id) = shard.shard_id.clone() else { continue };
                if self.finished.contains(&id) {
                    continue;
                }
                let parent_open = shard
                    .parent_shard_id
                    .as_ref()
                    .is_some_and(|parent| known.contains(parent) && !self.finished.contains(parent));
                if parent_open {
                    continue;
                }
                written += self.read_shard(store, &id).await?;
            }
            Ok(written)
        }

        async fn read_shard(&mut self, store: &DynamoStore, shard: &str) -> Result<usize, StoreError> {
            let mut iterator = match self.iterators.get(shard) {
                Some(iterator) => iterator.clone(),
                None => {
                    let started = self
                        .streams
                        .get_shard_iterator()
                        .stream_arn(&self.stream_arn)
                        .shard_id(shard)
                        .shard_iterator_type(ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                        .map_err(classify)?;
                    started.shard_iterator.ok_or_else(|| StoreError::Internal("no shard iterator".into()))?
                }
            };
            let mut written = 0;
            loop {
                let (records, next) =
                    match self.streams.get_records().shard_iterator(&iterator).limit(1000).send().await {
                        Ok(got) => (
                            got.records.unwrap_or_default().into_iter().filter_map(record_of).collect(),
                            got.next_shard_iterator,
                        ),
                        Err(err) => match records_of_raw(&err) {
                            Some(read) => read,
                            None => return Err(classify(err)),
                        },
                    };
                let records: Vec<StreamRecord> = records;
                let count = records.len();
                match store.record(&records, self.keep_days).await {
                    Ok(n) => written += n,
                    // The iterator stays where it was: the whole read is recorded again next time
                    // (idempotent), the failed record among it.
                    Err(Unrecorded { error, .. }) => {
                        self.iterators.insert(shard.to_string(), iterator);
                        return Err(error);
                    }
                }
                match next {
                    Some(next) => {
                        iterator = next;
                        if count == 0 {
                            self.iterators.insert(shard.to_string(), iterator);
                            return Ok(written);
                        }
                    }
                    None => {
                        self.iterators.remove(shard);
                        self.finished.insert(shard.to_string());
                        return Ok(written);
                    }
                }
            }
        }
    }

    /// DynamoDB Local writes an empty map in a stream record as `{}` (without its `M`), which the
    /// SDK refuses to parse (a license's empty `metadata` is one). Such an answer is read here
    /// instead: its records have the form Lambda hands the events function, read by the same
    /// code (which takes `{}` for the empty map it is).
    fn records_of_raw<E>(
        err: &aws_sdk_dynamodbstreams::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Option<(Vec<StreamRecord>, Option<String>)> {
        let raw = err.raw_response().filter(|raw| raw.status().as_u16() == 200)?;
        let body: serde_json::Value = serde_json::from_slice(raw.body().bytes()?).ok()?;
        let records = super::records_from_lambda(&body).ok()?;
        Some((records, body.get("NextShardIterator").and_then(|n| n.as_str()).map(str::to_string)))
    }

    fn record_of(record: aws_sdk_dynamodbstreams::types::Record) -> Option<StreamRecord> {
        let data = record.dynamodb?;
        let image = |image: Option<HashMap<String, StreamValue>>| {
            image.map(|item| item.into_iter().map(|(k, v)| (k, value_of(v))).collect())
        };
        Some(StreamRecord {
            event_id: record.event_id?,
            sequence: data.sequence_number?,
            at: Timestamp::from_unix(data.approximate_creation_date_time.map_or(0, |at| at.secs())),
            old: image(data.old_image),
            new: image(data.new_image),
        })
    }

    fn value_of(value: StreamValue) -> AttributeValue {
        let blob =
            |b: aws_sdk_dynamodbstreams::primitives::Blob| aws_sdk_dynamodb::primitives::Blob::new(b.into_inner());
        match value {
            StreamValue::S(v) => AttributeValue::S(v),
            StreamValue::N(v) => AttributeValue::N(v),
            StreamValue::Bool(v) => AttributeValue::Bool(v),
            StreamValue::Null(v) => AttributeValue::Null(v),
            StreamValue::B(v) => AttributeValue::B(blob(v)),
            StreamValue::Ss(v) => AttributeValue::Ss(v),
            StreamValue::Ns(v) => AttributeValue::Ns(v),
            StreamValue::Bs(v) => AttributeValue::Bs(v.into_iter().map(blob).collect()),
            StreamValue::L(v) => AttributeValue::L(v.into_iter().map(value_of).collect()),
            StreamValue::M(v) => AttributeValue::M(v.into_iter().map(|(k, v)| (k, value_of(v))).collect()),
            _ => AttributeValue::Null(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lambda_record_decodes_to_a_device_change_with_its_release() {
        let event = json!({"Records": [{
            "eventID": "e1",
            "eventName": "MODIFY",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_795_659_126.0,
                "SequenceNumber": "4200",
                "OldImage": {"PK": {"S": "L#KEY"}, "SK": {"S": "D#pc-1"}, "hardware_id": {"S": "pc-1"}},
                "NewImage": {"PK": {"S": "L#KEY"}, "SK": {"S": "D#pc-1"}, "hardware_id": {"S": "pc-1"},
                             "released_at": {"S": "2026-11-26T00:00:00Z"}, "released_by": {"S": "vendor"},
                             "tags": {"L": [{"N": "1"}, {"NULL": true}, {"M": {"a": {"BOOL": false}}}]}}
            }
        }]});
        let records = records_from_lambda(&event).unwrap();
        assert_eq!((records[0].event_id.as_str(), records[0].sequence.as_str()), ("e1", "4200"));
        assert_eq!(records[0].at, Timestamp::from_unix(1_795_659_126));
        let new = records[0].new.as_ref().unwrap();
        assert_eq!(new["tags"].as_l().unwrap()[2].as_m().unwrap()["a"], AttributeValue::Bool(false));
        // An unreadable record is left out; the others stay.
        let mixed = json!({"Records": [{"eventID": "e", "dynamodb": {}}, event["Records"][0]]});
        assert_eq!(records_from_lambda(&mixed).unwrap().len(), 1);
        assert!(records_from_lambda(&json!({"no": "records"})).is_err());
        assert!(attribute_from_json(&json!({"S": 1})).is_err());
        assert!(attribute_from_json(&json!({"X": "1"})).is_err());
    }

    #[test]
    fn a_tombstone_without_its_sighting_reads_as_a_released_device() {
        let s = |v: &str| AttributeValue::S(v.into());
        let bound: Item = HashMap::from([
            ("PK".into(), s("L#AAAAA-AAAAA-AAAAA-AAAAA-AAAAA")),
            ("SK".into(), s("D#pc-1")),
            ("hardware_id".into(), s("pc-1")),
            ("activated_at".into(), s("2026-11-26T00:00:00Z")),
            ("last_seen_at".into(), s("2026-11-26T00:00:00Z")),
        ]);
        let mut tombstone = bound.clone();
        tombstone.remove("last_seen_at");
        tombstone.insert("released_at".into(), s("2026-11-26T01:00:00Z"));
        tombstone.insert("released_by".into(), s("client"));
        let record = StreamRecord {
            event_id: "e".into(),
            sequence: "1".into(),
            at: Timestamp::from_unix(1_795_660_000),
            old: Some(bound),
            new: Some(tombstone),
        };
        let change = change_of(&record).unwrap().unwrap();
        let kinds: Vec<_> = derive(&change).into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [crate::events::EventType::DeviceDeactivated]);
    }

    #[test]
    fn items_events_do_not_follow_yield_no_change() {
        let item = |pk: &str, sk: &str| -> Item {
            HashMap::from([("PK".into(), AttributeValue::S(pk.into())), ("SK".into(), AttributeValue::S(sk.into()))])
        };
        for (pk, sk) in [("I#abc", "I"), ("P#editor", "TRIAL"), ("R#x#y", "R")] {
            let record = StreamRecord {
                event_id: "e".into(),
                sequence: "1".into(),
                at: Timestamp::from_unix(0),
                old: None,
                new: Some(item(pk, sk)),
            };
            assert!(change_of(&record).unwrap().is_none(), "{pk}");
        }
    }
}
