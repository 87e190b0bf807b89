//! The vendor commands of `keygate`, over the HTTP API (local or deployed), never the table.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct AdminClient {
    base_url: String,
    token: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base_url: &str, token: &str) -> Result<Self, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { base_url: base_url.trim_end_matches('/').to_string(), token: token.to_string(), client })
    }

    /// Sends a vendor request; a non-2xx answer is an error carrying the API's error JSON.
    pub async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(|e| format!("{}: {e}", self.base_url))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            format!("{status}: {}", String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>())
        })?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!("{status}: {answer}"))
        }
    }
}

/// Encodes one path segment or query value.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>().replace('+', "%20")
}
