//! A randomized stateful test of seat integrity against DynamoDB Local. proptest generates a
//! schedule: rounds in which several clients (each with its own machines) and the vendor act at
//! once, and between rounds the passing of time for one machine. After every round the invariants
//! are checked against the stored partition and against every credential the clients were given.
//!
//! `KEYGATE_STATEFUL_SEED` (hex, 32 bytes) replays a schedule; the seed is printed on every run.
//! `KEYGATE_STATEFUL_CASES` sets how many schedules run (default 24: over two thousand client calls).

use keygate_tests::{claims, join_all, offline_request, stored_partition, TestApp};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const CLIENTS: usize = 3;
const MACHINES_PER_CLIENT: usize = 2;
const ROUNDS: usize = 30;

#[derive(Debug, Clone, Copy)]
enum Terms {
    /// Two node-locked seats with rotation and the default allowance.
    Rotating,
    /// One node-locked seat, three transfers, an allowance of two.
    Transfers,
    /// Two floating seats, borrowable, metered.
    Floating,
}

impl Terms {
    fn issue_body(self) -> Value {
        match self {
            Terms::Rotating => json!({"max_activations": 2, "device_rotation": true, "validation_interval_days": 1}),
            Terms::Transfers => json!({"max_activations": 1, "max_transfers": 3, "release_allowance": 2}),
            Terms::Floating => json!({"is_floating": true, "max_activations": 2, "floating_timeout_minutes": 10,
                "can_borrow": true, "max_borrow_hours": 48, "max_consumptions": 20}),
        }
    }

    fn allowance(self) -> usize {
        match self {
            Terms::Transfers => 2,
            Terms::Rotating | Terms::Floating => 1,
        }
    }

    fn floating(self) -> bool {
        matches!(self, Terms::Floating)
    }
}

#[derive(Debug, Clone)]
enum ClientOp {
    Activate,
    Check,
    Deactivate,
    Borrow { hours: u32 },
    OfflineActivate,
    OfflineDeactivate,
    Consume { amount: u64 },
}

#[derive(Debug, Clone)]
enum VendorOp {
    Nothing,
    Seats(u32),
    Release(usize),
}

/// Time passing for one machine, between rounds.
#[derive(Debug, Clone)]
enum Passing {
    /// All its credentials expire.
    Expire(usize),
    /// It stops heartbeating: its floating lease lapses, and with it the tokens the lease bounded
    /// (a token it holds from an earlier borrow may outlast the lease).
    LapseLease(usize),
}

#[derive(Debug, Clone)]
struct Round {
    /// Each client's call this round: which of its machines, and what it does.
    clients: Vec<(usize, ClientOp)>,
    vendor: VendorOp,
    /// After the round, time passes for this machine.
    passing: Option<Passing>,
}

#[derive(Debug, Clone)]
struct Schedule {
    terms: Terms,
    rounds: Vec<Round>,
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        4 => Just(ClientOp::Activate),
        4 => Just(ClientOp::Check),
        3 => Just(ClientOp::Deactivate),
        1 => (1u32..=48).prop_map(|hours| ClientOp::Borrow { hours }),
        1 => Just(ClientOp::OfflineActivate),
        1 => Just(ClientOp::OfflineDeactivate),
        1 => (1u64..=6).prop_map(|amount| ClientOp::Consume { amount }),
    ]
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let terms = prop_oneof![Just(Terms::Rotating), Just(Terms::Transfers), Just(Terms::Floating)];
    let vendor = prop_oneof![
        6 => Just(VendorOp::Nothing),
        1 => (1u32..=3).prop_map(VendorOp::Seats),
        1 => (0..CLIENTS * MACHINES_PER_CLIENT).prop_map(VendorOp::Release),
    ];
    let machines = 0..CLIENTS * MACHINES_PER_CLIENT;
    let passing = prop_oneof![machines.clone().prop_map(Passing::Expire), machines.prop_map(Passing::LapseLease),];
    let round = (
        proptest::collection::vec((0..MACHINES_PER_CLIENT, client_op()), CLIENTS),
        vendor,
        proptest::option::weighted(0.3, passing),
    )
        .prop_map(|(clients, vendor, passing)| Round { clients, vendor, passing });
    (terms, proptest::collection::vec(round, ROUNDS)).prop_map(|(terms, rounds)| Schedule { terms, rounds })
}

fn machine(client: usize, index: usize) -> String {
    format!("c{client}-m{}", index)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// What the clients hold and what the vendor did, as the test saw it.
#[derive(Default)]
struct Observed {
    /// The latest expiry of a valid credential each machine was given (token or license file).
    credentials: BTreeMap<String, i64>,
    /// Machines the vendor released (the vendor's decision may go beyond the allowance).
    vendor_released: BTreeSet<String>,
    most_seats: u32,
    bound_before: usize,
    leases_before: usize,
    /// The seats at the last check: a vendor lowering them while clients activate leaves the
    /// devices bound within the seats as they were (over-deployed by the vendor's decision).
    seats_before: usize,
    operations: usize,
}

impl Observed {
    fn record(&mut self, hardware_id: &str, token: Option<&str>) {
        let Some(claims) = token.map(claims) else { return };
        if claims["valid"] == true {
            let exp = claims["exp"].as_i64().unwrap();
            let entry = self.credentials.entry(hardware_id.to_string()).or_insert(exp);
            *entry = (*entry).max(exp);
        }
    }

    fn live_holders(&self) -> BTreeSet<&String> {
        let now = now();
        self.credentials.iter().filter(|(_, exp)| **exp > now).map(|(hw, _)| hw).collect()
    }
}

async fn client_call(t: &TestApp, key: &str, hardware_id: &str, op: &ClientOp) -> (u16, Option<String>) {
    let body = json!({"license_key": key, "product": "editor", "hardware_id": hardware_id});
    let with = |extra: Value| {
        let mut body = body.clone();
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let offline = |kind: &str| offline_request(key, hardware_id, kind, &format!("n-{hardware_id}"));
    let answer = match op {
        ClientOp::Activate => t.post("/v1/activate", &body).await,
        ClientOp::Check => t.post("/v1/check", &body).await,
        ClientOp::Deactivate => t.post("/v1/deactivate", &body).await,
        ClientOp::Borrow { hours } => t.post("/v1/borrow", &with(json!({"hours": hours}))).await,
        ClientOp::OfflineActivate => t.post("/v1/activate/offline", &offline("activate")).await,
        ClientOp::OfflineDeactivate => t.post("/v1/deactivate/offline", &offline("deactivate")).await,
        ClientOp::Consume { amount } => t.post("/v1/consume", &with(json!({"amount": amount}))).await,
    };
    let token = answer.body["token"].as_str().map(str::to_string);
    assert!(answer.status < 500 && answer.status != 400, "{op:?} on {hardware_id}: {} {}", answer.status, answer.body);
    (answer.status, token)
}

/// The vendor's call; the machine it released, if it did.
async fn vendor_call(t: &TestApp, key: &str, op: &VendorOp) -> Option<String> {
    match op {
        VendorOp::Nothing => None,
        VendorOp::Seats(seats) => {
            let answer = t.admin_patch(&format!("/v1/licenses/{key}"), &json!({"max_activations": seats})).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            None
        }
        VendorOp::Release(index) => {
            let hardware_id = machine(index / MACHINES_PER_CLIENT, index % MACHINES_PER_CLIENT);
            let answer = t.admin_delete(&format!("/v1/licenses/{key}/devices/{hardware_id}")).await;
            assert!(matches!(answer.status, 200 | 404 | 409), "{}", answer.body);
            (answer.status == 200).then_some(hardware_id)
        }
    }
}

/// The invariants, from the stored partition and the credentials the clients hold.
async fn check_invariants(t: &TestApp, key: &str, terms: Terms, observed: &mut Observed, round: usize) {
    let partition = stored_partition(t, key).await;
    let license = &partition.license;
    let seats = license["max_activations"].as_u64().unwrap() as usize;
    let bound = partition.bound_devices();
    let now = now();
    let at = |field: &Value| keygate::time::Timestamp::parse(field.as_str().unwrap()).unwrap().unix();
    if terms.floating() {
        let leases = partition.leases();
        assert_eq!(partition.leases_held(), leases.len(), "round {round}: the lease count is the leases");
        let live: Vec<&String> = leases.iter().filter(|(_, end)| **end > now).map(|(hw, _)| hw).collect();
        assert!(
            live.len() <= seats.max(observed.seats_before) || live.len() <= observed.leases_before,
            "round {round}: {} live leases on {seats} seats",
            live.len()
        );
        for holder in &live {
            assert!(bound.contains(holder), "round {round}: the lease of {holder} outlives its device");
        }
        observed.leases_before = live.len();
    } else {
        assert_eq!(
            license["times_activated"].as_u64().unwrap() as usize,
            bound.len(),
            "round {round}: the seat counter is the bound devices"
        );
        assert!(
            bound.len() <= seats.max(observed.seats_before) || bound.len() <= observed.bound_before,
            "round {round}: clients took {} devices onto {seats} seats",
            bound.len()
        );
        if let Some(max) = license["max_transfers"].as_u64() {
            assert!(license["transfer_count"].as_u64().unwrap() <= max, "round {round}: transfers beyond the limit");
        }
    }
    observed.bound_before = bound.len();
    observed.seats_before = seats;
    let releases = license["releases"].as_object().cloned().unwrap_or_default();
    let live_releases = releases.values().filter(|until| at(until) > now).count();
    assert!(live_releases <= terms.allowance(), "round {round}: {live_releases} releases still able to run");
    if let Some(used) = license["consumption"]["*"]["used"].as_u64().filter(|_| terms.floating()) {
        assert!(used <= 20, "round {round}: consumption {used} past its limit (only floating terms meter)");
    }

    // Every machine holding a valid credential is bound, or was released within the allowance, or
    // by the vendor; and the store knows until when it can run.
    let holders = observed.live_holders();
    let outside: Vec<&&String> =
        holders.iter().filter(|hw| !bound.contains(hw) && !observed.vendor_released.contains(**hw)).collect();
    assert!(
        outside.len() <= terms.allowance(),
        "round {round}: {outside:?} hold valid credentials without a seat (allowance {})",
        terms.allowance()
    );
    let most = observed.most_seats.max(seats as u32) as usize;
    let vendor_released = holders.iter().filter(|hw| observed.vendor_released.contains(**hw)).count();
    assert!(
        holders.len() <= most + terms.allowance() + vendor_released,
        "round {round}: {} machines hold valid credentials",
        holders.len()
    );
    for hardware_id in holders {
        let exp = observed.credentials[hardware_id];
        let device = partition.devices.iter().find(|d| d["hardware_id"] == hardware_id.as_str());
        let recorded = device.and_then(|d| d.get("credential_until")).map(at);
        let leased = partition.leases().get(hardware_id).copied();
        let released = releases.get(hardware_id).map(at);
        let known = [recorded, leased, released].into_iter().flatten().max();
        assert!(
            known.is_some_and(|known| known >= exp) || observed.vendor_released.contains(hardware_id),
            "round {round}: {hardware_id} holds a credential until {exp}, the store knows {known:?}"
        );
    }
}

async fn run(schedule: Schedule) {
    let t = TestApp::spawn().await;
    let key = t.issue(schedule.terms.issue_body()).await;
    let seats = schedule.terms.issue_body()["max_activations"].as_u64().unwrap() as u32;
    let mut observed = Observed { most_seats: seats, seats_before: seats as usize, ..Default::default() };
    for (number, round) in schedule.rounds.iter().enumerate() {
        let calls = round.clients.iter().enumerate().map(|(client, (index, op))| {
            let (t, key, hardware_id) = (&t, &key, machine(client, *index));
            async move {
                let (status, token) = client_call(t, key, &hardware_id, op).await;
                (hardware_id, status, token)
            }
        });
        let (answers, released) = tokio::join!(join_all(calls), vendor_call(&t, &key, &round.vendor));
        observed.vendor_released.extend(released);
        if let VendorOp::Seats(seats) = round.vendor {
            observed.most_seats = observed.most_seats.max(seats);
        }
        for (hardware_id, status, token) in answers {
            observed.operations += 1;
            if status == 200 || status == 201 {
                observed.record(&hardware_id, token.as_deref());
            }
        }
        match round.passing {
            Some(Passing::Expire(index)) => {
                let hardware_id = machine(index / MACHINES_PER_CLIENT, index % MACHINES_PER_CLIENT);
                t.expire_credentials(&key, &hardware_id).await;
                observed.credentials.remove(&hardware_id);
            }
            Some(Passing::LapseLease(index)) if schedule.terms.floating() => {
                let hardware_id = machine(index / MACHINES_PER_CLIENT, index % MACHINES_PER_CLIENT);
                let partition = stored_partition(&t, &key).await;
                let lease = partition.leases().get(&hardware_id).copied();
                if let Some(end) = lease.filter(|end| *end > now()) {
                    t.set_lease_end(&key, &hardware_id, now() - 1).await;
                    if observed.credentials.get(&hardware_id).is_some_and(|exp| *exp <= end) {
                        observed.credentials.remove(&hardware_id);
                    }
                }
            }
            _ => {}
        }
        check_invariants(&t, &key, schedule.terms, &mut observed, number).await;
    }
    OPERATIONS.fetch_add(observed.operations, std::sync::atomic::Ordering::Relaxed);
}

static OPERATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn seed() -> [u8; 32] {
    match std::env::var("KEYGATE_STATEFUL_SEED") {
        Ok(hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("KEYGATE_STATEFUL_SEED is hex"))
                .collect();
            bytes.try_into().expect("KEYGATE_STATEFUL_SEED is 32 bytes")
        }
        Err(_) => {
            let mut seed = [0u8; 32];
            getrandom(&mut seed);
            seed
        }
    }
}

fn getrandom(buffer: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buffer)).expect("/dev/urandom");
}

#[test]
fn no_schedule_of_concurrent_client_and_vendor_calls_breaks_seat_integrity() {
    let seed = seed();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    eprintln!("stateful seat-integrity test: KEYGATE_STATEFUL_SEED={hex}");
    let cases = std::env::var("KEYGATE_STATEFUL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24);
    let config = Config { cases, max_shrink_iters: 16, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let result = runner.run(&schedule(), |schedule| {
        let outcome = runtime.block_on(async { tokio::spawn(run(schedule)).await });
        outcome.map_err(|panic| TestCaseError::fail(format!("{panic}")))
    });
    let operations = OPERATIONS.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("stateful seat-integrity test: {operations} client operations (seed {hex})");
    if let Err(failure) = result {
        panic!("{failure}\nreplay with KEYGATE_STATEFUL_SEED={hex}");
    }
    assert!(operations >= cases as usize * ROUNDS * CLIENTS, "every schedule ran");
}
