//! The `strata` command: `serve`, `stream create|list|rotate-key|delete`,
//! `device create|list|rename|rotate-token|revoke-token|delete`, `device-agent` (the reference
//! camera client), `ladder check|list`, and the hidden `worker` and `demux` a server starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::config::{ConfigError, Settings};
use strata::db::Db;
use strata::transcode::{Ladders, Plan, Source};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Live streaming: RTMP in, CMAF HLS and DASH out"
)]
struct Cli {
    /// Configuration file (default: ./strata.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Manage streams.
    Stream {
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Manage devices (cameras that stream RTP, see `device-agent`).
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Run a device: connect to a server's signaling socket with a device token and, when
    /// told to start, send H.264 in RTP with ffmpeg.
    DeviceAgent {
        /// The server's URL, e.g. http://192.168.1.10:8080.
        #[arg(long)]
        server: String,
        /// The device token (`strata device create` prints it); or set STRATA_DEVICE_TOKEN,
        /// which other users of this machine cannot read in `ps`.
        #[arg(long)]
        token: Option<String>,
        /// Send ffmpeg's test pattern (video only).
        #[arg(long, conflicts_with = "source")]
        test_pattern: bool,
        /// Send this input: a V4L2 camera (/dev/video0), a file (looped) or a URL.
        #[arg(long)]
        source: Option<String>,
        /// Picture size, WIDTHxHEIGHT.
        #[arg(long, default_value = "1280x720")]
        size: String,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// The ffmpeg to run.
        #[arg(long, default_value = "ffmpeg")]
        ffmpeg: String,
    },
    /// Inspect transcoding ladders.
    Ladder {
        #[command(subcommand)]
        command: LadderCommand,
    },
    /// A broadcast's transcoding worker: the job and media on stdin, renditions on stdout
    /// (started by `serve`, one per transcoded broadcast; see `transcode::worker`).
    #[command(hide = true)]
    Worker {
        /// The broadcast's playback id, for `ps` (the job on stdin says it too).
        playback_id: Option<String>,
    },
    /// A VOD's scrub-preview sheet: keyframes on stdin, a sprite sheet on stdout (started by
    /// `serve` for recordings and clips; see `previews::child`).
    #[command(hide = true)]
    Previews {
        /// The VOD's id, for `ps` and the log.
        vod: String,
    },
    /// The node's previews zygote: sheet jobs on stdin, each made in a forked child, answers on
    /// stdout (started by `serve`; see `previews::zygote`).
    #[command(hide = true)]
    PreviewsZygote,
    /// A precise clip's edge: one segment's frames on stdin, the kept ones encoded again on
    /// stdout (started by `serve`; see `clips::precise::child`).
    #[command(hide = true)]
    ClipEdge {
        /// The clip's id, for `ps` and the log.
        clip: String,
        /// The first frame kept (presentation time, 90 kHz ticks).
        #[arg(long)]
        first: i64,
        /// The last frame kept.
        #[arg(long)]
        last: i64,
        /// The id of the parameter sets written.
        #[arg(long)]
        sps_id: u8,
    },
    /// A browser recording's demuxer: the container on stdin, its frames on stdout (started
    /// by `serve`, one per WebSocket recording; see `ingest::ws::child`).
    #[command(hide = true)]
    Demux {
        /// `matroska` or `mp4`.
        container: String,
        /// The broadcast's playback id, for `ps` and the log.
        playback_id: String,
    },
}

#[derive(Subcommand)]
enum LadderCommand {
    /// Validate a ladder file and print the renditions it yields for a source.
    Check {
        file: PathBuf,
        /// The source to plan for, `WIDTHxHEIGHT[@FPS]`.
        #[arg(long, default_value = "1920x1080@30")]
        source: String,
    },
    /// List the ladders this server knows (shipped and from `transcode.ladders`).
    List,
}

#[derive(Subcommand)]
enum StreamCommand {
    /// Create a stream; prints its key (once), the RTMP URL and the playback URLs.
    Create {
        name: String,
        /// The ladder its broadcasts use (default: `transcode.default_ladder`).
        #[arg(long)]
        ladder: Option<String>,
        /// Keep no VOD recording of its broadcasts.
        #[arg(long)]
        no_record: bool,
        /// How far back viewers may rewind a live broadcast, seconds (0: no DVR).
        #[arg(long, default_value_t = strata::db::DEFAULT_DVR_WINDOW_SECS)]
        dvr_window: u32,
        #[arg(long)]
        json: bool,
    },
    /// List streams.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give a stream a new key (printed once); the old key stops working.
    RotateKey { name: String },
    /// Delete a stream (its recordings' media stays in storage).
    Delete { name: String },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Create a device of a stream; prints its token (once).
    Create {
        name: String,
        /// The stream (name or id) it publishes to.
        #[arg(long)]
        stream: String,
        #[arg(long)]
        json: bool,
    },
    /// List devices and their presence.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Rename a device (by name or id).
    Rename { device: String, name: String },
    /// Give a device a new token (printed once); the old one stops working.
    RotateToken { device: String },
    /// Revoke a device's token (rotate to get a new one).
    RevokeToken { device: String },
    /// Delete a device.
    Delete { device: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::DeviceAgent {
        server,
        token,
        test_pattern,
        source,
        size,
        fps,
        ffmpeg,
    } = &cli.command
    {
        init_logging();
        let Some(token) = token
            .clone()
            .or_else(|| std::env::var("STRATA_DEVICE_TOKEN").ok())
        else {
            eprintln!("strata device-agent: give --token TOKEN or set STRATA_DEVICE_TOKEN");
            return ExitCode::from(2);
        };
        let source = match (test_pattern, source) {
            (_, Some(input)) => strata::devices::agent::Source::Input(input.clone()),
            (true, None) => strata::devices::agent::Source::TestPattern,
            (false, None) => {
                eprintln!("strata device-agent: give --test-pattern or --source INPUT");
                return ExitCode::from(2);
            }
        };
        return strata::devices::agent::main(strata::devices::agent::AgentOptions {
            server: server.clone(),
            token,
            source,
            size: size.clone(),
            fps: *fps,
            ffmpeg: ffmpeg.clone(),
        });
    }
    if let Command::Worker { .. } = cli.command {
        // everything it needs comes in the job: no settings, no runtime
        init_logging();
        return strata::transcode::worker::child_main();
    }
    if let Command::Previews { vod } = &cli.command {
        init_logging();
        return strata::previews::child::main(vod);
    }
    if let Command::PreviewsZygote = &cli.command {
        init_logging();
        return strata::previews::zygote::main();
    }
    if let Command::ClipEdge {
        clip,
        first,
        last,
        sps_id,
    } = &cli.command
    {
        init_logging();
        let keep = strata::clips::precise::child::Keep {
            first: *first,
            last: *last,
            sps_id: *sps_id,
        };
        return strata::clips::precise::child::main(clip, keep);
    }
    if let Command::Demux {
        container,
        playback_id,
    } = &cli.command
    {
        init_logging();
        return strata::ingest::ws::child::main(container, playback_id);
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("strata: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => strata::app::run(settings).await,
            Command::Stream { command } => stream_command(settings, command).await,
            Command::Device { command } => device_command(settings, command).await,
            Command::Ladder { command } => ladder_command(settings, command),
            Command::Worker { .. }
            | Command::Demux { .. }
            | Command::Previews { .. }
            | Command::PreviewsZygote
            | Command::ClipEdge { .. }
            | Command::DeviceAgent { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // A panic anywhere (a bug; untrusted input is guarded) is one log line, not a backtrace dump.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error");
    }));
}

async fn stream_command(settings: Settings, command: StreamCommand) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database_url(), settings.key_hasher()?).await?;
    let urls = strata::app::Urls {
        public: settings.public_url(settings.http.listen),
        rtmp: settings.rtmp_url(settings.http.listen, settings.rtmp.listen),
        rtmps: settings.rtmps_url(settings.http.listen, settings.rtmps.listen),
        srt: settings.srt_url_prefix(settings.http.listen, settings.srt.listen),
    };
    match command {
        StreamCommand::Create {
            name,
            ladder,
            no_record,
            dvr_window,
            json,
        } => {
            let ladders = settings.load_ladders()?;
            let ladder = ladder.unwrap_or_else(|| settings.transcode.default_ladder.clone());
            ladders.get(&ladder)?;
            let (stream, key) = db
                .create_stream(&name, &ladder, !no_record, dvr_window)
                .await?;
            if json {
                let value = serde_json::json!({
                    "name": stream.name,
                    "key": key,
                    "playback_id": stream.playback_id,
                    "ladder": stream.ladder,
                    "record": stream.record,
                    "dvr_window": stream.dvr_window,
                    "rtmp_url": urls.rtmp,
                    "rtmps_url": urls.rtmps,
                    "srt_url": urls.srt_for(&key),
                    "hls_url": urls.hls(&stream),
                    "dash_url": urls.dash(&stream),
                });
                println!("{value}");
            } else {
                println!(
                    "Stream `{}` created (ladder `{}`).",
                    stream.name, stream.ladder
                );
                println!("  OBS Server:     {}", urls.rtmp);
                if let Some(rtmps) = &urls.rtmps {
                    println!("    or (RTMPS):   {rtmps}");
                }
                println!("  OBS Stream Key: {key}   (shown once)");
                if let Some(srt) = urls.srt_for(&key) {
                    println!("  SRT (OBS Server, Stream Key empty): {srt}   (shown once)");
                }
                println!("  HLS:  {}", urls.hls(&stream));
                println!("  DASH: {}", urls.dash(&stream));
            }
        }
        StreamCommand::RotateKey { name } => {
            let stream = db
                .stream_by_name(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no stream named `{name}`"))?;
            let key = db
                .rotate_key(&stream.id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream `{name}` was deleted meanwhile"))?;
            println!("New key for `{name}` (shown once; the old key no longer publishes):");
            println!("  OBS Server:     {}", urls.rtmp);
            if let Some(rtmps) = &urls.rtmps {
                println!("    or (RTMPS):   {rtmps}");
            }
            println!("  OBS Stream Key: {key}");
        }
        StreamCommand::Delete { name } => {
            let stream = db
                .stream_by_name(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no stream named `{name}`"))?;
            db.delete_stream(&stream.id).await?;
            println!(
                "Stream `{name}` deleted. A running server's sweeper deletes its recordings \
                 (every `retention.sweep_interval`)."
            );
        }
        StreamCommand::List { json } => {
            let streams = db.list_streams().await?;
            if json {
                println!("{}", serde_json::to_string(&streams)?);
            } else {
                for s in streams {
                    println!(
                        "{}\t{}\t{}\t{}",
                        s.name,
                        s.playback_id,
                        s.ladder,
                        urls.hls(&s)
                    );
                }
            }
        }
    }
    Ok(())
}

async fn device_command(settings: Settings, command: DeviceCommand) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database_url(), settings.key_hasher()?).await?;
    let find = |which: String| {
        let db = db.clone();
        async move {
            db.device_by_id_or_name(&which)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no device named (or with id) `{which}`"))
        }
    };
    match command {
        DeviceCommand::Create { name, stream, json } => {
            let found = match db.stream_by_name(&stream).await? {
                Some(s) => Some(s),
                None => db.stream_by_id(&stream).await?,
            };
            let stream =
                found.ok_or_else(|| anyhow::anyhow!("no stream named (or with id) `{stream}`"))?;
            let (device, token) = db.create_device(&name, &stream.id).await?;
            let server = settings.public_url(settings.http.listen);
            if json {
                let value = serde_json::json!({
                    "id": device.id,
                    "name": device.name,
                    "stream_id": device.stream_id,
                    "token": token,
                    "server": server,
                });
                println!("{value}");
            } else {
                println!(
                    "Device `{}` created for stream `{}`.",
                    device.name, stream.name
                );
                println!("  Token: {token}   (shown once)");
                println!("  On the camera: STRATA_DEVICE_TOKEN={token} strata device-agent --server {server} --source /dev/video0");
            }
        }
        DeviceCommand::List { json } => {
            let devices = db.list_devices().await?;
            if json {
                let list: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": d.id, "name": d.name, "stream_id": d.stream_id,
                            "state": d.state, "last_seen": d.last_seen, "created_at": d.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for d in devices {
                    println!("{}\t{}\t{}\t{}", d.name, d.id, d.stream_id, d.state);
                }
            }
        }
        DeviceCommand::Rename { device, name } => {
            let device = find(device).await?;
            db.rename_device(&device.id, &name).await?;
            println!("Device `{}` is now `{name}`.", device.name);
        }
        DeviceCommand::RotateToken { device } => {
            let device = find(device).await?;
            let token = db
                .rotate_device_token(&device.id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("device `{}` was deleted meanwhile", device.name))?;
            println!(
                "New token for `{}` (shown once; the old one no longer connects, and a device \
                 connected with it is disconnected within seconds):",
                device.name
            );
            println!("  {token}");
        }
        DeviceCommand::RevokeToken { device } => {
            let device = find(device).await?;
            db.revoke_device_token(&device.id).await?;
            println!(
                "The token of `{}` is revoked; `rotate-token` gives a new one.",
                device.name
            );
        }
        DeviceCommand::Delete { device } => {
            let device = find(device).await?;
            db.delete_device(&device.id).await?;
            println!("Device `{}` deleted.", device.name);
        }
    }
    Ok(())
}

fn ladder_command(settings: Settings, command: LadderCommand) -> anyhow::Result<()> {
    match command {
        LadderCommand::Check { file, source } => {
            let ladder = Ladders::read_file(&file)?;
            let source = Source::parse(&source).ok_or_else(|| {
                anyhow::anyhow!(
                    "--source `{source}`: write WIDTHxHEIGHT or WIDTHxHEIGHT@FPS, e.g. 1280x720@30"
                )
            })?;
            println!(
                "{}: valid ladder `{}` ({})",
                file.display(),
                ladder.name,
                ladder.description
            );
            println!("{}", Plan::new(&ladder, source));
        }
        LadderCommand::List => {
            let ladders = settings.load_ladders()?;
            for name in ladders.names() {
                let ladder = ladders.get(name)?;
                let default = if *name == settings.transcode.default_ladder {
                    " (default)"
                } else {
                    ""
                };
                println!("{name}{default}\t{}", ladder.description);
            }
        }
    }
    Ok(())
}
