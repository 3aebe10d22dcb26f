//! OpenTelemetry trace export (OTLP over HTTP/protobuf), off by default.
//!
//! Enabled by `[telemetry] otlp_endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! variables; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it
//! off again. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_BSP_*`
//! are honoured by the SDK. Spans never carry a token, a national identity
//! number or a body: only path templates, codes and organisation numbers.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracer, SdkTracerProvider};

use crate::config::TelemetrySection;

/// The exporter pipeline, when enabled.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry exporter: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// Sets up export if config or environment asks for it; must run inside a tokio runtime.
    pub fn init(section: &TelemetrySection) -> Result<Telemetry, TelemetryError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let from_env = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        if disabled || (section.otlp_endpoint.is_none() && !from_env) {
            return Ok(Telemetry { provider: None });
        }
        let client = opentelemetry_http::hyper::HyperClient::with_default_connector(
            Duration::from_secs(10),
            None,
        );
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(Duration::from_secs(10));
        if let Some(base) = &section.otlp_endpoint {
            builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
        }
        let exporter = builder.build().map_err(|e| TelemetryError(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(section.export_interval_ms.max(10)))
            .build();
        let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
            .with_batch_config(batch)
            .build();
        let mut resource = Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(section.service_name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        Ok(Telemetry {
            provider: Some(provider),
        })
    }

    /// The tracer request spans come from, if export is on.
    pub fn tracer(&self) -> Option<SdkTracer> {
        self.provider.as_ref().map(|p| p.tracer("tollbu"))
    }

    /// Exports what is buffered and stops; called at graceful shutdown.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "trace export did not finish cleanly");
        }
    }
}
