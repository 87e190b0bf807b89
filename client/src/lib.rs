//! Keygate's client library: what a vendor's software embeds to enforce its licenses on the
//! customer's machine. docs/client.md is the integration guide.
//!
//! ```no_run
//! # fn main() -> keygate_client::Result<()> {
//! let client = keygate_client::Client::builder("https://licenses.example.com", "acme-editor")
//!     .public_key("vHs0...current key...")
//!     .public_key("Q2x...next key...")
//!     .issuer("keygate:123456789012:eu-west-1:licenses")
//!     .build()?;
//! if !client.status()?.valid {
//!     client.activate("7KQ2M-4HZ9X-P0RTV-8WJ3D-CN5EB")?;
//! }
//! let status = client.status()?;
//! if status.has_feature("export") { /* ... */ }
//! # Ok(()) }
//! ```
//!
//! The decisions (verification, cache, the three clocks, clock rollback) live in an I/O-free core
//! with the time passed in; [`Client`] (blocking) and [`AsyncClient`] (feature `async`) only move
//! the bytes.

mod builder;
mod cache;
mod core;
mod decide;
mod error;
pub mod hardware;
mod heartbeat;
mod keys;
mod verdict;

#[cfg(feature = "blocking")]
mod blocking;
#[cfg(feature = "async")]
mod nonblocking;

pub use crate::core::{Clock, Consumption, Deactivated, OfflineRequest, SystemClock};
pub use builder::ClientBuilder;
pub use cache::{CacheFile, CACHE_FORMAT};
pub use decide::{decide, Reason, Status, DEFAULT_CLOCK_TOLERANCE_SECONDS};
pub use error::{Error, Result, TokenError};
pub use heartbeat::HeartbeatEvent;
pub use keys::{KeySet, PublicKey};
pub use verdict::{verify, Claims, Expected, FeatureClaim};

#[cfg(feature = "blocking")]
pub use blocking::{Client, Heartbeat};
#[cfg(feature = "async")]
pub use nonblocking::{AsyncClient, AsyncHeartbeat};
