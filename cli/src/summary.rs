//! What the vendor commands print by default: the API's answer summed up for people, a few lines
//! per license. `--json` prints the answer itself instead, for scripts.

use serde_json::Value;
use std::fmt::Write as _;

/// A summary of any vendor answer: licenses (issued, listed, shown, changed, released) or trial terms.
pub fn summary(answer: &Value) -> String {
    let mut out = String::new();
    if let Some(licenses) = answer["licenses"].as_array() {
        for license in licenses {
            license_lines(&mut out, license);
        }
        if licenses.is_empty() {
            out.push_str("no licenses\n");
        }
        if let Some(cursor) = answer["next_cursor"].as_str() {
            let _ = writeln!(out, "more: --cursor {cursor}");
        }
    } else if let Some(events) = answer["events"].as_array() {
        // One line an event, newest first: when, what, on which license, by whom.
        for event in events {
            let actor = &event["actor"];
            let by = match actor["kind"].as_str() {
                Some("device") => actor["hardware_id"].as_str().unwrap_or("a device").to_string(),
                Some(kind) => kind.to_string(),
                None => String::new(),
            };
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            let _ = writeln!(
                out,
                "{}  {:<26} {}  by {by}",
                text(&event["at"]),
                text(&event["type"]),
                text(&event["license_key"])
            );
        }
        if events.is_empty() {
            out.push_str("no events\n");
        }
        if let Some(cursor) = answer["next_cursor"].as_str() {
            let _ = writeln!(out, "more: --cursor {cursor}");
        }
    } else if answer["license"].is_object() {
        if let Some(released) = answer["released"].as_str() {
            let until = answer["credential_valid_until"].as_str().unwrap_or("now");
            let _ = writeln!(out, "released {released} (its last credential may run until {until})");
        }
        license_lines(&mut out, &answer["license"]);
        if let Some(usage) = answer["usage"].as_object() {
            let available =
                usage.get("seats_available").and_then(Value::as_u64).map_or("unlimited".into(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  seats        {} used, {available} available ({})",
                usage.get("seats_used").and_then(Value::as_u64).unwrap_or(0),
                usage.get("compliance").and_then(Value::as_str).unwrap_or("")
            );
        }
        if let Some(devices) = answer["devices"].as_array() {
            let _ = writeln!(out, "  devices      {}", if devices.is_empty() { "none" } else { "" }.trim_end());
            for device in devices {
                let _ = writeln!(
                    out,
                    "    {}  last seen {}{}",
                    text(&device["hardware_id"]),
                    text(&device["last_seen_at"]),
                    device["name"].as_str().map(|n| format!("  ({n})")).unwrap_or_default()
                );
            }
            if let Some(cursor) = answer["next_cursor"].as_str() {
                let _ = writeln!(out, "    more: --cursor {cursor}");
            }
        }
    } else if answer["trial"]["days"].is_u64() {
        let trial = &answer["trial"];
        let _ = writeln!(
            out,
            "trial of {}: {} days, {} device(s)",
            text(&trial["product"]),
            trial["days"],
            trial["max_activations"].as_u64().unwrap_or(1)
        );
    } else {
        out = serde_json::to_string_pretty(answer).unwrap_or_default();
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn license_lines(out: &mut String, license: &Value) {
    let _ =
        writeln!(out, "{}  {}  {}", text(&license["license_key"]), text(&license["product"]), text(&license["status"]));
    let seats = match license["allow_unlimited_activations"].as_bool() {
        Some(true) => "unlimited".to_string(),
        _ => text(&license["max_activations"]),
    };
    let kind = if license["is_floating"] == true { "floating" } else { "node-locked" };
    let _ = writeln!(out, "  type         {} ({kind}), {seats} seat(s)", text(&license["license_type"]));
    let _ = writeln!(out, "  expires      {}", license["expires_at"].as_str().unwrap_or("never"));
    if let Some(email) = license["customer"]["email"].as_str() {
        let _ = writeln!(out, "  customer     {email}");
    }
    if let Some(order) = license["order_id"].as_str() {
        let _ = writeln!(out, "  order        {order}");
    }
    let _ = writeln!(out, "  version      {}", text(&license["version"]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_shown_license_reads_as_key_status_seats_and_devices() {
        let answer = json!({
            "license": {"license_key": "ABCDE-12345", "product": "editor", "status": "active", "license_type": "perpetual",
                        "max_activations": 3, "is_floating": false, "expires_at": null, "version": 2,
                        "customer": {"email": "ann@example.com"}},
            "devices": [{"hardware_id": "pc-1", "last_seen_at": "2026-11-25T10:00:00Z", "name": "Ann's laptop"}],
            "next_cursor": "cGMtMQ",
            "usage": {"seats_used": 1, "seats_available": 2, "compliance": "compliant"},
        });
        let text = summary(&answer);
        for expected in [
            "ABCDE-12345  editor  active",
            "3 seat(s)",
            "never",
            "ann@example.com",
            "1 used, 2 available",
            "pc-1",
            "Ann's laptop",
            "--cursor cGMtMQ",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
    }

    #[test]
    fn events_read_a_line_each_with_who_acted() {
        let answer = json!({"events": [
            {"at": "2026-11-26T02:24:52Z", "type": "device.activated", "license_key": "K1",
             "actor": {"kind": "device", "hardware_id": "pc-1"}},
            {"at": "2026-11-26T02:24:50Z", "type": "license.created", "license_key": "K1", "actor": {"kind": "vendor"}}
        ], "next_cursor": "abc"});
        let text = summary(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("2026-11-26T02:24:52Z  device.activated") && lines[0].ends_with("K1  by pc-1"),
            "{text}"
        );
        assert!(lines[1].contains("license.created") && lines[1].ends_with("by vendor"), "{text}");
        assert_eq!(lines[2], "more: --cursor abc");
        assert_eq!(summary(&json!({"events": [], "next_cursor": null})).trim_end(), "no events");
    }

    #[test]
    fn anything_else_is_printed_as_json() {
        assert_eq!(summary(&json!({"other": 1})), "{\n  \"other\": 1\n}");
    }
}
