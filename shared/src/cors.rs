//! Cross-origin requests from browsers (and Electron renderers) to the client routes: which
//! origins may call them, and the headers that say so. Vendor routes never allow a browser.

/// The origins allowed to call the client routes (`KEYGATE_CORS_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No browser may call the API (the default).
    #[default]
    None,
    /// Any origin (`*`): the client routes carry no cookie or header credential, only the key in
    /// the body, so this exposes nothing a plain HTTP client could not do.
    Any,
    /// Exactly these origins (scheme, host and port, as a browser sends `Origin`).
    List(Vec<String>),
}

/// How long a browser may cache a preflight answer.
pub const MAX_AGE_SECONDS: u32 = 600;

/// An entry of the origin list that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an origin (scheme://host[:port]) or `*` alone")]
pub struct NotAnOrigin(pub String);

impl AllowedOrigins {
    /// Comma-separated origins, or `*`; empty allows none.
    pub fn parse(text: &str) -> Result<Self, NotAnOrigin> {
        let origins: Vec<&str> = text.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
        match origins.as_slice() {
            [] => Ok(AllowedOrigins::None),
            ["*"] => Ok(AllowedOrigins::Any),
            list => {
                for origin in list {
                    let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                        !scheme.is_empty() && !rest.is_empty() && !rest.contains('/') && !origin.contains('*')
                    });
                    if !valid {
                        return Err(NotAnOrigin(origin.to_string()));
                    }
                }
                Ok(AllowedOrigins::List(list.iter().map(|o| o.to_ascii_lowercase()).collect()))
            }
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::None => false,
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_exactly() {
        assert_eq!(AllowedOrigins::parse("").unwrap(), AllowedOrigins::None);
        assert_eq!(AllowedOrigins::parse(" * ").unwrap(), AllowedOrigins::Any);
        let list = AllowedOrigins::parse("https://App.example.com, app://desktop").unwrap();
        assert!(list.allows("https://app.example.com") && list.allows("app://desktop"));
        assert!(!list.allows("https://evil.example.com") && !AllowedOrigins::None.allows("https://a.b"));
        for bad in ["example.com", "https://a.example.com/path", "https://*.example.com", "*, https://a.b"] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}
