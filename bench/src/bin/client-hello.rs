//! The same hello world with keygate-client (blocking) built in and used: what the library adds.

fn main() {
    let client = keygate_client::Client::builder("https://licenses.example", "editor")
        .public_key("A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg")
        .issuer("keygate")
        .hardware_id("hello")
        .cache_dir(std::env::temp_dir())
        .build()
        .and_then(|client| client.status());
    println!("hello {}", client.map(|status| status.valid).unwrap_or(false));
}
