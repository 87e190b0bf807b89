//! What can go wrong in a `keygate` command, each kind with its own exit code so scripts can tell
//! a typo from a refusal from an outage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A failed command: what to print, and the exit code it ends with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or a value in it is wrong (the API's 400 included): exit 2, like clap's own.
    #[error("{0}")]
    Usage(String),
    /// The API has no such license, device or route: exit 3.
    #[error("{0}")]
    NotFound(String),
    /// The API refused the request as it stands (403, 405, 409, 413): exit 4.
    #[error("{0}")]
    Refused(String),
    /// No admin token, or one the API does not accept: exit 5.
    #[error("{0}")]
    Unauthorized(String),
    /// The API could not be reached or could not answer now (5xx, 429): exit 6; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// A local file could not be read or written: exit 1.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    /// Anything else, e.g. a bad key or license file: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Refused(_) => 4,
            CliError::Unauthorized(_) => 5,
            CliError::Unavailable(_) => 6,
            CliError::File { .. } | CliError::Failed(_) => 1,
        })
    }

    /// An answer of the API that is not a success, by its status.
    pub fn from_answer(status: u16, answer: &str) -> Self {
        let message = format!("HTTP {status}: {answer}");
        match status {
            400 => CliError::Usage(message),
            401 => CliError::Unauthorized(format!(
                "{message}\nset KEYGATE_ADMIN_TOKEN (or --admin-token) to a token whose SHA-256 the server has in \
                 KEYGATE_ADMIN_TOKEN_SHA256"
            )),
            404 => CliError::NotFound(message),
            429 | 500..=599 => CliError::Unavailable(format!("{message}\nthe API could not answer now; retry later")),
            _ => CliError::Refused(message),
        }
    }

    /// A file that could not be read or written.
    pub fn file(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| CliError::File { path: path.to_path_buf(), source }
    }

    /// Any other failure, described by its display.
    pub fn failed(err: impl std::fmt::Display) -> Self {
        CliError::Failed(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_answer_has_its_own_exit_code() {
        let code = |status| CliError::from_answer(status, "{}").exit_code();
        let codes = [code(400), code(404), code(409), code(401), code(503)];
        for (i, a) in codes.iter().enumerate() {
            assert!(codes[i + 1..].iter().all(|b| a != b), "{codes:?}");
        }
        assert_eq!(code(403), code(409), "both are refusals");
        assert_eq!(code(429), code(500), "both mean: retry later");
        assert!(CliError::from_answer(401, "{}").to_string().contains("KEYGATE_ADMIN_TOKEN"));
    }
}
