//! The SDK client's configuration: region and credentials, TLS trust, timeouts and retries.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::time::Duration;

/// SDK configuration for Keygate: rustls with ring (no second TLS stack), and timeouts short
/// enough that a slow store becomes a clean 503 well before a Lambda function's own timeout.
/// The endpoint comes from the SDK's standard `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL`.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_with(|name| std::env::var(name).ok()).await
}

/// [`sdk_config`] with the environment variables that pick the Lambda fast path read through `env`.
pub async fn sdk_config_with(env: impl Fn(&str) -> Option<String>) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context())
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(1_000))
        .operation_attempt_timeout(Duration::from_millis(1_500))
        .operation_timeout(Duration::from_millis(4_000))
        .build();
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    let loader = match lambda_region(env) {
        // On Lambda the region and the role's credentials are always in the environment: skip
        // building the default provider chains (profile files, SSO, web identity, container,
        // IMDS), a measurable part of every cold start. Anywhere else, the chains.
        Some(region) => loader
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_config::environment::EnvironmentVariableCredentialsProvider::new()),
        None => loader,
    };
    loader.load().await
}

/// The region, when running in Lambda with the role's credentials in the environment.
pub(super) fn lambda_region(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    set("AWS_LAMBDA_FUNCTION_NAME")?;
    set("AWS_ACCESS_KEY_ID")?;
    set("AWS_REGION")
}

/// The roots of Amazon Trust Services, which sign every AWS service endpoint. Trusting only these,
/// instead of loading and parsing the whole system store, takes a measurable part off every cold
/// start (bench/examples/init_stages.rs shows it). `KEYGATE_TLS_SYSTEM_ROOTS=1` trusts the system store instead (for a TLS proxy).
pub(super) const AWS_ROOT_CAS: &str = include_str!("aws_root_cas.pem");
pub(super) const TLS_SYSTEM_ROOTS: &str = "KEYGATE_TLS_SYSTEM_ROOTS";

pub(super) fn tls_context() -> tls::TlsContext {
    let system = std::env::var(TLS_SYSTEM_ROOTS).is_ok_and(|v| v == "1");
    let store = if system {
        tls::TrustStore::default()
    } else {
        tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(AWS_ROOT_CAS.as_bytes())
    };
    tls::TlsContext::builder().with_trust_store(store).build().unwrap_or_default()
}
