//! The S3 client and the bucket-level requests shared by every command.
//!
//! Credentials come only from the standard AWS chain (environment, profile,
//! SSO, instance role…) through aws-config, and are never logged. For a local
//! or non-AWS endpoint (MinIO, Ceph RGW, Garage, moto) path-style addressing
//! is used. Every request goes through [`Bucket`] so that it can be counted:
//! the count is how tests and `--json` show that a no-change pass sends none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::ProvideCredentials;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, StalledStreamProtectionConfig};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration, Delete,
    ObjectIdentifier, VersioningConfiguration,
};

use crate::error::{Error, Result};

/// How to reach the service.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// Attempts per request, including the first (SDK standard retry mode:
    /// exponential backoff with full jitter).
    pub max_attempts: u32,
    /// Uploads are paced by `--bwlimit`: their bodies pause on purpose, so
    /// the SDK's stalled-upload detection (which would take a pause of a few
    /// seconds for a dead connection and restart the body) is turned off for
    /// uploads. Responses keep the read timeout and downloads their detection.
    pub paced_uploads: bool,
}

/// Builds a client from the standard AWS configuration chain; fails when
/// that chain yields no credentials, so that a missing key is one clear
/// error before the first request rather than a dispatch failure on it.
pub async fn client(conn: &Connection) -> Result<Client> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(p) = &conn.profile {
        loader = loader.profile_name(p);
    }
    loader = match &conn.region {
        Some(r) => loader.region(Region::new(r.clone())),
        // The environment, then the profile, then us-east-1: not the
        // instance metadata service the default chain ends with, which off
        // EC2 (a home server) costs seconds and logs warnings at every start.
        None => loader.region(
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(profile_region(conn.profile.as_deref()))
                .or_else(Region::new("us-east-1")),
        ),
    };
    let sdk = loader.load().await;
    check_credentials(&sdk).await?;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(conn.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    if conn.paced_uploads {
        b = b.stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .upload_enabled(false)
                .build(),
        );
    }
    if let Some(url) = &conn.endpoint_url {
        b = b.endpoint_url(url).force_path_style(true);
    }
    Ok(Client::from_conf(b.build()))
}

fn profile_region(profile: Option<&str>) -> ProfileFileRegionProvider {
    let b = ProfileFileRegionProvider::builder();
    match profile {
        Some(p) => b.profile_name(p),
        None => b,
    }
    .build()
}

async fn check_credentials(sdk: &aws_config::SdkConfig) -> Result<()> {
    let Some(provider) = sdk.credentials_provider() else {
        return Err(no_credentials(
            "no credential provider is configured".into(),
        ));
    };
    provider
        .provide_credentials()
        .await
        .map(|_| ())
        .map_err(|e| no_credentials(crate::error::describe_s3(&e)))
}

fn no_credentials(why: String) -> Error {
    Error::Config(format!(
        "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put \
         them in ~/.aws/credentials (--profile picks a profile there). The last source tried \
         said: {why}"
    ))
}

/// One bucket, with a request counter.
#[derive(Debug)]
pub struct Bucket {
    pub client: Client,
    pub name: String,
    requests: AtomicU64,
}

/// An object as listed (current versions only).
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl Bucket {
    pub fn new(client: Client, name: &str) -> Self {
        Bucket {
            client,
            name: name.to_string(),
            requests: AtomicU64::new(0),
        }
    }

    /// Counts one request about to be sent.
    pub fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Creates the bucket if it does not exist (for `--create-bucket`).
    pub async fn create_if_missing(&self, region: Option<&str>) -> Result<()> {
        self.count();
        if self
            .client
            .head_bucket()
            .bucket(&self.name)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        let mut req = self.client.create_bucket().bucket(&self.name);
        if let Some(r) = region.filter(|r| *r != "us-east-1") {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r))
                    .build(),
            );
        }
        self.count();
        req.send()
            .await
            .map_err(|e| Error::s3("CreateBucket", &self.name, e))?;
        Ok(())
    }

    /// Makes sure Versioning is on: history, deletes and restore depend on it.
    /// Turns it on if it is off; refuses clearly if that is not allowed.
    pub async fn ensure_versioning(&self, may_enable: bool) -> Result<()> {
        self.count();
        let status = self
            .client
            .get_bucket_versioning()
            .bucket(&self.name)
            .send()
            .await;
        match status {
            Ok(out) if out.status() == Some(&BucketVersioningStatus::Enabled) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                // A missing bucket or a denied request is final; an
                // unparsable reply (some servers answer an empty
                // <GetBucketVersioningResponse/> for a never-versioned
                // bucket) means "not enabled".
                if e.code().is_some() || !matches!(e, aws_sdk_s3::error::SdkError::ServiceError(_))
                {
                    return Err(Error::s3("GetBucketVersioning", &self.name, e));
                }
            }
        }
        if !may_enable {
            return Err(Error::Versioning {
                bucket: self.name.clone(),
                message: "S3 Versioning is not enabled, and --no-enable-versioning forbids \
                          turning it on; without it deletes and overwrites would lose data"
                    .into(),
            });
        }
        tracing::info!(bucket = %self.name, "turning on S3 Versioning");
        self.count();
        self.client
            .put_bucket_versioning()
            .bucket(&self.name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Error::Versioning {
                bucket: self.name.clone(),
                message: format!(
                    "S3 Versioning is off and could not be turned on ({}); raidfs-sync \
                     refuses to mirror without it, since deletes and overwrites would lose \
                     data. Ask the bucket owner to enable it (s3:PutBucketVersioning).",
                    crate::error::describe_s3(&e)
                ),
            })?;
        Ok(())
    }

    /// Lists the current objects under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| Error::s3("ListObjectsV2", prefix, e))?;
            for o in resp.contents() {
                if let Some(k) = o.key() {
                    out.push(Listed {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes keys (with Versioning on, each gets a delete marker) in
    /// batches of 1000. Returns the keys that failed, with the reason.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<Vec<(String, String)>> {
        let mut failed = Vec::new();
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::s3("DeleteObjects", &chunk[0], e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::s3("DeleteObjects", &chunk[0], e))?;
            self.count();
            let out = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| Error::s3("DeleteObjects", &chunk[0], e))?;
            for e in out.errors() {
                failed.push((
                    e.key().unwrap_or_default().to_string(),
                    format!(
                        "{}: {}",
                        e.code().unwrap_or("error"),
                        e.message().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(failed)
    }
}

/// `bucket/key` URL-encoded, as CopyObject's `x-amz-copy-source` wants it.
pub fn copy_source(bucket: &str, key: &str, version_id: Option<&str>) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut s = format!(
        "{}/{}",
        utf8_percent_encode(bucket, KEEP),
        utf8_percent_encode(key, KEEP)
    );
    if let Some(v) = version_id {
        s.push_str("?versionId=");
        s.push_str(&utf8_percent_encode(v, KEEP).to_string());
    }
    s
}
