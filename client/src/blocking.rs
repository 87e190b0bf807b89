//! The blocking client (feature `blocking`, on by default).

use crate::builder::{http_client, network_error, retry_after, ClientBuilder};
use crate::core::{Answer, Consumption, Core, Deactivated, OfflineRequest, Prepared};
use crate::decide::Status;
use crate::error::{Error, Result, TokenError};
use crate::heartbeat::{event, jitter, renewal_delay, retry_after as renewal_retry_after, HeartbeatEvent};
use std::sync::Arc;

/// A license client for one product on this machine. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Client {
    core: Arc<Core>,
    http: reqwest::blocking::Client,
}

impl ClientBuilder {
    /// The blocking client. Call it outside an async runtime (reqwest's blocking client runs its own).
    pub fn build(self) -> Result<Client> {
        let settings = self.into_settings()?;
        let http = http_client!(reqwest::blocking::Client::builder(), settings);
        Ok(Client { core: Arc::new(Core::new(settings)?), http })
    }
}

impl Client {
    pub fn builder(base_url: &str, product: &str) -> ClientBuilder {
        ClientBuilder::new(base_url, product)
    }

    /// The hardware id this client sends (derived, or the vendor's).
    pub fn hardware_id(&self) -> &str {
        self.core.hardware_id()
    }

    pub fn cache_path(&self) -> std::path::PathBuf {
        self.core.cache_path()
    }

    /// Sends a request, again after no answer or a "retry later" as the core says (a write with
    /// its `Idempotency-Key`, so the server acts on it at most once).
    fn send(&self, prepared: &Prepared) -> Result<serde_json::Value> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(prepared);
            match self.core.retry_delay(attempt, &result) {
                Some(delay) => std::thread::sleep(delay),
                None => return result,
            }
            attempt += 1;
        }
    }

    fn send_once(&self, prepared: &Prepared) -> Result<serde_json::Value> {
        let url = format!("{}{}", self.core.base_url, prepared.path);
        let mut request = self.http.post(url).json(&prepared.body);
        if let Some(key) = &prepared.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().map_err(network_error)?;
        let (status, retry_after) = (response.status().as_u16(), retry_after(response.headers()));
        let body = response.json::<serde_json::Value>().ok();
        self.core.body(Answer { status, body, retry_after })
    }

    /// Sends a request answered with a signed verdict, and keeps the verdict once it verifies.
    fn verdict(&self, prepared: Prepared) -> Result<Status> {
        let body = self.send(&prepared)?;
        match self.core.accept_verdict(&prepared, &body) {
            Err(Error::InvalidToken(TokenError::UnknownKey(_))) if self.core.fetch_keys => {
                let url = format!("{}/.well-known/jwks.json", self.core.base_url);
                let jwks = self.http.get(url).send().and_then(|r| r.text()).map_err(network_error)?;
                self.core.learn_keys(&jwks)?;
                self.core.accept_verdict(&prepared, &body)
            }
            other => other,
        }
    }

    /// Binds this machine to the license (online), and keeps the signed verdict.
    pub fn activate(&self, license_key: &str) -> Result<Status> {
        self.verdict(self.core.activate_request(license_key)?)
    }

    /// Checks the license online (the "is it genuine" call): the server's verdict replaces the
    /// cached one, a refusal too. On a floating license it renews the lease.
    pub fn check(&self) -> Result<Status> {
        self.verdict(self.core.check_request(None)?)
    }

    /// Checks online and asks about one feature (the verdict's `feature` claim says if it is usable).
    pub fn check_feature(&self, feature: &str) -> Result<Status> {
        self.verdict(self.core.check_request(Some(feature))?)
    }

    /// The license from the cache, without the network (the "is it valid" call): cheap enough to
    /// call before every gated action.
    pub fn status(&self) -> Result<Status> {
        self.core.status()
    }

    /// Releases this machine's seat and forgets the license here.
    pub fn deactivate(&self) -> Result<Deactivated> {
        let body = self.send(&self.core.deactivate_request()?)?;
        // Forgotten only on the server's receipt (not on any success page a proxy might serve).
        let receipt: Deactivated = serde_json::from_value(body).map_err(Error::unexpected)?;
        self.core.forget()?;
        Ok(receipt)
    }

    /// Holds a floating seat offline for `hours`.
    pub fn borrow(&self, hours: u32) -> Result<Status> {
        self.verdict(self.core.borrow_request(hours)?)
    }

    /// Counts `amount` of use of the license, or of `feature`.
    pub fn consume(&self, amount: u64, feature: Option<&str>) -> Result<Consumption> {
        let body = self.send(&self.core.consume_request(amount, feature)?)?;
        serde_json::from_value(body).map_err(Error::unexpected)
    }

    /// Starts this machine's trial of the product (once per machine).
    pub fn start_trial(&self, email: Option<&str>) -> Result<Status> {
        self.verdict(self.core.trial_request(email)?)
    }

    /// An offline activation request file for an air-gapped machine (docs/offline.md).
    pub fn offline_request(&self, license_key: &str) -> Result<OfflineRequest> {
        self.core.offline_request(license_key)
    }

    /// Imports the license file that answers the pending offline request.
    pub fn import_license_file(&self, text: &str) -> Result<Status> {
        self.core.import_license_file(text)
    }

    /// An offline deactivation request file; the license is forgotten here at once.
    pub fn offline_deactivation_request(&self) -> Result<OfflineRequest> {
        self.core.offline_deactivation_request()
    }

    /// Keeps a floating seat: renews the lease well before it lapses (with jitter), reports each
    /// renewal or a lost seat to `on_event`, and returns the seat when the handle is dropped.
    pub fn heartbeat(&self, on_event: impl Fn(HeartbeatEvent) + Send + 'static) -> Heartbeat {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let client = self.clone();
        let thread = std::thread::spawn(move || {
            let (mut failures, mut retry) = (0, None);
            loop {
                let status = client.status().unwrap_or_else(|_| Status::not_activated());
                let delay = renewal_delay(&status, client.core_now(), jitter(), failures, retry);
                match stopped.recv_timeout(delay) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let result = client.check();
                        retry = renewal_retry_after(&result);
                        let event = event(result);
                        failures = if matches!(event, HeartbeatEvent::Renewed(_)) { 0 } else { failures + 1 };
                        on_event(event);
                    }
                    // Returning the seat early may be refused (the release allowance is in use):
                    // then it returns by itself when the lease lapses.
                    _ => {
                        let _ = client.deactivate();
                        return;
                    }
                }
            }
        });
        Heartbeat { stop: Some(stop), thread: Some(thread) }
    }

    fn core_now(&self) -> i64 {
        self.core.now_for_heartbeat()
    }
}

/// A running floating-seat heartbeat; dropping it returns the seat.
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    /// Returns the seat and waits for it (at most the request timeout), unless dropped from the
    /// heartbeat's own callback, where waiting would never end: then the thread returns it alone.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
