//! Update and condition expressions, built up by the operations.

use crate::input::HardwareId;
use crate::model::License;
use crate::rules::Slot;
use crate::time::Timestamp;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use super::records::{n, s, Item, RELEASES};

/// The most lapsed entries one write removes: each adds a condition and a REMOVE to expressions
/// DynamoDB caps at 4 KB. More (after a vendor lowered the seats far) are trimmed first.
pub(super) const MAX_TAKE_OVER_PER_WRITE: usize = 64;

/// A map attribute of the license item as read, and the prefix of its placeholders.
pub(super) struct MapAttribute<'a> {
    pub(super) prefix: &'static str,
    pub(super) name: &'static str,
    pub(super) read: &'a std::collections::BTreeMap<HardwareId, Timestamp>,
}

/// The parts of one update or condition expression, built up by the operations below.
#[derive(Default)]
pub(super) struct Expression {
    pub(super) sets: Vec<String>,
    pub(super) removes: Vec<String>,
    pub(super) conditions: Vec<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: Item,
}

impl Expression {
    pub(super) fn name(&mut self, placeholder: &str, name: &str) -> &mut Self {
        self.names.insert(placeholder.into(), name.into());
        self
    }

    pub(super) fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    pub(super) fn set(&mut self, clause: impl Into<String>) -> &mut Self {
        self.sets.push(clause.into());
        self
    }

    pub(super) fn condition(&mut self, condition: impl Into<String>) -> &mut Self {
        self.conditions.push(condition.into());
        self
    }

    pub(super) fn update_expression(&self) -> String {
        let mut expression = String::new();
        if !self.sets.is_empty() {
            expression = format!("SET {}", self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        expression.trim_start().to_string()
    }

    pub(super) fn condition_expression(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    /// Puts `holder`'s entry `until` into `map`, as `slot` says: its own entry replaced if it
    /// still reads as observed (or added if still absent), the lapsed entries of `take_over`
    /// removed if they still read as observed, and at most `room` entries afterwards (counting
    /// before any entry another part of the same write removes).
    pub(super) fn put_slot(
        &mut self,
        map: MapAttribute<'_>,
        holder: &HardwareId,
        slot: &Slot,
        until: Timestamp,
        room: u32,
    ) {
        let MapAttribute { prefix: p, name: map, read } = map;
        let map_name = format!("#{p}");
        self.name(&map_name, map);
        if read.is_empty() {
            // The map may not exist yet (a document path into it would be invalid): write it whole.
            let whole = HashMap::from([(holder.to_string(), s(&until.to_string()))]);
            self.set(format!("{map_name} = :{p}_whole")).value(&format!(":{p}_whole"), AttributeValue::M(whole));
            self.condition(format!("(attribute_not_exists({map_name}) OR size({map_name}) = :zero)"));
            self.value(":zero", n(0));
            return;
        }
        let own = format!("{map_name}.#{p}_h");
        self.name(&format!("#{p}_h"), holder.as_str());
        self.set(format!("{own} = :{p}_until")).value(&format!(":{p}_until"), s(&until.to_string()));
        match slot.own {
            Some(observed) => {
                self.condition(format!("{own} = :{p}_own")).value(&format!(":{p}_own"), s(&observed.to_string()));
            }
            None => {
                self.condition(format!("attribute_not_exists({own})"));
            }
        }
        for (index, (other, end)) in slot.take_over.iter().enumerate() {
            let path = format!("{map_name}.#{p}_t{index}");
            self.name(&format!("#{p}_t{index}"), other.as_str());
            self.value(&format!(":{p}_t{index}"), s(&end.to_string()));
            self.condition(format!("{path} = :{p}_t{index}"));
            self.removes.push(path);
        }
        let bound = i64::from(room) + slot.take_over.len() as i64 - i64::from(slot.own.is_none());
        self.condition(format!("size({map_name}) <= :{p}_bound")).value(&format!(":{p}_bound"), n(bound));
    }

    /// Removes `holder`'s entry from the map attribute `map` if it still reads `observed`, or
    /// requires it to be still absent.
    pub(super) fn remove_entry(&mut self, p: &str, map: &str, holder: &HardwareId, observed: Option<Timestamp>) {
        let path = format!("#{p}.#{p}_h");
        self.name(&format!("#{p}"), map).name(&format!("#{p}_h"), holder.as_str());
        match observed {
            Some(observed) => {
                self.condition(format!("{path} = :{p}_own")).value(&format!(":{p}_own"), s(&observed.to_string()));
                self.removes.push(path);
            }
            None => {
                self.condition(format!("attribute_not_exists({path})"));
            }
        }
    }
}

pub(super) fn releases(license: &License) -> MapAttribute<'_> {
    MapAttribute { prefix: "r", name: RELEASES, read: &license.releases }
}
