//! Opening the object store named by `storage.url`, and the object keys Strata writes.
//! Keys are built only from server-generated ids and rendition names (see `db::ids`).
//!
//! Misconfigurations are reported by the setting that fixes them: a plain-HTTP endpoint
//! (`storage.endpoint`, or `AWS_ENDPOINT` / `AZURE_STORAGE_ENDPOINT` in the environment) is
//! refused here, before any request, unless `storage.allow_http` (or the provider's own
//! `AWS_ALLOW_HTTP` / `AZURE_ALLOW_HTTP`) allows it; other failures of the start-up check keep
//! their whole error chain (object_store's own message alone is often just "builder error").

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage.url `{0}`: {1}")]
    BadUrl(String, String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage `{url}` is not usable (checked by writing, reading and deleting `{probe}`): {reason}")]
    Unusable {
        url: String,
        probe: String,
        reason: String,
    },
    #[error(
        "{setting} is `{endpoint}`, a plain-HTTP endpoint, and plain HTTP is not allowed: set \
         storage.allow_http = true (STRATA__STORAGE__ALLOW_HTTP=true) if this server is on a \
         network you trust, or use an https:// endpoint"
    )]
    PlainHttp {
        /// Where the endpoint came from: `storage.endpoint` or an environment variable.
        setting: &'static str,
        endpoint: String,
    },
}

/// `error` and every `source()` under it, joined by `: ` (object_store's and reqwest's own
/// messages leave out the cause, e.g. "HTTP error: builder error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A boolean setting as object_store parses it from the environment.
fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "on" | "yes" | "y"
        )
    })
}

/// Refuses an `http://` endpoint unless plain HTTP is allowed. `configured` is
/// `storage.endpoint`; `effective` is the endpoint the client will use (the setting or the
/// environment's); `env_name` names the environment variable it falls back to.
fn check_plain_http(
    configured: &str,
    effective: Option<String>,
    allow_http: bool,
    env_name: &'static str,
) -> Result<(), StoreError> {
    let Some(endpoint) =
        effective.filter(|e| !allow_http && e.to_ascii_lowercase().starts_with("http://"))
    else {
        return Ok(());
    };
    // show where it points, never credentials a URL may carry
    let shown = url::Url::parse(&endpoint).map_or_else(
        |_| "http://…".to_string(),
        |u| u.origin().ascii_serialization(),
    );
    Err(StoreError::PlainHttp {
        setting: if configured.is_empty() {
            env_name
        } else {
            "storage.endpoint"
        },
        endpoint: shown,
    })
}

/// The `storage.url` schemes `open` understands.
pub const SCHEMES: &[&str] = &["file", "memory", "s3", "gs", "az"];

/// How to reach a cloud bucket. Empty fields fall back to the provider's usual environment
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT`, `GOOGLE_SERVICE_ACCOUNT`,
/// `AZURE_STORAGE_ACCOUNT_NAME`, …) and then to the provider's defaults.
#[derive(Clone, Default)]
pub struct CloudOptions {
    /// S3-compatible endpoint (`http://127.0.0.1:9000` for MinIO) or Azure endpoint.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style S3 requests (`endpoint/bucket/key`), as MinIO and moto need.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint (local servers only).
    pub allow_http: bool,
    /// Longest one request may take; Strata's own live budget retries around it.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for CloudOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"…")
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl CloudOptions {
    /// Client options; `allow_http` is `self.allow_http` or the provider's environment variable.
    fn client(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_timeout(self.request_timeout.max(Duration::from_millis(500)))
            .with_connect_timeout(Duration::from_secs(2))
            .with_allow_http(allow_http)
    }

    /// A couple of quick retries inside one request; the publisher's budget decides the rest
    /// (object_store's default keeps retrying for minutes, far past a live segment's use).
    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(400),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: self.request_timeout.max(Duration::from_millis(500)),
        }
    }
}

/// Opens `file:///dir` (created if missing), `memory://`, `s3://bucket[/prefix]`,
/// `gs://bucket[/prefix]` or `az://container[/prefix]`.
pub fn open(url: &str, cloud: &CloudOptions) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let parsed = url::Url::parse(url).map_err(|e| StoreError::BadUrl(url.into(), e.to_string()))?;
    let bad = |e: object_store::Error| StoreError::BadUrl(url.into(), chain(&e));
    let bucket_url = format!(
        "{}://{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or_default()
    );
    let prefix = parsed.path().trim_matches('/').to_string();
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "memory" => return Ok(Arc::new(InMemory::new())),
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|_| StoreError::BadUrl(url.into(), "not a local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::BadUrl(url.into(), e.to_string()))?;
            return Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?));
        }
        "s3" => {
            let env = AmazonS3Builder::from_env();
            // `with_client_options` below replaces what `from_env` read; keep AWS_ALLOW_HTTP
            let allow_http = cloud.allow_http
                || truthy(
                    env.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)),
                );
            let mut b = env
                .with_url(bucket_url)
                .with_client_options(cloud.client(allow_http))
                .with_retry(cloud.retry());
            if !cloud.endpoint.is_empty() {
                b = b.with_endpoint(&cloud.endpoint);
            }
            // object_store prefers AWS_ENDPOINT_URL_S3 over the general endpoint
            let effective = b
                .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
                .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
            check_plain_http(&cloud.endpoint, effective, allow_http, "AWS_ENDPOINT")?;
            if !cloud.region.is_empty() {
                b = b.with_region(&cloud.region);
            }
            if !cloud.access_key_id.is_empty() {
                b = b
                    .with_access_key_id(&cloud.access_key_id)
                    .with_secret_access_key(&cloud.secret_access_key);
            }
            if cloud.path_style {
                b = b.with_virtual_hosted_style_request(false);
            }
            Arc::new(b.with_allow_http(allow_http).build().map_err(bad)?)
        }
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(bucket_url)
                .with_client_options(cloud.client(cloud.allow_http))
                .with_retry(cloud.retry())
                .build()
                .map_err(bad)?,
        ),
        "az" => {
            let env = MicrosoftAzureBuilder::from_env();
            let allow_http = cloud.allow_http
                || truthy(
                    env.get_config_value(&AzureConfigKey::Client(ClientConfigKey::AllowHttp)),
                );
            let mut b = env
                .with_url(bucket_url)
                .with_client_options(cloud.client(allow_http))
                .with_retry(cloud.retry());
            if !cloud.endpoint.is_empty() {
                b = b.with_endpoint(cloud.endpoint.clone());
            }
            let effective = b.get_config_value(&AzureConfigKey::Endpoint);
            check_plain_http(
                &cloud.endpoint,
                effective,
                allow_http,
                "AZURE_STORAGE_ENDPOINT",
            )?;
            Arc::new(b.with_allow_http(allow_http).build().map_err(bad)?)
        }
        other => {
            return Err(StoreError::BadUrl(
                url.into(),
                format!("unsupported scheme `{other}`"),
            ))
        }
    };
    Ok(if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}

/// Where the start-up check writes (never a path the origin serves or the sweeper touches).
const PROBE: &str = ".strata/probe";

/// Writes, reads back and deletes a small object, within `timeout`: an unreachable bucket, bad
/// credentials or a missing bucket become one clear error at start-up instead of failed
/// segments later.
pub async fn check(
    store: &Arc<dyn ObjectStore>,
    url: &str,
    timeout: Duration,
) -> Result<(), StoreError> {
    let probe = Path::from(PROBE);
    let body = format!("strata {}", chrono::Utc::now().to_rfc3339());
    let round_trip = async {
        store.put(&probe, body.clone().into()).await?;
        let read = store.get(&probe).await?.bytes().await?;
        store.delete(&probe).await?;
        Ok::<_, object_store::Error>(read)
    };
    let unusable = |reason: String| StoreError::Unusable {
        url: url.to_string(),
        probe: PROBE.into(),
        reason,
    };
    match tokio::time::timeout(timeout, round_trip).await {
        Ok(Ok(read)) if read == body.as_bytes() => Ok(()),
        Ok(Ok(_)) => Err(unusable(
            "the object read back differs from the one written".into(),
        )),
        Ok(Err(e)) => Err(unusable(chain(&e))),
        Err(_) => Err(unusable(format!("no answer within {timeout:?}"))),
    }
}

/// Where a broadcast's objects live: `live/{playback_id}` or `vod/{recording_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(String);

impl Root {
    pub fn live(playback_id: &str) -> Self {
        Self(format!("live/{playback_id}"))
    }

    pub fn vod(recording_id: &str) -> Self {
        Self(format!("vod/{recording_id}"))
    }

    pub fn prefix(&self) -> Path {
        Path::from(self.0.as_str())
    }

    pub fn file(&self, name: &str) -> Path {
        Path::from(format!("{}/{name}", self.0))
    }

    pub fn rendition_file(&self, rendition: &str, name: &str) -> Path {
        Path::from(format!("{}/{rendition}/{name}", self.0))
    }

    pub fn segment(&self, rendition: &str, number: u64) -> Path {
        self.rendition_file(rendition, &format!("{number}.m4s"))
    }

    /// Part `index` of segment `number` (a low-latency part).
    pub fn part(&self, rendition: &str, number: u64, index: u32) -> Path {
        self.rendition_file(rendition, &format!("{number}.{index}.m4s"))
    }
}

pub const MASTER_PLAYLIST: &str = "master.m3u8";
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
pub const MPD: &str = "manifest.mpd";
/// The DVR view of a live broadcast (see `manifest`): its multivariant playlist under the live
/// root and each rendition's media playlist have this name.
pub const DVR_PLAYLIST: &str = "dvr.m3u8";
pub const DVR_MPD: &str = "dvr.mpd";
pub const INIT_SEGMENT: &str = "init.mp4";
/// The live picture's poster (JPEG), under the live root.
pub const POSTER: &str = "poster.jpg";

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_at(endpoint: &str, allow_http: bool) -> Result<Arc<dyn ObjectStore>, StoreError> {
        open(
            "s3://bucket/prefix",
            &CloudOptions {
                endpoint: endpoint.into(),
                region: "us-east-1".into(),
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                path_style: true,
                allow_http,
                request_timeout: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn a_plain_http_endpoint_names_the_setting_that_allows_it() {
        let Err(e) = s3_at("http://user:pw@127.0.0.1:9000/", false) else {
            panic!("a plain-HTTP endpoint was accepted without storage.allow_http");
        };
        let message = e.to_string();
        assert!(
            message.starts_with("storage.endpoint is `http://127.0.0.1:9000`")
                && message.contains("set storage.allow_http = true")
                && message.contains("https://"),
            "{message}"
        );
        assert!(!message.contains("pw"), "credentials shown: {message}");
        assert!(s3_at("http://127.0.0.1:9000", true).is_ok());
        assert!(s3_at("https://s3.example.com", false).is_ok());
    }

    #[tokio::test]
    async fn a_failed_start_up_check_says_why() {
        // nothing listens on the port just freed
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let url = "s3://bucket/prefix";
        let store = s3_at(&format!("http://{closed}"), true).unwrap();
        let e = check(&store, url, Duration::from_secs(10))
            .await
            .unwrap_err();
        let message = e.to_string().to_lowercase();
        assert!(message.contains("connect"), "{message}");
    }
}
