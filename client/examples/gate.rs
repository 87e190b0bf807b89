//! A command-line app that gates one feature behind a Keygate license: copy it as a starting point.
//!
//! ```sh
//! export KEYGATE_URL=https://licenses.example.com KEYGATE_ISSUER=... KEYGATE_PUBLIC_KEYS=<current>,<next>
//! gate activate 7KQ2M-4HZ9X-P0RTV-8WJ3D-CN5EB
//! gate export report.txt     # works only with a valid license that includes `export`
//! gate status
//! gate deactivate            # before moving to another machine
//! ```
//!
//! Run it from the repository with `cargo run -p keygate-client --example gate -- <command>`.
//! `KEYGATE_PUBLIC_KEYS` is the public key `keygate keys public` prints (or the JWKS's
//! `.keys[0].x`), and `KEYGATE_ISSUER` the deployment's issuer (`make local` writes it to
//! .local/env). `KEYGATE_PRODUCT` (default `acme-editor`, the walk-through's), `KEYGATE_CACHE_DIR`
//! and `KEYGATE_HARDWARE_ID` override the product, where the license is saved and the derived
//! hardware id (tests use them).

use keygate_client::{Client, Error, Reason};
use std::process::ExitCode;

fn client() -> Result<Client, Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = var("KEYGATE_URL").ok_or_else(|| Error::Config("set KEYGATE_URL".into()))?;
    let product = var("KEYGATE_PRODUCT").unwrap_or_else(|| "acme-editor".into());
    let mut builder = Client::builder(&url, &product).issuer(&var("KEYGATE_ISSUER").unwrap_or_default());
    // A real app embeds these at build time (e.g. with `env!` or `include_str!`): the current key and the next.
    for key in var("KEYGATE_PUBLIC_KEYS").unwrap_or_default().split(',').filter(|k| !k.is_empty()) {
        builder = builder.public_key(key);
    }
    if let Some(dir) = var("KEYGATE_CACHE_DIR") {
        builder = builder.cache_dir(dir);
    }
    if let Some(id) = var("KEYGATE_HARDWARE_ID") {
        builder = builder.hardware_id(&id);
    }
    builder.build()
}

/// The license for a gated action: from the cache, checked online when a check is due (the app
/// keeps working on the cached verdict if the server cannot be reached, as far as it allows).
fn license(client: &Client) -> Result<keygate_client::Status, Error> {
    let status = client.status()?;
    let due = status.check_due_at.is_some_and(|due| now() >= due);
    if (due || status.reason == Reason::CheckRequired) && status.reason != Reason::NotActivated {
        match client.check() {
            Ok(checked) => return Ok(checked),
            Err(Error::Network(_) | Error::Unavailable { .. }) => return client.status(),
            Err(err) => return Err(err),
        }
    }
    Ok(status)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn run(args: &[String]) -> Result<(), Error> {
    let client = client()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["activate", key] => {
            let status = client.activate(key)?;
            println!("activated: {}", status.reason.message());
        }
        ["status"] => {
            let status = client.status()?;
            println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
        }
        ["export", file] => {
            let status = license(&client)?;
            if !status.valid {
                return Err(Error::Config(status.reason.message()));
            }
            if !status.has_feature("export") {
                return Err(Error::Config("your license does not include export".into()));
            }
            std::fs::write(file, "exported\n").map_err(|e| Error::Storage { path: file.to_string(), source: e })?;
            println!("exported to {file}");
        }
        ["deactivate"] => {
            let released = client.deactivate()?;
            println!("deactivated; this machine's last token is valid until {:?}", released.credential_valid_until);
        }
        _ => return Err(Error::Config("usage: gate activate <key> | status | export <file> | deactivate".into())),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gate: {err}");
            ExitCode::FAILURE
        }
    }
}
