//! Header names the gateway reads or writes, declared once.
//!
//! The `Tollbu-Verified-*` headers carry the verified caller to the upstream.
//! The gateway deletes any copy a client sends and writes its own, so an
//! upstream can trust them as long as it only accepts traffic from the gateway.

use http::HeaderName;

/// The caller declares the purpose of a request here; policies match on it.
pub const PURPOSE: HeaderName = HeaderName::from_static("tollbu-purpose");
/// Generated when absent, echoed on the response and recorded in the audit log.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context, accepted from the caller and propagated upstream.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Legal consumer organisation number (from the token's `consumer`).
pub const VERIFIED_CONSUMER: HeaderName = HeaderName::from_static("tollbu-verified-consumer");
/// Supplier organisation number when a vendor acts for the consumer.
pub const VERIFIED_SUPPLIER: HeaderName = HeaderName::from_static("tollbu-verified-supplier");
/// The token's `client_id`, for the registry's own logs only.
pub const VERIFIED_CLIENT_ID: HeaderName = HeaderName::from_static("tollbu-verified-client-id");
/// The grant the policy engine allowed the request under.
pub const VERIFIED_GRANT: HeaderName = HeaderName::from_static("tollbu-verified-grant");
/// The purpose the request was allowed for.
pub const VERIFIED_PURPOSE: HeaderName = HeaderName::from_static("tollbu-verified-purpose");
