//! Sending one delivery: an HTTP POST to the endpoint, over TLS verified against the public web
//! roots (not the Amazon-only trust store the DynamoDB client uses), to an address checked as the
//! one actually connected to (a name resolving to a private address is refused, whatever it
//! resolved to when the endpoint was saved), following no redirect.

use super::address::is_public;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use lambda_http::http::{self, Uri};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where deliveries may go, and how long one may take.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Private, loopback and link-local addresses, and plain http, allowed (`make local`).
    pub allow_private: bool,
    pub timeout: Duration,
}

/// An endpoint's URL, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotDeliverable {
    #[error("is not an absolute http(s) URL of at most 2048 characters")]
    NotAUrl,
    #[error("must use https")]
    NotHttps,
    #[error("must not carry a user name or password")]
    UserInfo,
    #[error("names a private, loopback or link-local address ({0}): webhooks go to public addresses only")]
    Private(String),
}

/// Checks an endpoint URL: absolute, https (or http where private addresses are allowed), no
/// user info, and not a private address or `localhost` by name (a name is checked again on
/// every delivery, by the address it resolves to).
pub fn target(url: &str, policy: Policy) -> Result<Target, NotDeliverable> {
    if url.len() > 2_048 || url.contains('#') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NotDeliverable::NotAUrl);
    }
    let uri: Uri = url.parse().map_err(|_| NotDeliverable::NotAUrl)?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if policy.allow_private => false,
        Some("http") => return Err(NotDeliverable::NotHttps),
        _ => return Err(NotDeliverable::NotAUrl),
    };
    let authority = uri.authority().ok_or(NotDeliverable::NotAUrl)?;
    if authority.as_str().contains('@') {
        return Err(NotDeliverable::UserInfo);
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.is_empty() || host.contains('%') {
        return Err(NotDeliverable::NotAUrl);
    }
    if !policy.allow_private {
        let name = host.trim_end_matches('.');
        let local_name = name == "localhost" || name.ends_with(".localhost");
        let private_literal = host.parse::<IpAddr>().is_ok_and(|ip| !is_public(ip));
        // `2130706433`, `0x7f.1`, `127.1`: names the resolver reads as IPv4 addresses. Refused when
        // saved (each would also be refused by the address it resolves to, on every attempt).
        let numeric = !name.is_empty()
            && name.split('.').all(|label| {
                let hex = label.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                hex || (!label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()))
            });
        let public_literal = host.parse::<IpAddr>().is_ok_and(is_public);
        if local_name || private_literal || (numeric && !public_literal) {
            return Err(NotDeliverable::Private(host));
        }
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path_and_query = uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string());
    Ok(Target { https, host, port, path_and_query })
}

/// What became of one POST: the answer's status, or why there was none.
pub type Outcome = Result<u16, String>;

/// POSTs `body` with `headers` to `target`, within the policy's timeout: the status of the
/// answer (its body is not read), or the reason there was none.
pub async fn post(target: &Target, headers: &[(&str, String)], body: &str, policy: Policy) -> (Outcome, Duration) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(policy.timeout, send(target, headers, body, policy)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {} s", policy.timeout.as_secs())),
    };
    (outcome, started.elapsed())
}

async fn send(target: &Target, headers: &[(&str, String)], body: &str, policy: Policy) -> Outcome {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("{} does not resolve: {e}", target.host))?
        .collect();
    let allowed: Vec<SocketAddr> =
        resolved.iter().copied().filter(|a| policy.allow_private || is_public(a.ip())).collect();
    if allowed.is_empty() {
        return Err(format!("{} resolves only to addresses webhooks may not reach", target.host));
    }
    let mut last_error = String::new();
    for address in allowed {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                // The address connected to is one just checked: no second lookup happens.
                return if target.https {
                    let server_name = rustls::pki_types::ServerName::try_from(target.host.clone())
                        .map_err(|_| format!("{} is not a TLS server name", target.host))?;
                    let tls = tokio_rustls::TlsConnector::from(tls_config())
                        .connect(server_name, stream)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", target.host))?;
                    exchange(tls, target, headers, body).await
                } else {
                    exchange(stream, target, headers, body).await
                };
            }
            Err(err) => last_error = format!("cannot connect to {address}: {err}"),
        }
    }
    Err(last_error)
}

async fn exchange<T>(io: T, target: &Target, headers: &[(&str, String)], body: &str) -> Outcome
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with {}: {e}", target.host))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let default_port = if target.https { 443 } else { 80 };
    let host = match (target.port == default_port, target.host.contains(':')) {
        (true, false) => target.host.clone(),
        (true, true) => format!("[{}]", target.host),
        (false, false) => format!("{}:{}", target.host, target.port),
        (false, true) => format!("[{}]:{}", target.host, target.port),
    };
    let mut request = http::Request::post(&target.path_and_query)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "keygate-webhooks/1");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request =
        request.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| format!("request not buildable: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("HTTP with {}: {e}", target.host))?;
    Ok(response.status().as_u16())
}

/// TLS for webhooks: the public web's roots (Mozilla's, compiled in), built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
            // The ring provider supports the default versions: this cannot fail.
            Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: Policy = Policy { allow_private: false, timeout: Duration::from_secs(2) };
    const LOCAL: Policy = Policy { allow_private: true, timeout: Duration::from_secs(2) };

    #[test]
    fn endpoint_urls_are_https_to_public_hosts_unless_private_ones_are_allowed() {
        let ok = target("https://hooks.example.com:8443/keygate?x=1", PUBLIC).unwrap();
        assert_eq!(
            (ok.host.as_str(), ok.port, ok.path_and_query.as_str()),
            ("hooks.example.com", 8443, "/keygate?x=1")
        );
        assert_eq!(target("https://example.com", PUBLIC).unwrap().path_and_query, "/");
        let refusals = [
            ("http://example.com/hook", NotDeliverable::NotHttps),
            ("https://127.0.0.1/hook", NotDeliverable::Private("127.0.0.1".into())),
            ("https://169.254.169.254/latest", NotDeliverable::Private("169.254.169.254".into())),
            ("https://[::1]:8080/", NotDeliverable::Private("::1".into())),
            ("https://LOCALHOST/", NotDeliverable::Private("localhost".into())),
            ("https://localhost./", NotDeliverable::Private("localhost.".into())),
            ("https://2130706433/", NotDeliverable::Private("2130706433".into())),
            ("https://0x7f.1/", NotDeliverable::Private("0x7f.1".into())),
            ("https://127.1/", NotDeliverable::Private("127.1".into())),
            ("https://user:pw@example.com/", NotDeliverable::UserInfo),
            ("ftp://example.com/", NotDeliverable::NotAUrl),
            ("/relative", NotDeliverable::NotAUrl),
            ("https://example.com/#frag", NotDeliverable::NotAUrl),
        ];
        for (url, why) in refusals {
            assert_eq!(target(url, PUBLIC), Err(why), "{url}");
        }
        assert!(target("http://127.0.0.1:9000/hook", LOCAL).is_ok());
        assert!(target("https://8.8.8.8/hook", PUBLIC).is_ok(), "a public address literal");
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_when_delivering() {
        // `localhost` by name is refused when saved; this name is what a DNS rebinding would be.
        let target = Target { https: true, host: "localhost".into(), port: 443, path_and_query: "/".into() };
        let (outcome, _) = post(&target, &[], "{}", PUBLIC).await;
        assert!(outcome.unwrap_err().contains("resolves only to addresses webhooks may not reach"));
    }
}
