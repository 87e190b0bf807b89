//! The `keygate` command: run the API locally, create the table, make keys and admin tokens.

use clap::{Parser, Subcommand};
use keygate::api::App;
use keygate::auth::hash_token;
use keygate::config::Config;
use keygate::signing::{decode_seed, generate_seed, TokenSigner};
use keygate::store::{create_table, sdk_config, DynamoStore};
use keygate_cli::error::CliError;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "keygate", version, about = "Keygate license server: local server and operations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route of the four HTTP functions on one port, against the configured table, and
    /// do the events function's work: the table's stream into the audit log, expiry reminders and
    /// webhook deliveries.
    Serve {
        #[arg(long, env = "KEYGATE_PORT", default_value_t = 3000)]
        port: u16,
        #[arg(long, env = "KEYGATE_BIND", default_value = "127.0.0.1")]
        bind: String,
        /// Origins whose browser pages may call the client routes: comma-separated, or `*`
        /// (default: none). Vendor routes never answer browsers.
        #[arg(long, env = "KEYGATE_CORS_ORIGINS", default_value = "")]
        cors_origins: String,
        /// Serve the routes only: no audit log, reminders or webhooks (the benchmarks measure the
        /// request path alone).
        #[arg(long)]
        no_events: bool,
    },
    /// Manage the DynamoDB table.
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// Manage Ed25519 signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Make and hash vendor admin tokens.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Offline (air-gapped) activation and deactivation through files.
    Offline {
        #[command(subcommand)]
        command: OfflineCommand,
    },
    /// Vendor commands over the HTTP API (local or deployed).
    Licenses {
        #[command(flatten)]
        vendor: VendorArgs,
        #[command(subcommand)]
        command: LicensesCommand,
    },
    /// A product's trial terms, over the HTTP API (vendor).
    Trial {
        #[command(flatten)]
        vendor: VendorArgs,
        #[command(subcommand)]
        command: TrialCommand,
    },
}

/// Where and as whom the vendor commands call the API, and how they print its answers.
#[derive(clap::Args)]
struct VendorArgs {
    /// The API's base URL.
    #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:3000", global = true)]
    url: String,
    /// The plain admin token (its SHA-256 hash is what the server is configured with).
    #[arg(long, env = "KEYGATE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,
    /// Print the API's JSON answer as it is (for scripts) instead of a summary.
    #[arg(long, global = true)]
    json: bool,
}

impl VendorArgs {
    fn client(&self) -> Result<keygate_cli::admin::AdminClient, CliError> {
        let token = self
            .admin_token
            .as_deref()
            .ok_or(CliError::Unauthorized("no admin token: set KEYGATE_ADMIN_TOKEN or pass --admin-token".into()))?;
        keygate_cli::admin::AdminClient::new(&self.url, token)
    }

    /// The API's answer: as JSON with `--json`, else a summary for people.
    fn print(&self, answer: &serde_json::Value) -> Result<(), CliError> {
        let text = match self.json {
            true => serde_json::to_string_pretty(answer).map_err(CliError::failed)?,
            false => keygate_cli::summary::summary(answer),
        };
        println!("{text}");
        Ok(())
    }
}

#[derive(Subcommand)]
enum TrialCommand {
    /// Set (or replace) the trial a product offers: each device may start it once.
    Set {
        /// The product.
        product: String,
        /// How long a trial runs, in days from its start.
        #[arg(long)]
        days: u32,
        /// Devices a trial license may hold.
        #[arg(long)]
        max_activations: Option<u32>,
        /// Feature codes a trial grants, comma-separated.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
}

#[derive(Subcommand)]
enum OfflineCommand {
    /// On the offline machine: write an activation request file (docs/offline.md).
    Request {
        #[arg(long)]
        license_key: String,
        #[arg(long)]
        product: String,
        #[arg(long)]
        hardware_id: String,
        #[arg(long)]
        device_name: Option<String>,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// On the offline machine: write a deactivation request file for its license file.
    DeactivationRequest {
        #[arg(long)]
        license_file: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// On a connected machine: send a request file to the API; write the answer (for an activation,
    /// the signed license file to carry back).
    Submit {
        request: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
        /// The API's base URL.
        #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:3000")]
        url: String,
    },
    /// On the offline machine: verify a license file with the public key alone; prints what it grants.
    Verify {
        license_file: std::path::PathBuf,
        /// The JWKS document (`/.well-known/jwks.json`, saved while online).
        #[arg(long, required_unless_present = "public_key", conflicts_with = "public_key")]
        jwks: Option<std::path::PathBuf>,
        /// Or the base64url public key (as `keygate keys public` prints it after the key id).
        #[arg(long)]
        public_key: Option<String>,
        /// This machine's hardware id: the file must be for it.
        #[arg(long)]
        hardware_id: String,
        /// The product this machine runs: the file must be for it (its token's audience).
        #[arg(long)]
        product: String,
        /// The issuer the vendor's server signs as (its `KEYGATE_ISSUER`): the file must be from it.
        #[arg(long, env = "KEYGATE_ISSUER")]
        issuer: String,
        /// The request file the license file answers (its nonce must match).
        #[arg(long)]
        request: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum LicensesCommand {
    /// Issue licenses; prints the answer with their keys.
    Issue {
        #[arg(long)]
        product: String,
        #[arg(long, default_value_t = 1)]
        max_activations: u32,
        /// perpetual, subscription, time_limited, trial or consumption.
        #[arg(long = "type", default_value = "perpetual")]
        license_type: String,
        #[arg(long)]
        quantity: Option<u32>,
        #[arg(long)]
        customer_email: Option<String>,
        #[arg(long)]
        order_id: Option<String>,
        /// Expire on this date (YYYY-MM-DD or RFC 3339).
        #[arg(long, conflicts_with = "expires_after_days")]
        expires_on: Option<String>,
        /// Expire this many days after the first activation.
        #[arg(long)]
        expires_after_days: Option<u32>,
        /// Further fields of POST /v1/licenses as a JSON object, e.g. '{"grace_period_days": 7}'.
        #[arg(long)]
        extra: Option<String>,
    },
    /// Show a license, one page of its devices (in hardware id order) and its usage.
    Show {
        license_key: String,
        /// Devices per page (1 to 1000; the API's default is 100).
        #[arg(long, conflicts_with = "hardware_id")]
        limit: Option<u32>,
        /// The `next_cursor` of the page before.
        #[arg(long, conflicts_with = "hardware_id")]
        cursor: Option<String>,
        /// Only this device (an empty list when it is not bound).
        #[arg(long)]
        hardware_id: Option<String>,
    },
    /// List licenses by customer e-mail, order id, the (unverified) e-mail a trial started with, or
    /// product, newest first; or with --all every license (an export, in no particular order).
    #[command(group = clap::ArgGroup::new("filter").required(true).multiple(false))]
    List {
        /// Licenses issued to this customer e-mail.
        #[arg(long, group = "filter")]
        customer_email: Option<String>,
        /// Licenses of this order.
        #[arg(long, group = "filter")]
        order_id: Option<String>,
        /// Trial licenses started with this e-mail.
        #[arg(long, group = "filter")]
        trial_email: Option<String>,
        /// A product's licenses, trials included.
        #[arg(long, group = "filter")]
        product: Option<String>,
        /// Every license, a page at a time (pages may be short while a cursor says more remain).
        #[arg(long, group = "filter")]
        all: bool,
        /// Licenses per page (1 to 100; the server's default is 50).
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page, for the next one.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// The audit log, newest first: one license's events (with a key), or every license's
    /// (without; from the 30 days before --until unless --since says otherwise).
    Events {
        license_key: Option<String>,
        /// Only these event types, comma-separated (e.g. device.activated,device.deactivated).
        #[arg(long = "type")]
        types: Option<String>,
        /// The oldest time listed (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// The newest time listed (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Events per page (1 to 1000; the server's default is 100).
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page, for the next one.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Change a license's terms: only the fields given change (PATCH /v1/licenses/{key}).
    Update {
        license_key: String,
        /// A field to set, as name=value; the value is read as JSON when it is JSON (numbers,
        /// true/false, null to clear, objects), else as text. Repeat for several fields.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Further fields as one JSON object, e.g. '{"metadata": {"plan": "pro"}}'.
        #[arg(long)]
        patch: Option<String>,
        /// Apply only if the license is still at this version (otherwise refused, exit 4).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Release a device from a license: its seat is free at once (not a transfer).
    Release {
        license_key: String,
        /// The device's hardware id.
        hardware_id: String,
    },
    /// Suspend a license: checks answer SUSPENDED, activations are refused.
    Suspend { license_key: String },
    /// Make a suspended or revoked license active again.
    Reinstate { license_key: String },
    /// Revoke a license for good (it can still be reinstated by the vendor).
    Revoke { license_key: String },
}

#[derive(Subcommand)]
enum TableCommand {
    /// Create the table (with its lookup indexes and TTL) unless it exists.
    Create {
        #[arg(long, env = "KEYGATE_TABLE", default_value = keygate::config::DEFAULT_TABLE)]
        table: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new signing key: the secret seed goes to --out (mode 0600) or stdout, the public
    /// key and key id to stderr.
    New {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Print the public key and key id of the seed in KEYGATE_SIGNING_KEY.
    Public,
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Print a new random admin token and, on stderr, the SHA-256 hash to configure.
    New {
        /// Configure it under this name (logs say which token acted): prints name:hash.
        #[arg(long)]
        name: Option<String>,
    },
    /// Read a token on stdin and print its SHA-256 hash (for KEYGATE_ADMIN_TOKEN_SHA256); a token
    /// shorter than 32 characters or with less than about 128 bits is refused.
    Hash {
        /// Print it as name:hash, configured under this name.
        #[arg(long)]
        name: Option<String>,
    },
}

/// A hash as configured: `name:hash` when named (the name checked as the server checks it).
fn configured_hash(name: Option<&str>, hash: String) -> Result<String, CliError> {
    let Some(name) = name else { return Ok(hash) };
    let entry = format!("{name}:{hash}");
    keygate::auth::AdminTokens::parse(&entry).map_err(|e| CliError::Usage(format!("--name: {e}")))?;
    Ok(entry)
}

#[tokio::main]
async fn main() -> ExitCode {
    lambda_http::tracing::init_default_subscriber();
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keygate: {err}");
            err.exit_code()
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve { port, bind, cors_origins, no_events } => serve(&bind, port, &cors_origins, !no_events).await,
        Command::Table { command: TableCommand::Create { table } } => {
            let client = aws_sdk_dynamodb_client().await;
            let created = create_table(&client, &table).await.map_err(CliError::failed)?;
            eprintln!("table {table} {}", if created { "created" } else { "exists already" });
            Ok(())
        }
        Command::Keys { command: KeysCommand::New { out } } => {
            let seed = generate_seed().map_err(CliError::failed)?;
            let signer = decode_seed(&seed).and_then(|seed| TokenSigner::new(seed, &[])).map_err(CliError::failed)?;
            match out {
                Some(path) => write_secret(&path, &seed)?,
                None => println!("{seed}"),
            }
            eprintln!("public key {} (kid {})", signer.public_key_b64(), signer.kid());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Public } => {
            let config = Config::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
            config.require_signer().map_err(|e| CliError::Usage(e.to_string()))?;
            let signer = config.signer.as_ref().ok_or(CliError::Usage("no signing key".into()))?;
            println!("{} {}", signer.kid(), signer.public_key_b64());
            Ok(())
        }
        Command::AdminToken { command: AdminTokenCommand::New { name } } => {
            let token = generate_seed().map_err(CliError::failed)?;
            let hash = configured_hash(name.as_deref(), hash_token(&token))?;
            println!("{token}");
            eprintln!("KEYGATE_ADMIN_TOKEN_SHA256={hash}");
            Ok(())
        }
        Command::Licenses { vendor, command } => {
            let answer = licenses(&vendor.client()?, command).await?;
            vendor.print(&answer)
        }
        Command::Trial { vendor, command: TrialCommand::Set { product, days, max_activations, features } } => {
            use keygate_cli::admin::encode;
            let client = vendor.client()?;
            let mut body = serde_json::json!({"days": days});
            if let Some(max) = max_activations {
                body["max_activations"] = serde_json::json!(max);
            }
            if !features.is_empty() {
                body["features"] = features.iter().map(|code| serde_json::json!({"code": code})).collect();
            }
            let answer = client.send("PUT", &format!("/v1/products/{}/trial", encode(&product)), Some(&body)).await?;
            vendor.print(&answer)
        }
        Command::Offline { command } => offline(command).await,
        Command::AdminToken { command: AdminTokenCommand::Hash { name } } => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token).map_err(CliError::failed)?;
            let token = token.trim_end_matches(['\r', '\n']);
            keygate::auth::check_token_strength(token)
                .map_err(|why| CliError::Usage(format!("the token {why}: make one with `keygate admin-token new`")))?;
            println!("{}", configured_hash(name.as_deref(), hash_token(token))?);
            Ok(())
        }
    }
}

async fn licenses(
    client: &keygate_cli::admin::AdminClient,
    command: LicensesCommand,
) -> Result<serde_json::Value, CliError> {
    use keygate_cli::admin::encode;
    use serde_json::{json, Value};
    let set_status = |key: String, status: &'static str| async move {
        client.send("PATCH", &format!("/v1/licenses/{}", encode(&key)), Some(&json!({"status": status}))).await
    };
    match command {
        LicensesCommand::Issue {
            product,
            max_activations,
            license_type,
            quantity,
            customer_email,
            order_id,
            expires_on,
            expires_after_days,
            extra,
        } => {
            let mut body = match extra {
                Some(text) => {
                    serde_json::from_str::<Value>(&text).map_err(|e| CliError::Usage(format!("--extra: {e}")))?
                }
                None => json!({}),
            };
            let fields = body.as_object_mut().ok_or(CliError::Usage("--extra must be a JSON object".into()))?;
            fields.insert("product".into(), json!(product));
            fields.insert("max_activations".into(), json!(max_activations));
            fields.insert("license_type".into(), json!(license_type));
            if let Some(quantity) = quantity {
                fields.insert("quantity".into(), json!(quantity));
            }
            if let Some(email) = customer_email {
                fields.insert("customer".into(), json!({"email": email}));
            }
            if let Some(order_id) = order_id {
                fields.insert("order_id".into(), json!(order_id));
            }
            if let Some(date) = expires_on {
                fields.insert("expiration".into(), json!({"type": "on_date", "date": date}));
            }
            if let Some(days) = expires_after_days {
                fields.insert("expiration".into(), json!({"type": "days_after_activation", "days": days}));
            }
            client.send("POST", "/v1/licenses", Some(&body)).await
        }
        LicensesCommand::Show { license_key, limit, cursor, hardware_id } => {
            let mut query: Vec<String> = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(cursor) = cursor {
                query.push(format!("cursor={}", encode(&cursor)));
            }
            if let Some(hardware_id) = hardware_id {
                query.push(format!("hardware_id={}", encode(&hardware_id)));
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            client.send("GET", &format!("/v1/licenses/{}{query}", encode(&license_key)), None).await
        }
        LicensesCommand::List { customer_email, order_id, trial_email, product, all: _, limit, cursor } => {
            let filters = [("customer_email", customer_email), ("order_id", order_id), ("trial_email", trial_email)];
            let mut query: Vec<String> = filters
                .into_iter()
                .chain([("product", product)])
                .filter_map(|(name, value)| value.map(|v| format!("{name}={}", encode(&v))))
                .collect();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            if let Some(cursor) = cursor {
                query.push(format!("cursor={}", encode(&cursor)));
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            client.send("GET", &format!("/v1/licenses{query}"), None).await
        }
        LicensesCommand::Events { license_key, types, since, until, limit, cursor } => {
            let given = [("type", types), ("since", since), ("until", until), ("cursor", cursor)];
            let mut query: Vec<String> =
                given.into_iter().filter_map(|(name, value)| value.map(|v| format!("{name}={}", encode(&v)))).collect();
            if let Some(limit) = limit {
                query.push(format!("limit={limit}"));
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            let path = match license_key {
                Some(key) => format!("/v1/licenses/{}/events{query}", encode(&key)),
                None => format!("/v1/events{query}"),
            };
            client.send("GET", &path, None).await
        }
        LicensesCommand::Update { license_key, set, patch, version } => {
            let mut body = match patch {
                Some(text) => {
                    serde_json::from_str::<Value>(&text).map_err(|e| CliError::Usage(format!("--patch: {e}")))?
                }
                None => json!({}),
            };
            let fields = body.as_object_mut().ok_or(CliError::Usage("--patch must be a JSON object".into()))?;
            for pair in set {
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--set {pair}: expected NAME=VALUE")))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                fields.insert(name.to_string(), value);
            }
            if let Some(version) = version {
                fields.insert("version".into(), json!(version));
            }
            if fields.is_empty() {
                return Err(CliError::Usage("nothing to change: give --set NAME=VALUE or --patch".into()));
            }
            client.send("PATCH", &format!("/v1/licenses/{}", encode(&license_key)), Some(&body)).await
        }
        LicensesCommand::Release { license_key, hardware_id } => {
            let path = format!("/v1/licenses/{}/devices/{}", encode(&license_key), encode(&hardware_id));
            client.send("DELETE", &path, None).await
        }
        LicensesCommand::Suspend { license_key } => set_status(license_key, "suspended").await,
        LicensesCommand::Reinstate { license_key } => set_status(license_key, "active").await,
        LicensesCommand::Revoke { license_key } => set_status(license_key, "revoked").await,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path).map_err(CliError::file(path))?;
    serde_json::from_str(&text).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}

fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(CliError::failed)?;
    std::fs::write(path, text + "\n").map_err(CliError::file(path))
}

async fn offline(command: OfflineCommand) -> Result<(), CliError> {
    use keygate::input::{DeviceName, HardwareId, LicenseKey, Product};
    use keygate::offline::{self, LicenseFile, OfflineKind, OfflineRequest};
    use keygate::time::Timestamp;
    match command {
        OfflineCommand::Request { license_key, product, hardware_id, device_name, out } => {
            let mut request = OfflineRequest::new(
                OfflineKind::Activate,
                LicenseKey::parse(&license_key).map_err(|e| CliError::Usage(format!("--license-key {e}")))?,
                Product::parse(product).map_err(|e| CliError::Usage(format!("--product {e}")))?,
                HardwareId::parse(hardware_id).map_err(|e| CliError::Usage(format!("--hardware-id {e}")))?,
                Timestamp::now(),
            )
            .map_err(CliError::failed)?;
            request.device_name = device_name
                .map(DeviceName::parse)
                .transpose()
                .map_err(|e| CliError::Usage(format!("--device-name {e}")))?;
            write_json(&out, &request)?;
            eprintln!("wrote {}: carry it to a connected machine and run `keygate offline submit`", out.display());
            Ok(())
        }
        OfflineCommand::DeactivationRequest { license_file, out } => {
            let file: LicenseFile = read_json(&license_file)?;
            let request = OfflineRequest::new(
                OfflineKind::Deactivate,
                file.license_key,
                file.product,
                file.hardware_id,
                Timestamp::now(),
            )
            .map_err(CliError::failed)?;
            write_json(&out, &request)?;
            eprintln!("wrote {}; remove {} from this machine", out.display(), license_file.display());
            Ok(())
        }
        OfflineCommand::Submit { request, out, url } => {
            let file: OfflineRequest = read_json(&request)?;
            let path = match file.kind {
                OfflineKind::Activate => "/v1/activate/offline",
                OfflineKind::Deactivate => "/v1/deactivate/offline",
            };
            let body = serde_json::to_value(&file).map_err(CliError::failed)?;
            let answer = keygate_cli::admin::AdminClient::anonymous(&url)?.send("POST", path, Some(&body)).await?;
            write_json(&out, &answer)?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        OfflineCommand::Verify { license_file, jwks, public_key, hardware_id, product, issuer, request } => {
            let file: LicenseFile = read_json(&license_file)?;
            let keys = match (jwks, public_key) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(&path).map_err(CliError::file(&path))?;
                    offline::jwks_keys(&text).map_err(CliError::failed)?.into_iter().map(|(_, key)| key).collect()
                }
                (None, Some(key)) => vec![offline::public_key(&key).map_err(CliError::failed)?],
                (None, None) => return Err(CliError::Usage("--jwks or --public-key is required".into())),
            };
            let nonce = request.map(|path| read_json::<OfflineRequest>(&path)).transpose()?.map(|r| r.nonce);
            let hardware_id =
                HardwareId::parse(hardware_id).map_err(|e| CliError::Usage(format!("--hardware-id {e}")))?;
            let product = Product::parse(product).map_err(|e| CliError::Usage(format!("--product {e}")))?;
            let expected = offline::Expected {
                product: &product,
                issuer: &issuer,
                hardware_id: &hardware_id,
                nonce: nonce.as_ref(),
            };
            let verified =
                offline::verify_license_file(&file, &keys, &expected, Timestamp::now()).map_err(CliError::failed)?;
            // Only what was signed: the file's other fields are for people and could be edited.
            let claims = &verified.claims;
            let summary = serde_json::json!({
                "valid": true,
                "license_id": claims.sub,
                "product": claims.aud,
                "hardware_id": claims.hwid,
                "issuer": claims.iss,
                "license_type": claims.license_type,
                "features": claims.features,
                "expires_at": verified.expires_at,
            });
            println!("{}", serde_json::to_string_pretty(&summary).map_err(CliError::failed)?);
            Ok(())
        }
    }
}

async fn aws_sdk_dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config().await)
}

fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(CliError::file(path))?;
    writeln!(file, "{secret}").map_err(CliError::file(path))
}

async fn serve(bind: &str, port: u16, cors_origins: &str, events: bool) -> Result<(), CliError> {
    let sdk = sdk_config().await;
    let mut config = Config::load(&sdk).await.map_err(|e| match e {
        // The signing key's parameter could not be read: SSM may answer on a retry.
        keygate::config::ConfigError::Parameter { .. } => CliError::Unavailable(e.to_string()),
        e => CliError::Usage(e.to_string()),
    })?;
    config.cors = keygate::cors::AllowedOrigins::parse(cors_origins)
        .map_err(|e| CliError::Usage(format!("--cors-origins: {e}")))?;
    config.require_signer().map_err(|e| CliError::Usage(e.to_string()))?;
    if config.admin_tokens.is_empty() {
        eprintln!("warning: KEYGATE_ADMIN_TOKEN_SHA256 is not set; every vendor route will answer 401");
    }
    let store = DynamoStore::from_config(&sdk, &config.table)
        .with_events_table(&config.events_table)
        .with_expiry_reminders(&config.expiry_reminder_days);
    let keep_days = config.event_retention_days;
    let app = Arc::new(App::new(store, config));
    // What the events function does in AWS: the table's stream into the audit log.
    if events {
        let every = std::time::Duration::from_millis(500);
        tokio::spawn(keygate_cli::follow_events(sdk.clone(), app.clone(), keep_days, every));
    }
    let listener = tokio::net::TcpListener::bind((bind, port))
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {bind}:{port}: {e}")))?;
    eprintln!("keygate serving on http://{}", listener.local_addr().map_err(CliError::failed)?);
    keygate_cli::serve(listener, app, shutdown_signal()).await.map_err(CliError::failed)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
