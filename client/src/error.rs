//! The one error type: each variant is something an app can match on, with a message a person can read.

/// Why a signed verdict was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("it is not a compact JWS")]
    Malformed,
    #[error("it is not signed with EdDSA")]
    Algorithm,
    #[error("it is signed by a key this app does not trust (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("its signature does not verify")]
    BadSignature,
    #[error("it is for another product")]
    WrongAudience,
    #[error("it is from another issuer")]
    WrongIssuer,
    #[error("it is for another machine")]
    WrongHardwareId,
    #[error("it does not answer this request (nonce)")]
    NonceMismatch,
    #[error("it is not an offline license file")]
    NotOffline,
    #[error("its claims are not a license verdict: {0}")]
    Claims(String),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No answer: DNS, connection, TLS or timeout. The app keeps its cached verdict.
    #[error("the license server could not be reached ({0}); check the network connection")]
    Network(String),
    /// An answer, but not one from Keygate's API (a 5xx, API Gateway's throttling, a proxy's page).
    #[error("the license server is unavailable right now (HTTP {status}); try again later")]
    Unavailable { status: u16, retry_after: Option<u64> },
    /// The server refused the request, with its error code (`ACTIVATION_LIMIT_REACHED`, ...).
    #[error("{message}")]
    Refused { status: u16, code: String, message: String },
    /// An answer whose signed verdict did not verify: it is never trusted or cached.
    #[error("the license server's answer was not trusted: {0}")]
    InvalidToken(#[from] TokenError),
    /// The saved license was unreadable or altered; it was discarded.
    #[error("the saved license was damaged or altered and has been discarded; activate again")]
    CacheCorrupt(String),
    /// There is no license on this machine yet.
    #[error("this machine has no license yet; activate it first")]
    NotActivated,
    /// Reading or writing the saved license failed.
    #[error("could not use the license file {path}: {source}")]
    Storage { path: String, source: std::io::Error },
    /// The client was built with settings it cannot work with.
    #[error("invalid license client configuration: {0}")]
    Config(String),
}

impl Error {
    /// A success answer that is not what the operation answers (not Keygate's API, or a newer one).
    pub(crate) fn unexpected(cause: serde_json::Error) -> Self {
        Error::Network(format!("unexpected answer from the license server: {cause}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
