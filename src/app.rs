//! Wiring: opens the database and the store, binds the listeners, starts ingest and the
//! origin, prints where to point OBS and where to watch, and shuts down gracefully (every live
//! broadcast writes its final manifests before the process exits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::HashSet;

use crate::broadcast::{Core, Reconnects};
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::db::ids::sha256_hex;
use crate::db::{Db, Stream};
use crate::devices::signaling::Signaling;
use crate::devices::Devices;
use crate::events::EventBus;
use crate::http::api::ApiState;
use crate::hub::Hub;
use crate::ingest::rtmp::{self, IngestContext, IngestSettings};
use crate::ingest::rtp::RtpIngest;
use crate::ingest::srt::{SrtContext, SrtIngestSettings, SrtListener};
use crate::pipeline::{Budgets, PipelineContext};
use crate::publish::store;
use crate::publish::upload::Uploader;
use crate::webhooks::Webhooks;

/// How long the start-up storage check may take.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for broadcasts to finish their manifests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Urls {
    pub public: String,
    pub rtmp: String,
    /// When RTMPS is on.
    pub rtmps: Option<String>,
    /// When SRT is on: what every SRT publish URL starts with (see `srt_for`).
    pub srt: Option<String>,
}

impl Urls {
    pub fn hls(&self, stream: &Stream) -> String {
        format!("{}/live/{}/master.m3u8", self.public, stream.playback_id)
    }

    /// The SRT URL a publisher with `key` uses, when SRT is on.
    pub fn srt_for(&self, key: &str) -> Option<String> {
        self.srt
            .as_deref()
            .map(|prefix| crate::config::srt_publish_url(prefix, key))
    }

    pub fn dash(&self, stream: &Stream) -> String {
        format!("{}/live/{}/manifest.mpd", self.public, stream.playback_id)
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crate::open_files::raise_and_log();
    let ladders = Arc::new(settings.load_ladders()?);
    let metrics = crate::telemetry::install().context("installing the metrics recorder")?;
    crate::transcode::init().context("initialising FFmpeg")?;
    let db = Db::connect(&settings.database_url(), settings.key_hasher()?)
        .await
        .context("opening the database")?;
    let node_id = settings.node_id()?;
    let (token_hashes, new_admin_token) = admin_tokens(&settings, &db).await?;
    let storage_url = settings.storage_url();
    let store = store::open(&storage_url, &settings.cloud_options()).context("opening storage")?;
    store::check(&store, &storage_url, STORE_CHECK_TIMEOUT).await?;
    // every part of the node writes through it: what it stores live is answered from memory
    let hot = Arc::new(crate::hot::HotObjects::new(settings.http.hot_cache_bytes));
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(crate::hot::HotStore::new(store, hot.clone()));

    // the same kernel queue as HTTP's: a burst of encoders connecting at once is not refused
    let rtmp_listener = crate::http::bind(settings.rtmp.listen)
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| format!("binding RTMP on {}", settings.rtmp.listen))?;
    let http_listener = crate::http::bind(settings.http.listen)
        .with_context(|| format!("binding HTTP on {}", settings.http.listen))?;
    let rtmp_addr = rtmp_listener.local_addr()?;
    // RTMPS: a second listener, TLS in front of the same connection code (off without a
    // certificate)
    let rtmps = match settings.rtmps.identity() {
        Some((cert, key)) => {
            let acceptor = rtmp::tls::acceptor(cert, key)?;
            let listener = crate::http::bind(settings.rtmps.listen)
                .and_then(tokio::net::TcpListener::from_std)
                .with_context(|| format!("binding RTMPS on {}", settings.rtmps.listen))?;
            Some((listener, acceptor))
        }
        None => None,
    };
    let rtmps_addr = match &rtmps {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    let srt_settings = SrtIngestSettings {
        app: settings.rtmp.app.clone(),
        latency_ms: settings.srt.latency_ms,
        passphrase: Some(settings.srt.passphrase.clone()).filter(|p| !p.is_empty()),
        max_connections: settings.srt.max_connections,
        max_pending_per_ip: settings.srt.max_pending_per_ip,
        idle_timeout: Duration::from_secs_f64(settings.srt.idle_timeout),
    };
    let srt_listener = if settings.srt.enabled {
        Some(
            SrtListener::bind(settings.srt.listen, &srt_settings).with_context(|| {
                format!(
                    "binding SRT on {} (UDP; set srt.enabled = false to turn SRT off)",
                    settings.srt.listen
                )
            })?,
        )
    } else {
        None
    };
    let srt_addr = srt_listener.as_ref().map(SrtListener::local_addr);
    let rtp = if settings.devices.enabled {
        Some(
            RtpIngest::bind(settings.devices.rtp_listen)
                .await
                .with_context(|| {
                    format!(
                        "binding device RTP on {} (UDP; set devices.enabled = false to turn devices off)",
                        settings.devices.rtp_listen
                    )
                })?,
        )
    } else {
        None
    };
    let rtp_addr = rtp.as_ref().map(|r| r.local_addr());
    let http_addr = http_listener.local_addr()?;
    let urls = Urls {
        public: settings.public_url(http_addr),
        rtmp: settings.rtmp_url(http_addr, rtmp_addr),
        rtmps: rtmps_addr.and_then(|addr| settings.rtmps_url(http_addr, addr)),
        srt: srt_addr.and_then(|addr| settings.srt_url_prefix(http_addr, addr)),
    };
    let webhooks =
        Webhooks::new(&settings.webhooks, &urls.public).context("setting up webhooks")?;
    // What an earlier process of this node left: its recordings are finished from their last
    // checkpoint, then its sessions are ended.
    let (finished, removed) = crate::publish::recovery::recover(&db, &store, &webhooks, &node_id)
        .await
        .context("finishing recordings an earlier process left")?;
    if finished + removed > 0 {
        tracing::warn!(finished, removed, "recordings interrupted by a crash");
    }
    let ended = db.end_orphaned_sessions(&node_id).await?;
    if ended > 0 {
        tracing::warn!(
            sessions = ended,
            "sessions left live by an earlier process marked ended"
        );
    }

    let demo_key = create_demo_stream_if_empty(&db, &settings.transcode.default_ladder).await?;
    print_banner(
        &db.list_streams().await?,
        demo_key.as_deref(),
        new_admin_token.as_deref(),
        &urls,
        (rtmp_addr, rtmps_addr, srt_addr, rtp_addr),
        http_addr,
    );

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let hub = Hub::new();
    let database_url = settings.database_url();
    let (events, cluster, edges) = if database_url.starts_with("postgres") {
        let (events, outbox) = EventBus::relayed();
        let (edges, edge_news) = crate::edge::LiveEdges::relayed();
        let cluster = crate::cluster::join(
            node_id.clone(),
            &database_url,
            events.clone(),
            outbox,
            (edges.clone(), edge_news),
            hub.clone(),
            shutdown.clone(),
        )
        .await
        .context("joining the other nodes over PostgreSQL")?;
        (events, cluster, edges)
    } else {
        let edges = crate::edge::LiveEdges::default();
        (EventBus::default(), Cluster::single(node_id.clone()), edges)
    };
    tracing::info!(node = %node_id, "node started");
    if let Err(e) = db.reset_device_presence(&node_id).await {
        tracing::warn!(error = %e, "cannot reset the presence an earlier process left");
    }
    let devices = Devices::new(db.clone(), events.clone(), node_id.clone());
    let clip_urls = urls.public.clone();
    let clipper = Arc::new(crate::clips::Clipper::new(
        store.clone(),
        db.clone(),
        webhooks.clone(),
        node_id.clone(),
        settings.transcode.worker_limits(),
        move |clip| {
            let view = crate::http::clip_api::ClipView::of(&clip_urls, clip.clone());
            serde_json::to_value(view).unwrap_or_default()
        },
    ));
    clipper.recover().await;
    let api = actix_web::web::Data::new(ApiState {
        db: db.clone(),
        hub: hub.clone(),
        ladders: ladders.clone(),
        default_ladder: settings.transcode.default_ladder.clone(),
        token_hashes,
        rtmp_url: urls.rtmp.clone(),
        rtmps_url: urls.rtmps.clone(),
        srt_url_prefix: urls.srt.clone(),
        public_url: urls.public.clone(),
        events: events.clone(),
        cluster: cluster.clone(),
        store: store.clone(),
        devices: devices.clone(),
        clips: clipper.clone(),
    });
    tokio::spawn(crate::events::send_stats(
        hub.clone(),
        events.clone(),
        shutdown.clone(),
    ));
    let core = Arc::new(Core {
        db: db.clone(),
        hub,
        pipeline: PipelineContext {
            node_id,
            uploader: Uploader::new(store.clone(), settings.write_budget()),
            db: db.clone(),
            segment_duration: settings.segment.duration,
            part_duration: settings.segment.part_duration,
            window: settings.segment.window,
            grace: Duration::from_secs_f64(settings.retention.grace),
            backlog: settings.storage.backlog,
            utc_timing_url: format!("{}/time", urls.public),
            ladders,
            default_ladder: settings.transcode.default_ladder.clone(),
            events,
            webhooks,
            budgets: Budgets {
                ingest_queue_bytes: settings.limits.ingest_queue_bytes,
                held_media_bytes: settings.limits.held_media_bytes,
            },
            worker: settings.transcode.worker_limits(),
            isolation: settings.transcode.isolation,
            edges: edges.clone(),
            shutdown: shutdown.clone(),
        },
        tracker: tracker.clone(),
        reconnects: Arc::new(Reconnects::new(
            Duration::from_secs_f64(settings.rtmp.reconnect_grace),
            db.clone(),
        )),
        cluster,
    });
    let ingest = Arc::new(IngestContext {
        settings: IngestSettings {
            app: settings.rtmp.app.clone(),
            handshake_timeout: settings.rtmp.handshake_timeout,
            max_message_size: settings.rtmp.max_message_size,
            max_connections: settings.rtmp.max_connections,
            max_pending_per_ip: settings.rtmp.max_pending_per_ip,
            write_timeout: Duration::from_secs_f64(settings.rtmp.write_timeout),
            idle_timeout: Duration::from_secs_f64(settings.rtmp.idle_timeout),
        },
        core: core.clone(),
    });
    let sweep_rules = crate::publish::sweep::Rules {
        grace: Duration::from_secs_f64(settings.retention.grace),
        live_after_end: Duration::from_secs_f64(settings.retention.live_after_end),
        vod_days: settings.retention.vod_days,
        clip_days: settings.retention.clip_days,
    };
    let (sweep_hub, sweep_cluster) = (core.hub.clone(), core.cluster.clone());
    tokio::spawn(crate::publish::sweep::run(
        store.clone(),
        db.clone(),
        sweep_rules,
        Duration::from_secs_f64(settings.retention.sweep_interval),
        move || {
            sweep_cluster
                .live_sessions(&sweep_hub)
                .into_iter()
                .map(|s| s.id.playback_id)
                .collect()
        },
        shutdown.clone(),
    ));
    let rtmps_task = rtmps.map(|(listener, acceptor)| {
        tokio::spawn(rtmp::serve(listener, ingest.clone(), Some(acceptor)))
    });
    let srt_task = srt_listener.map(|listener| {
        let ctx = Arc::new(SrtContext {
            settings: srt_settings,
            core: core.clone(),
        });
        tokio::spawn(crate::ingest::srt::serve(listener, ctx))
    });
    let ingest_task = tokio::spawn(rtmp::serve(rtmp_listener, ingest, None));
    let hls_push = settings.hls_push.enabled.then(|| {
        actix_web::web::Data::new(crate::ingest::hls_push::HlsPush::new(
            settings.hls_push.limits(),
            core.clone(),
        ))
    });
    let ws = settings.ws.enabled.then(|| {
        actix_web::web::Data::new(crate::ingest::ws::WsIngest::new(
            settings.ws.limits(),
            core.clone(),
        ))
    });
    let signaling = rtp.map(|rtp| {
        tokio::spawn(rtp.clone().serve(shutdown.clone()));
        actix_web::web::Data::new(Signaling::new(
            settings.devices.signaling(),
            devices.clone(),
            core.clone(),
            rtp,
        ))
    });
    let web_root = crate::http::webapp::WebRoot(settings.http.web_root.clone());
    if !web_root.is_built() {
        tracing::warn!(
            web_root = %web_root.0.display(),
            "the web app is not built there (run `make web`): the player, streams page and dashboard answer 503"
        );
    }
    let http = crate::http::server(
        http_listener,
        &settings.http,
        actix_web::web::Data::new(crate::http::HttpState {
            store,
            edges,
            metrics: Some(metrics),
            web_root,
            segment_base_url: Some(settings.storage.public_base_url.trim_end_matches('/'))
                .filter(|base| !base.is_empty())
                .map(str::to_string),
            subscribers: crate::http::subscribers::Subscribers::new(
                settings.http.max_event_subscribers,
                settings.http.max_event_subscribers_per_ip,
            ),
            hot,
            local_root: crate::http::cold::LocalRoot::of(&storage_url),
            rendered: Default::default(),
        }),
        api,
        crate::http::Ingests {
            hls_push,
            ws,
            devices: signaling,
        },
    )?;
    let http_handle = http.handle();
    let http_task = tokio::spawn(http);

    wait_for_signal().await;
    tracing::info!("shutting down: finishing live broadcasts");
    shutdown.cancel();
    let _ = ingest_task.await;
    for task in [rtmps_task, srt_task].into_iter().flatten() {
        let _ = task.await;
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some broadcasts did not finish within {SHUTDOWN_GRACE:?}");
    }
    http_handle.stop(true).await;
    let _ = http_task.await;
    // every SRT socket is closed by now (listener and connections ended above)
    crate::ingest::srt::ffi::cleanup();
    Ok(())
}

/// The hashes of every accepted admin token: those in `auth.admin_tokens`, plus those stored.
/// With none configured and none stored, creates one and returns it too (printed once).
async fn admin_tokens(
    settings: &Settings,
    db: &Db,
) -> anyhow::Result<(HashSet<String>, Option<String>)> {
    let mut hashes: HashSet<String> = settings
        .auth
        .admin_tokens
        .iter()
        .map(|t| sha256_hex(t))
        .collect();
    let mut created = None;
    if hashes.is_empty() && db.admin_token_count().await? == 0 {
        created = Some(db.create_admin_token().await?);
    }
    hashes.extend(db.admin_token_hashes().await?);
    Ok((hashes, created))
}

/// On an empty database, creates the stream `demo`; returns its key (shown once).
async fn create_demo_stream_if_empty(db: &Db, ladder: &str) -> anyhow::Result<Option<String>> {
    if !db.list_streams().await?.is_empty() {
        return Ok(None);
    }
    let (_, key) = db
        .create_stream("demo", ladder, true, crate::db::DEFAULT_DVR_WINDOW_SECS)
        .await?;
    Ok(Some(key))
}

/// Where to point OBS and where to watch; `demo_key` when the demo stream was just created.
fn print_banner(
    streams: &[Stream],
    demo_key: Option<&str>,
    admin_token: Option<&str>,
    urls: &Urls,
    (rtmp, rtmps, srt, rtp): (
        SocketAddr,
        Option<SocketAddr>,
        Option<SocketAddr>,
        Option<SocketAddr>,
    ),
    http: SocketAddr,
) {
    println!("Strata is running.");
    println!("  OBS → Settings → Stream → Service: Custom");
    println!("    Server:     {}", urls.rtmp);
    if let Some(url) = &urls.rtmps {
        println!("    or, encrypted (RTMPS): {url}");
    }
    match demo_key {
        Some(key) => {
            println!(
                "    Stream Key: {key}   (stream `demo`; shown once — keep it, only its hash is stored)"
            );
            if let Some(srt) = urls.srt_for(key) {
                println!("  Or over SRT (OBS Server, Stream Key empty; ffmpeg -f mpegts):");
                println!("    {srt}");
            }
        }
        None => println!(
            "    Stream Key: the key printed when the stream was created (`strata stream create NAME` makes a new one)"
        ),
    }
    for stream in streams {
        println!("  Watch `{}` (ladder `{}`):", stream.name, stream.ladder);
        println!("    Browser: {}/watch/{}", urls.public, stream.playback_id);
        println!("    HLS:  {}", urls.hls(stream));
        println!("    DASH: {}", urls.dash(stream));
    }
    if let Some(first) = streams.first() {
        println!("    e.g.  ffplay {}", urls.hls(first));
    }
    println!("  All streams: {}/", urls.public);
    println!("  Dashboard:   {}/dashboard", urls.public);
    if let Some(rtp) = rtp {
        println!(
            "  Devices: `strata device create NAME --stream STREAM`, then on the camera \
             `strata device-agent --server {} --token TOKEN` (RTP to UDP port {})",
            urls.public,
            rtp.port()
        );
    }
    println!(
        "  Admin API: {}/api/v1 (OpenAPI: {}/api/v1/openapi.json)",
        urls.public, urls.public
    );
    if let Some(token) = admin_token {
        println!("    Admin token: {token}   (shown once — keep it, only its hash is stored)");
    }
    // One machine-readable line for scripts and tests (ports may have been chosen by the OS).
    let rtmps = rtmps
        .map(|addr| format!(" rtmps={addr}"))
        .unwrap_or_default();
    let srt = srt.map(|addr| format!(" srt={addr}")).unwrap_or_default();
    let rtp = rtp.map(|addr| format!(" rtp={addr}")).unwrap_or_default();
    println!("STRATA_READY rtmp={rtmp} http={http}{rtmps}{srt}{rtp}");
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
