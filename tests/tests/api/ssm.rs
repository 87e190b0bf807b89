//! The signing key read from SSM Parameter Store at cold start, through the real SDK against a
//! loopback stand-in that speaks SSM's JSON protocol for GetParameter.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate::config::{Config, SIGNING_KEY, SIGNING_KEY_PARAMETER};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// Serves GetParameter for one parameter; records each request's body.
async fn fake_ssm(name: &'static str, value: String) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (value, recorded) = (value.clone(), recorded.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<Incoming>| {
                    let (value, recorded) = (value.clone(), recorded.clone());
                    async move {
                        let target = request.headers().get("x-amz-target").map(|v| v.to_str().unwrap().to_string());
                        let body: Value =
                            serde_json::from_slice(&request.into_body().collect().await.unwrap().to_bytes()).unwrap();
                        recorded.lock().unwrap().push(body.clone());
                        let (status, answer) = if target.as_deref() == Some("AmazonSSM.GetParameter")
                            && body["Name"] == name
                        {
                            (
                                200,
                                json!({"Parameter": {"Name": name, "Type": "SecureString", "Value": value, "Version": 1}}),
                            )
                        } else {
                            (400, json!({"__type": "ParameterNotFound", "message": "no such parameter"}))
                        };
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/x-amz-json-1.1")
                            .body(Full::new(Bytes::from(answer.to_string())))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (url, seen)
}

async fn ssm_client(url: &str) -> aws_sdk_ssm::Client {
    let shared = keygate::store::sdk_config().await;
    aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::config::Builder::from(&shared).endpoint_url(url).build())
}

#[tokio::test]
async fn the_signing_key_is_read_from_a_secure_string_parameter_with_decryption() {
    let seed = keygate::signing::generate_seed().unwrap();
    let (url, seen) = fake_ssm("/keygate/signing-key", seed.clone()).await;
    let lookup = |name: &str| (name == SIGNING_KEY_PARAMETER).then(|| "/keygate/signing-key".to_string());
    let config = Config::load_with(lookup, &ssm_client(&url).await).await.unwrap();
    let expected = keygate::signing::TokenSigner::new(keygate::signing::decode_seed(&seed).unwrap(), &[]).unwrap();
    assert_eq!(config.signer.unwrap().kid(), expected.kid());
    assert_eq!(*seen.lock().unwrap(), vec![json!({"Name": "/keygate/signing-key", "WithDecryption": true})]);
}

#[tokio::test]
async fn a_missing_parameter_fails_the_cold_start_naming_it() {
    let (url, _) = fake_ssm("/keygate/signing-key", "unused".into()).await;
    let lookup = |name: &str| (name == SIGNING_KEY_PARAMETER).then(|| "/keygate/other".to_string());
    let err = Config::load_with(lookup, &ssm_client(&url).await).await.unwrap_err().to_string();
    assert!(err.contains(SIGNING_KEY_PARAMETER) && err.contains("/keygate/other"), "{err}");
}

#[tokio::test]
async fn a_key_in_the_environment_needs_no_ssm_call() {
    let (url, seen) = fake_ssm("/keygate/signing-key", "unused".into()).await;
    let seed = keygate::signing::generate_seed().unwrap();
    let lookup = |name: &str| match name {
        SIGNING_KEY => Some(seed.clone()),
        SIGNING_KEY_PARAMETER => Some("/keygate/signing-key".to_string()),
        _ => None,
    };
    assert!(Config::load_with(lookup, &ssm_client(&url).await).await.unwrap().signer.is_some());
    assert!(seen.lock().unwrap().is_empty());
}
