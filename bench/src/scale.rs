//! How an operation's cost grows with the license: capacity units (as DynamoDB Local reports them
//! with `ReturnConsumedCapacity`), round trips and p50 latency per operation, on node-locked
//! licenses with more and more devices and floating licenses with more and more seats held. Written
//! as tables and as SVG plots beside docs/benchmarks.md.

use super::{call, device, issue, Report};
use keygate::api::{App, Function};
use keygate::store::{DynamoStore, Store};
use serde_json::json;
use std::fmt::Write as _;
use std::time::Instant;

/// Samples per operation and size (after filling the license).
const SAMPLES: usize = 20;
/// The node-locked licenses measured, by devices bound.
pub const DEVICES: &[usize] = &[1, 100, 10_000, 100_000];
/// The floating pools measured, by seats held (the smallest holds just the samples' leases).
pub const SEATS: &[usize] = &[20, 100, 1_000, 10_000];
/// Activations filling a license at once.
const FILL_CONCURRENCY: usize = 16;
/// On-demand prices per million request units (docs/deploy.md).
const READ_PRICE: f64 = 0.125;
const WRITE_PRICE: f64 = 0.625;

/// One operation's measured cost at one size.
#[derive(Clone, Copy, Default)]
pub struct Cost {
    pub read_units: f64,
    pub write_units: f64,
    pub round_trips: f64,
    pub p50_ms: f64,
}

/// Runs `op` `SAMPLES` times (each call given its index) and averages what the store reports.
async fn measure<F, Fut>(app: &App<DynamoStore>, mut op: F) -> Cost
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (units, trips) = (app.store.capacity_used(), app.store.round_trips());
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let start = Instant::now();
        op(i).await;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let after = app.store.capacity_used();
    let n = SAMPLES as f64;
    Cost {
        read_units: (after.read_units - units.read_units) / n,
        write_units: (after.write_units - units.write_units) / n,
        round_trips: (app.store.round_trips() - trips) as f64 / n,
        p50_ms: times[SAMPLES / 2],
    }
}

/// Activates `count` devices named `{prefix}-{i}`, [`FILL_CONCURRENCY`] at a time (through the
/// API, so the license is exactly what clients make it). Activations racing for the seat counter
/// may be told to retry (409 `CONCURRENT_UPDATE`): those go again.
async fn fill(app: &App<DynamoStore>, key: &str, prefix: &str, count: usize) {
    let mut pending: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for _ in 0..20 {
        let mut retry = Vec::new();
        for chunk in pending.chunks(FILL_CONCURRENCY) {
            let calls = chunk.iter().map(|name| call(app, Function::Activate, "/v1/activate", device(key, name)));
            for (name, status) in chunk.iter().zip(keygate_tests::join_all(calls).await) {
                match status {
                    200 => {}
                    409 => retry.push(name.clone()),
                    other => panic!("filling the license: {name} answered {other}"),
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        pending = retry;
    }
    panic!("filling the license: {} activations kept racing", pending.len());
}

/// Node-locked: activate a new device, check a bound one, deactivate one, at `devices` bound.
async fn node_locked(app: &App<DynamoStore>, devices: usize) -> [Cost; 3] {
    let key = issue(app, json!({"allow_unlimited_activations": true, "max_activations": 0})).await;
    fill(app, &key, "pc", devices).await;
    let activate = measure(app, |i| {
        let key = key.clone();
        async move {
            assert_eq!(call(app, Function::Activate, "/v1/activate", device(&key, &format!("new-{i}"))).await, 200)
        }
    })
    .await;
    // A check that has to record a sighting or a credential horizon writes; these checks of a
    // device activated just now only read (the steady state of a device checking often).
    let check = measure(app, |i| {
        let key = key.clone();
        async move { assert_eq!(call(app, Function::Check, "/v1/check", device(&key, &format!("new-{i}"))).await, 200) }
    })
    .await;
    let deactivate = measure(app, |i| {
        let key = key.clone();
        async move {
            let status = call(app, Function::Deactivate, "/v1/deactivate", device(&key, &format!("new-{i}"))).await;
            assert_eq!(status, 200)
        }
    })
    .await;
    [activate, check, deactivate]
}

/// Floating, `seats` seats all held by live leases at the end: new devices taking the last
/// `SAMPLES` free seats, then their heartbeats (checks renewing their leases).
async fn floating(app: &App<DynamoStore>, seats: usize) -> [Cost; 2] {
    let key = issue(app, json!({"is_floating": true, "max_activations": seats, "floating_timeout_minutes": 60})).await;
    fill(app, &key, "seat", seats.saturating_sub(SAMPLES)).await;
    let take = measure(app, |i| {
        let key = key.clone();
        async move {
            assert_eq!(call(app, Function::Activate, "/v1/activate", device(&key, &format!("new-{i}"))).await, 200)
        }
    })
    .await;
    // Lease ends are whole seconds: a heartbeat in the second the lease was taken has nothing to move.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let heartbeat = measure(app, |i| {
        let key = key.clone();
        async move { assert_eq!(call(app, Function::Check, "/v1/check", device(&key, &format!("new-{i}"))).await, 200) }
    })
    .await;
    [take, heartbeat]
}

fn cost_row(report: &mut Report, what: &str, size: usize, c: &Cost) {
    report.line(format!(
        "| {what} | {size} | {:.1} | {:.1} | {:.2} | {:.2} |",
        c.read_units, c.write_units, c.round_trips, c.p50_ms
    ));
}

/// A line plot of `series` (name, value per size) over sizes on a log scale, as SVG text.
fn svg_plot(title: &str, unit: &str, sizes: &[usize], series: &[(&str, Vec<f64>)]) -> String {
    let (width, height, left, right, top, bottom) = (640.0, 360.0, 70.0, 170.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0_f64, f64::max).max(1.0) * 1.1;
    let x = |i: usize| left + plot_w * i as f64 / (sizes.len().max(2) - 1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / max);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{left}" y="24" font-size="14">{title}</text>"#);
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let ty = y(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.1}</text>",
            left + plot_w,
            left - 6.0,
            ty + 4.0
        );
    }
    for (i, size) in sizes.iter().enumerate() {
        let _ =
            writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{size}</text>"#, x(i), top + plot_h + 18.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{unit} (log scale of sizes)</text>"#,
        left + plot_w / 2.0,
        height - 10.0
    );
    for (n, (name, values)) in series.iter().enumerate() {
        let color = colors[n % colors.len()];
        let points: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ =
            writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, points.join(" "));
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
        }
        let ly = top + 16.0 * n as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            left + plot_w + 12.0,
            left + plot_w + 32.0,
            left + plot_w + 38.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The section of docs/benchmarks.md, and its plots written next to `out` (docs/).
pub async fn scale(
    report: &mut Report,
    app: &App<DynamoStore>,
    out_dir: &std::path::Path,
    sizes: &[usize],
    seats: &[usize],
) {
    report.section("Cost as the license grows: capacity units, round trips, latency per operation");
    report.line(
        "Capacity units as DynamoDB Local reports them (`ReturnConsumedCapacity: TOTAL`, successful calls), averaged \
         over the samples; round trips per operation; p50 of the in-process handler against DynamoDB Local.\n",
    );
    report.line("| operation | size | read units | write units | round trips | p50 ms |");
    report.line("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut node = Vec::new();
    for &n in sizes {
        eprintln!("bench: scale, {n} devices");
        let costs = node_locked(app, n).await;
        for (what, cost) in
            ["activate (node-locked)", "check (node-locked)", "deactivate (node-locked)"].iter().zip(&costs)
        {
            cost_row(report, what, n, cost);
        }
        node.push(costs);
    }
    let mut float = Vec::new();
    for &n in seats {
        eprintln!("bench: scale, {n} floating seats");
        let costs = floating(app, n).await;
        for (what, cost) in ["take a floating seat", "heartbeat (check renewing a lease)"].iter().zip(&costs) {
            cost_row(report, what, n, cost);
        }
        float.push(costs);
    }
    let units = |c: &Cost| c.read_units + c.write_units;
    let node_plot = svg_plot(
        "Capacity units per operation, node-locked",
        "devices on the license",
        sizes,
        &[
            ("activate", node.iter().map(|c| units(&c[0])).collect()),
            ("check", node.iter().map(|c| units(&c[1])).collect()),
            ("deactivate", node.iter().map(|c| units(&c[2])).collect()),
        ],
    );
    let float_plot = svg_plot(
        "Capacity units per operation, floating",
        "floating seats (all held)",
        seats,
        &[
            ("take a seat", float.iter().map(|c| units(&c[0])).collect()),
            ("heartbeat", float.iter().map(|c| units(&c[1])).collect()),
        ],
    );
    let _ = std::fs::write(out_dir.join("benchmarks-node-locked.svg"), node_plot);
    let _ = std::fs::write(out_dir.join("benchmarks-floating.svg"), float_plot);
    report.line("\n![node-locked](benchmarks-node-locked.svg) ![floating](benchmarks-floating.svg)\n");
    let per_million = |c: &Cost| c.read_units * READ_PRICE + c.write_units * WRITE_PRICE;
    if let (Some(small), Some(large)) = (float.first(), float.last()) {
        report.line(format!(
            "DynamoDB cost per million heartbeats: ${:.2} on a pool of {} seats, ${:.2} on one of {} (on-demand prices \
             of docs/deploy.md); per million node-locked checks: ${:.2} at {} device(s), ${:.2} at {}.",
            per_million(&small[1]),
            seats[0],
            per_million(&large[1]),
            seats[seats.len() - 1],
            node.first().map(|c| per_million(&c[1])).unwrap_or(0.0),
            sizes[0],
            node.last().map(|c| per_million(&c[1])).unwrap_or(0.0),
            sizes[sizes.len() - 1],
        ));
    }
}
