//! The AWS side of the fleet: one SDK configuration for every S3 and SQS client.
//!
//! Credentials and the region come from the standard AWS chain (environment variables, shared
//! config and credentials files and their profiles, web identity tokens as on EKS, SSO, container
//! and instance metadata). `[aws]` adds only what that chain has no place for: an endpoint for an
//! S3-compatible store or a local endpoint, path-style addressing, and the number of attempts per
//! request (the SDK's standard retry mode, with exponential backoff and jitter).
//!
//! Every client speaks HTTPS through one rustls client on `ring`, so the build carries one crypto
//! library.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;

use crate::config::AwsSettings;

/// The region used when neither `[aws] region` nor the AWS chain gives one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// The HTTP(S) client every AWS client uses: rustls on `ring`.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Loads the SDK configuration: the standard chain plus the `[aws]` overrides.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    // The chain's own region providers (environment, profile, instance metadata) must be built by
    // the loader, which hands them the HTTP client; a chain built outside it has none.
    let loader = || {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        loader
    };
    if let Some(region) = &settings.region {
        return loader().region(Region::new(region.clone())).load().await;
    }
    let config = loader().load().await;
    if config.region().is_some() {
        return config;
    }
    loader().region(Region::new(FALLBACK_REGION)).load().await
}

/// An S3 client for `config`, path-style when the settings say so.
pub fn s3_client(config: &SdkConfig, settings: &AwsSettings) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(settings.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// An SQS client for `config`.
pub fn sqs_client(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// The full message of an SDK error, with its source chain (the SDK's `Display` alone says only
/// "service error"), with the credentials of any URL it quotes (an `endpoint_url` with a
/// userinfo, a presigned query) masked.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    crate::redact::text(&aws_sdk_s3::error::DisplayErrorContext(error).to_string())
}

/// The crate error for a failed AWS request: the operation, the object or queue, and the SDK's
/// full message.
pub fn request_error(
    operation: &str,
    location: &str,
    error: &(dyn std::error::Error + 'static),
) -> crate::Error {
    crate::Error::Aws {
        operation: operation.to_string(),
        location: location.to_string(),
        message: error_text(error),
    }
}
