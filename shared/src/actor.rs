//! Who a vendor request acts for, while it is handled: its admin token, by name. The store writes
//! it on the items a vendor call changes (`changed_by`), so the events derived from the change can
//! say which token acted (the change stream carries items, not requests). Client calls set
//! nothing: a device is named by its own items.

use std::future::Future;

tokio::task_local! {
    static VENDOR_TOKEN: String;
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
    }
}
