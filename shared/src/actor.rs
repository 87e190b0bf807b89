//! What a request's writes should say about it, while it is handled, for the events derived from
//! them (the change stream carries items, not requests): a vendor call's admin token by name
//! (`changed_by` on the items it changes), and whether a client acted through a license file
//! (`activated_via` / `released_via` = `offline` on the device). Client calls name no token: a
//! device is named by its own items.

use std::future::Future;

tokio::task_local! {
    static VENDOR_TOKEN: String;
    static OFFLINE: ();
    static CURRENT_REQUEST: String;
}

/// The attribute naming the request whose write last changed an item (every write that yields
/// events sets it): the events of one request share it, and it is the request id its log lines and
/// error answers carry.
pub const REQUEST_ATTRIBUTE: &str = "request_id";

/// Runs `operation` as the request `id`.
pub async fn for_request<F: Future>(id: String, operation: F) -> F::Output {
    CURRENT_REQUEST.scope(id, operation).await
}

/// The id of the request being handled.
pub fn request_id() -> Option<String> {
    CURRENT_REQUEST.try_with(Clone::clone).ok()
}

/// The device attributes that say an activation or a release came through a license file.
pub const ACTIVATED_VIA: &str = "activated_via";
pub const RELEASED_VIA: &str = "released_via";
pub const VIA_OFFLINE: &str = "offline";

/// Runs `operation` as a client acting through a license file (offline activation or
/// deactivation).
pub async fn through_license_file<F: Future>(operation: F) -> F::Output {
    OFFLINE.scope((), operation).await
}

/// Whether the call being handled came through a license file.
pub fn offline() -> bool {
    OFFLINE.try_with(|_| ()).is_ok()
}

/// The attribute that names who last changed an item by a vendor call: `vendor:<token name>`.
pub const CHANGED_BY: &str = "changed_by";

/// Runs `operation` as the vendor's token `name`.
pub async fn as_vendor<F: Future>(name: String, operation: F) -> F::Output {
    VENDOR_TOKEN.scope(name, operation).await
}

/// `vendor:<token name>` while a vendor call is handled; `None` otherwise.
pub fn changed_by() -> Option<String> {
    VENDOR_TOKEN.try_with(|name| format!("vendor:{name}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_is_known_inside_the_call_only() {
        assert_eq!(changed_by(), None);
        let inside = as_vendor("ci".into(), async { changed_by() }).await;
        assert_eq!(inside.as_deref(), Some("vendor:ci"));
        assert_eq!(changed_by(), None);
        assert!(!offline() && through_license_file(async { offline() }).await && !offline());
        assert_eq!(for_request("req_1".into(), async { request_id() }).await.as_deref(), Some("req_1"));
        assert_eq!(request_id(), None);
    }
}
