//! Devices: cameras (a Raspberry Pi, an IP camera) that publish H.264 over RTP to a stream,
//! told when and where over a signaling WebSocket. This module owns presence and commands; the
//! socket is `signaling`, the protocol `messages`, the media path `ingest::rtp`, the reference
//! client `agent` (`strata device-agent`).
//!
//! - **Presence**: a device is `offline`, `online` (its signaling socket is connected here) or
//!   `streaming` (its RTP is being published). Every change, and every ping answered (with the
//!   round-trip time), is an event on the bus (`device.online`, `device.offline`,
//!   `device.streaming`, `device.status`) for the dashboard, and presence is written to the
//!   database (changes at once, `last_seen` at most every `PRESENCE_WRITE_EVERY`), so every
//!   node's API lists it.
//! - **Commands** (`start`, `stop`, `bitrate`) go from the API to the device's connection task
//!   through its bounded queue (`COMMAND_QUEUE`; full: the API answers 503). A device is
//!   connected to one node; a command for a device connected to another node is refused with
//!   that node's name (decision: commands are not relayed between nodes).
//! - **Closing** a connection (the device was deleted or its token rotated or revoked, or a
//!   newer connection replaced it) is not a queued command: a `watch` per connection carries
//!   it, so a full queue cannot lose it. Deleting or revoking through another node or the CLI
//!   reaches the connection through the database: it re-reads its token every
//!   `PRESENCE_WRITE_EVERY`.
//! - **Wanting to stream**: `start` is remembered until `stop`. A device that drops and comes
//!   back within the reconnect grace is told to start again, and its RTP continues the same
//!   broadcast (the core's reconnect grace, as for any publisher).

pub mod agent;
pub mod messages;
pub mod signaling;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use self::messages::{DeviceReport, ErrorCode};
use crate::db::devices::Device;
use crate::db::{now_ms, Db, DbError};
use crate::events::{Event, EventBus};

/// Commands queued for one connection.
pub const COMMAND_QUEUE: usize = 8;
/// `last_seen` is written to the database at most this often while a device is online.
pub const PRESENCE_WRITE_EVERY: Duration = Duration::from_secs(5);

/// A device's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Offline,
    Online,
    Streaming,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Offline => "offline",
            Presence::Online => "online",
            Presence::Streaming => "streaming",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "online" => Presence::Online,
            "streaming" => Presence::Streaming,
            _ => Presence::Offline,
        }
    }
}

/// A device as the API and the events show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub stream_id: String,
    pub stream_name: String,
    /// Its stream's public id: the preview is `/live/{playback_id}/poster.jpg`.
    pub playback_id: String,
    pub state: Presence,
    /// Unix milliseconds of the last message from the device; null if it never connected.
    pub last_seen: Option<i64>,
    /// Signaling round-trip time, when connected to this node and measured.
    pub rtt_ms: Option<f64>,
    /// How the device described itself in its `hello`.
    pub agent: Option<String>,
    /// What it last reported (`status`).
    pub report: Option<DeviceReport>,
    /// The node its socket is connected to (or was last).
    pub node: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What changed, naming the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceChange {
    #[serde(rename = "device.online")]
    Online,
    #[serde(rename = "device.offline")]
    Offline,
    #[serde(rename = "device.streaming")]
    Streaming,
    #[serde(rename = "device.status")]
    Status,
}

/// A presence event: the device as it is now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceEvent {
    #[schema(value_type = String)]
    pub event: DeviceChange,
    #[serde(flatten)]
    pub device: DeviceView,
}

impl DeviceEvent {
    pub fn name(&self) -> &'static str {
        match self.event {
            DeviceChange::Online => "device.online",
            DeviceChange::Offline => "device.offline",
            DeviceChange::Streaming => "device.streaming",
            DeviceChange::Status => "device.status",
        }
    }
}

/// What the API asks a connected device to do.
#[derive(Debug)]
pub enum Command {
    /// Start streaming; answered once the broadcast is admitted (or refused, with why).
    Start(oneshot::Sender<Result<(), String>>),
    /// Stop streaming; answered once the broadcast has ended.
    Stop(oneshot::Sender<()>),
    Bitrate(u32),
}

/// What one connection is given when it registers.
pub(crate) struct Registration {
    /// Its number, to unregister exactly it.
    pub connection: u64,
    pub commands: mpsc::Receiver<Command>,
    /// Becomes `Some(code)` when the connection must close: `Replaced` or `Revoked`.
    pub closed: watch::Receiver<Option<ErrorCode>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the device is offline (its signaling socket is not connected)")]
    Offline,
    #[error("the device is connected to node `{0}`: send the command there")]
    Elsewhere(String),
    #[error("the device's connection is busy; try again")]
    Busy,
    #[error("the device did not start: {0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// What this node knows of a connected device beyond the database.
#[derive(Debug, Default, Clone)]
pub struct LiveInfo {
    pub rtt_ms: Option<f64>,
    pub agent: Option<String>,
    pub report: Option<DeviceReport>,
}

struct Connected {
    connection: u64,
    commands: mpsc::Sender<Command>,
    close: watch::Sender<Option<ErrorCode>>,
    info: LiveInfo,
}

/// The devices connected to this node.
pub struct Devices {
    pub db: Db,
    events: EventBus,
    node_id: String,
    connected: Mutex<HashMap<String, Connected>>,
    wants_streaming: Mutex<HashSet<String>>,
    next_connection: AtomicU64,
}

impl Devices {
    pub fn new(db: Db, events: EventBus, node_id: String) -> Arc<Self> {
        Arc::new(Self {
            db,
            events,
            node_id,
            connected: Mutex::new(HashMap::new()),
            wants_streaming: Mutex::new(HashSet::new()),
            next_connection: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connected>> {
        // every update is one insert, remove or field write: a poisoned map is consistent
        self.connected.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wants(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.wants_streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection of `device_id`; an earlier one is told it was replaced.
    fn connect(&self, device_id: &str, agent: Option<String>) -> Registration {
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (close, closed) = watch::channel(None);
        let mut connected = self.lock();
        let earlier = connected.insert(
            device_id.to_string(),
            Connected {
                connection,
                commands,
                close,
                info: LiveInfo {
                    agent,
                    ..LiveInfo::default()
                },
            },
        );
        if let Some(earlier) = earlier {
            earlier.close.send_replace(Some(ErrorCode::Replaced));
        }
        metrics::gauge!(crate::telemetry::DEVICES_ONLINE).set(connected.len() as f64);
        Registration {
            connection,
            commands: commands_rx,
            closed,
        }
    }

    /// Unregisters `connection` of `device_id` (not a newer one that replaced it); whether it
    /// was still the device's connection.
    fn disconnect_registered(&self, device_id: &str, connection: u64) -> bool {
        let mut connected = self.lock();
        let current = connected
            .get(device_id)
            .is_some_and(|c| c.connection == connection);
        if current {
            connected.remove(device_id);
        }
        metrics::gauge!(crate::telemetry::DEVICES_ONLINE).set(connected.len() as f64);
        current
    }

    fn update_info(&self, device_id: &str, connection: u64, change: impl FnOnce(&mut LiveInfo)) {
        if let Some(c) = self.lock().get_mut(device_id) {
            if c.connection == connection {
                change(&mut c.info);
            }
        }
    }

    fn info(&self, device_id: &str) -> Option<LiveInfo> {
        self.lock().get(device_id).map(|c| c.info.clone())
    }

    fn set_wants_streaming(&self, device_id: &str, wants: bool) {
        if wants {
            self.wants().insert(device_id.to_string());
        } else {
            self.wants().remove(device_id);
        }
    }

    fn wants_streaming(&self, device_id: &str) -> bool {
        self.wants().contains(device_id)
    }

    /// Sends `command` to the device's connection on this node.
    async fn command(&self, device: &Device, command: Command) -> Result<(), CommandError> {
        let sender = self.lock().get(&device.id).map(|c| c.commands.clone());
        let Some(sender) = sender else {
            return Err(match &device.node_id {
                Some(node) if device.state != "offline" && *node != self.node_id => {
                    CommandError::Elsewhere(node.clone())
                }
                _ => CommandError::Offline,
            });
        };
        sender.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Busy,
            mpsc::error::TrySendError::Closed(_) => CommandError::Offline,
        })
    }

    /// Tells the device to start streaming and waits (at most `timeout`) until its broadcast
    /// is admitted.
    pub async fn start(&self, device: &Device, timeout: Duration) -> Result<(), CommandError> {
        let (tx, rx) = oneshot::channel();
        self.command(device, Command::Start(tx)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(CommandError::Refused(why)),
            Ok(Err(_)) => Err(CommandError::Offline),
            Err(_) => Err(CommandError::Busy),
        }
    }

    /// Tells the device to stop streaming and waits (at most `timeout`) until its broadcast
    /// has ended; forgets that it wanted to stream even when it is offline.
    pub async fn stop(&self, device: &Device, timeout: Duration) -> Result<(), CommandError> {
        self.set_wants_streaming(&device.id, false);
        let (tx, rx) = oneshot::channel();
        self.command(device, Command::Stop(tx)).await?;
        // a connection that went away meanwhile stopped streaming too
        let _ = tokio::time::timeout(timeout, rx).await;
        Ok(())
    }

    pub async fn set_bitrate(&self, device: &Device, kbps: u32) -> Result<(), CommandError> {
        self.command(device, Command::Bitrate(kbps)).await
    }

    /// Closes the device's socket, if it is connected here (deleted, token rotated/revoked).
    pub fn disconnect(&self, device_id: &str) {
        self.set_wants_streaming(device_id, false);
        if let Some(c) = self.lock().get(device_id) {
            c.close.send_replace(Some(ErrorCode::Revoked));
        }
    }

    /// The API's and the events' view of `device`, with what this node knows live.
    pub fn view(&self, device: &Device, stream: Option<&crate::db::Stream>) -> DeviceView {
        let info = self.info(&device.id).unwrap_or_default();
        DeviceView {
            id: device.id.clone(),
            name: device.name.clone(),
            stream_id: device.stream_id.clone(),
            stream_name: stream.map(|s| s.name.clone()).unwrap_or_default(),
            playback_id: stream.map(|s| s.playback_id.clone()).unwrap_or_default(),
            state: Presence::parse(&device.state),
            last_seen: device.last_seen,
            rtt_ms: info.rtt_ms,
            agent: info.agent,
            report: info.report,
            node: device.node_id.clone(),
            created_at: device.created_at,
        }
    }

    /// Every device, as the API lists them.
    pub async fn list(&self) -> Result<Vec<DeviceView>, DbError> {
        let streams: HashMap<String, crate::db::Stream> = self
            .db
            .list_streams()
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        Ok(self
            .db
            .list_devices()
            .await?
            .iter()
            .map(|d| self.view(d, streams.get(&d.stream_id)))
            .collect())
    }

    /// One device as the API shows it.
    pub async fn get(&self, id: &str) -> Result<Option<DeviceView>, DbError> {
        let Some(device) = self.db.device_by_id(id).await? else {
            return Ok(None);
        };
        let stream = self.db.stream_by_id(&device.stream_id).await?;
        Ok(Some(self.view(&device, stream.as_ref())))
    }

    /// Records that the device left this node (unless it is connected to another one by now)
    /// and tells the bus.
    async fn went_offline(&self, device_id: &str) {
        match self
            .db
            .set_device_offline(device_id, &self.node_id, now_ms())
            .await
        {
            Ok(true) => self.announce(device_id, DeviceChange::Offline).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record a device's presence"),
        }
    }

    /// Records the device's presence and tells the bus; false if the device is gone.
    async fn set_presence(
        &self,
        device_id: &str,
        presence: Presence,
        change: DeviceChange,
    ) -> bool {
        match self
            .db
            .set_device_presence(device_id, presence.as_str(), &self.node_id, now_ms())
            .await
        {
            Ok(false) => return false,
            Ok(true) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record a device's presence"),
        }
        self.announce(device_id, change).await;
        true
    }

    /// Sends the device's current view as `change` on the bus.
    async fn announce(&self, device_id: &str, change: DeviceChange) {
        match self.get(device_id).await {
            Ok(Some(device)) => self.events.send(Event::Device(DeviceEvent {
                event: change,
                device,
            })),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read a device for its event"),
        }
    }
}
