//! A real S3-compatible server for tests: moto's `moto_server` on a loopback port (installed by
//! `make test` into `.test-tools/`, path in `STRATA_TEST_MOTO`), one bucket, and path-style
//! HTTP reads of what is in it. moto refuses anonymous object reads but does not verify
//! signatures, so reads carry a well-formed SigV4 `Authorization` header with a dummy
//! signature.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
}

const DUMMY_SIGV4: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl S3Server {
    /// Starts moto and creates the bucket. Panics (the test fails, never skips) when moto is
    /// missing: `make test` installs it.
    pub fn start() -> Self {
        let program = std::env::var("STRATA_TEST_MOTO").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.test-tools/moto/bin/moto_server"
            )
            .into()
        });
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} ({e}): `make test` installs moto_server"));
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "strata-test".into(),
        };
        let created = super::wait_for(Duration::from_secs(30), || {
            let status = ureq::put(&format!("{}/{}", server.endpoint, server.bucket))
                .config()
                .http_status_as_error(false)
                .build()
                .send_empty()
                .ok()?
                .status();
            status.is_success().then_some(())
        });
        assert!(created.is_some(), "moto_server did not start on {port}");
        server
    }

    /// Settings that point Strata at this bucket through `endpoint` (this server, or a proxy
    /// in front of it).
    pub fn strata_env(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "STRATA__STORAGE__URL",
                format!("s3://{}/media", self.bucket),
            ),
            ("STRATA__STORAGE__ENDPOINT", endpoint.to_string()),
            ("STRATA__STORAGE__REGION", "us-east-1".into()),
            ("STRATA__STORAGE__ACCESS_KEY_ID", "test".into()),
            ("STRATA__STORAGE__SECRET_ACCESS_KEY", "test".into()),
            ("STRATA__STORAGE__PATH_STYLE", "true".into()),
            ("STRATA__STORAGE__ALLOW_HTTP", "true".into()),
        ]
    }

    /// The public URL of an object under Strata's prefix (`media/`).
    pub fn object_url(&self, path: &str) -> String {
        format!(
            "{}/{}/media/{}",
            self.endpoint,
            self.bucket,
            path.trim_start_matches('/')
        )
    }

    /// GET an object under Strata's prefix (`media/`): status and body (0 when no answer).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        match agent
            .get(&self.object_url(path))
            .header("Authorization", DUMMY_SIGV4)
            .call()
        {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_vec().unwrap_or_default(),
            ),
            Err(_) => (0, Vec::new()),
        }
    }

    /// Every object key in the bucket (ListObjectsV2, all pages).
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/{}?list-type=2", self.endpoint, self.bucket);
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let (status, body) = super::get_url(&url);
            assert_eq!(status, 200, "listing the bucket");
            let xml = String::from_utf8_lossy(&body).into_owned();
            keys.extend(elements(&xml, "Key"));
            token = elements(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every `<name>…</name>` in `xml`.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
