//! The async client (feature `async`), for tokio applications.

use crate::builder::{http_client, network_error, retry_after, ClientBuilder};
use crate::core::{Answer, Consumption, Core, Deactivated, OfflineRequest, Prepared};
use crate::decide::Status;
use crate::error::{Error, Result, TokenError};
use crate::heartbeat::{event, jitter, renewal_delay, retry_after as renewal_retry_after, HeartbeatEvent};
use std::sync::Arc;

/// The async twin of [`crate::Client`]: the same operations and the same cache.
#[derive(Clone)]
pub struct AsyncClient {
    core: Arc<Core>,
    http: reqwest::Client,
}

impl ClientBuilder {
    pub fn build_async(self) -> Result<AsyncClient> {
        let settings = self.into_settings()?;
        let http = http_client!(reqwest::Client::builder(), settings);
        Ok(AsyncClient { core: Arc::new(Core::new(settings)?), http })
    }
}

impl AsyncClient {
    pub fn builder(base_url: &str, product: &str) -> ClientBuilder {
        ClientBuilder::new(base_url, product)
    }

    pub fn hardware_id(&self) -> &str {
        self.core.hardware_id()
    }

    /// Sends a request, again after no answer or a "retry later" as the core says (a write with
    /// its `Idempotency-Key`, so the server acts on it at most once).
    async fn send(&self, prepared: &Prepared) -> Result<serde_json::Value> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(prepared).await;
            match self.core.retry_delay(attempt, &result) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return result,
            }
            attempt += 1;
        }
    }

    async fn send_once(&self, prepared: &Prepared) -> Result<serde_json::Value> {
        let url = format!("{}{}", self.core.base_url, prepared.path);
        let mut request = self.http.post(url).json(&prepared.body);
        if let Some(key) = &prepared.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(network_error)?;
        let (status, retry_after) = (response.status().as_u16(), retry_after(response.headers()));
        let body = response.json::<serde_json::Value>().await.ok();
        self.core.body(Answer { status, body, retry_after })
    }

    async fn verdict(&self, prepared: Prepared) -> Result<Status> {
        let body = self.send(&prepared).await?;
        match self.core.accept_verdict(&prepared, &body) {
            Err(Error::InvalidToken(TokenError::UnknownKey(_))) if self.core.fetch_keys => {
                let url = format!("{}/.well-known/jwks.json", self.core.base_url);
                let response = self.http.get(url).send().await.map_err(network_error)?;
                self.core.learn_keys(&response.text().await.map_err(network_error)?)?;
                self.core.accept_verdict(&prepared, &body)
            }
            other => other,
        }
    }

    pub async fn activate(&self, license_key: &str) -> Result<Status> {
        self.verdict(self.core.activate_request(license_key)?).await
    }

    pub async fn check(&self) -> Result<Status> {
        self.verdict(self.core.check_request(None)?).await
    }

    pub async fn check_feature(&self, feature: &str) -> Result<Status> {
        self.verdict(self.core.check_request(Some(feature))?).await
    }

    /// From the cache, without the network (no await: it never waits).
    pub fn status(&self) -> Result<Status> {
        self.core.status()
    }

    pub async fn deactivate(&self) -> Result<Deactivated> {
        let body = self.send(&self.core.deactivate_request()?).await?;
        let receipt: Deactivated = serde_json::from_value(body).map_err(Error::unexpected)?;
        self.core.forget()?;
        Ok(receipt)
    }

    pub async fn borrow(&self, hours: u32) -> Result<Status> {
        self.verdict(self.core.borrow_request(hours)?).await
    }

    pub async fn consume(&self, amount: u64, feature: Option<&str>) -> Result<Consumption> {
        let body = self.send(&self.core.consume_request(amount, feature)?).await?;
        serde_json::from_value(body).map_err(Error::unexpected)
    }

    pub async fn start_trial(&self, email: Option<&str>) -> Result<Status> {
        self.verdict(self.core.trial_request(email)?).await
    }

    pub fn offline_request(&self, license_key: &str) -> Result<OfflineRequest> {
        self.core.offline_request(license_key)
    }

    pub fn import_license_file(&self, text: &str) -> Result<Status> {
        self.core.import_license_file(text)
    }

    pub fn offline_deactivation_request(&self) -> Result<OfflineRequest> {
        self.core.offline_deactivation_request()
    }

    /// Keeps a floating seat as a tokio task: renewals and a lost seat arrive on the handle's
    /// `events`; dropping the handle (or [`AsyncHeartbeat::stop`]) returns the seat.
    pub fn heartbeat(&self) -> AsyncHeartbeat {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (sender, events) = tokio::sync::mpsc::channel(16);
        let client = self.clone();
        let task = tokio::spawn(async move {
            let (mut failures, mut retry) = (0, None);
            loop {
                let status = client.status().unwrap_or_else(|_| Status::not_activated());
                let delay = renewal_delay(&status, client.core.now_for_heartbeat(), jitter(), failures, retry);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {
                        let result = client.check().await;
                        retry = renewal_retry_after(&result);
                        match event(result) {
                            renewed @ HeartbeatEvent::Renewed(_) => {
                                failures = 0;
                                // Renewals are news only if the app listens; never wait for it.
                                let _ = sender.try_send(renewed);
                            }
                            // A lost seat is always delivered.
                            other => {
                                failures += 1;
                                let _ = sender.send(other).await;
                            }
                        }
                    }
                    _ = &mut stopped => {
                        // Refused only when the release allowance is in use: the lease then lapses by itself.
                        let _ = client.deactivate().await;
                        return;
                    }
                }
            }
        });
        AsyncHeartbeat { events, stop: Some(stop), task: Some(task) }
    }
}

/// A running floating-seat heartbeat task.
pub struct AsyncHeartbeat {
    pub events: tokio::sync::mpsc::Receiver<HeartbeatEvent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AsyncHeartbeat {
    /// Returns the seat and waits until it is returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AsyncHeartbeat {
    /// Tells the task to return the seat; it does so on its own. A runtime shutting down may cancel
    /// it first (the lease then lapses by itself): call [`AsyncHeartbeat::stop`] to be sure.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
