//! The `strata` command: `serve`, and `stream create|list`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata::config::{ConfigError, Settings};
use strata::db::Db;

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
}

#[derive(Subcommand)]
enum StreamCommand {
    /// Create a stream; prints its key (once), the RTMP URL and the playback URLs.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List streams.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let db = Db::connect(&settings.database_url()).await?;
    let urls = strata::app::Urls {
        public: settings.public_url(settings.http.listen),
        rtmp: settings.rtmp_url(settings.http.listen, settings.rtmp.listen),
    };
    match command {
        StreamCommand::Create { name, json } => {
            let (stream, key) = db.create_stream(&name).await?;
            if json {
                let value = serde_json::json!({
                    "name": stream.name,
                    "key": key,
                    "playback_id": stream.playback_id,
                    "rtmp_url": urls.rtmp,
                    "hls_url": urls.hls(&stream),
                    "dash_url": urls.dash(&stream),
                });
                println!("{value}");
            } else {
                println!("Stream `{}` created.", stream.name);
                println!("  OBS Server:     {}", urls.rtmp);
                println!("  OBS Stream Key: {key}   (shown once)");
                println!("  HLS:  {}", urls.hls(&stream));
                println!("  DASH: {}", urls.dash(&stream));
            }
        }
        StreamCommand::List { json } => {
            let streams = db.list_streams().await?;
            if json {
                println!("{}", serde_json::to_string(&streams)?);
            } else {
                for s in streams {
                    println!("{}\t{}\t{}", s.name, s.playback_id, urls.hls(&s));
                }
            }
        }
    }
    Ok(())
}
