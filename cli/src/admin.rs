//! The vendor commands of `keygate`, over the HTTP API (local or deployed), never the table.

use crate::error::CliError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct AdminClient {
    base_url: String,
    /// Absent for client routes (the license key is their credential).
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base_url: &str, token: &str) -> Result<Self, CliError> {
        Self::with_token(base_url, Some(token))
    }

    /// A client for the client routes, which take no admin token.
    pub fn anonymous(base_url: &str) -> Result<Self, CliError> {
        Self::with_token(base_url, None)
    }

    fn with_token(base_url: &str, token: Option<&str>) -> Result<Self, CliError> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| CliError::Failed(format!("cannot load the system's root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let base_url = base_url.trim_end_matches('/').to_string();
        Ok(Self { base_url, token: token.map(str::to_string), client })
    }

    /// Sends a vendor request; a non-2xx answer is an error carrying the API's error JSON.
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base_url));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))
            .map_err(|e| CliError::Usage(format!("{}{path} is not a URL: {e}", self.base_url)))?;
        let unreachable = |e: &dyn std::fmt::Display| {
            CliError::Unavailable(format!(
                "cannot reach the API at {}: {e}\nis `make local` running? set KEYGATE_URL (or --url) to the API's base URL",
                self.base_url
            ))
        };
        let response = self.client.request(request).await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(answer) if status.is_success() => Ok(answer),
            Ok(answer) => Err(CliError::from_answer(status.as_u16(), &answer.to_string())),
            Err(_) => {
                let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
                Err(CliError::from_answer(status.as_u16(), &text))
            }
        }
    }
}

/// Encodes one path segment or query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}
