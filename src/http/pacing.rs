//! Paced delivery: a slow viewer should get the newest bytes when it catches up, not a backlog
//! the kernel queued for it seconds ago. Every accepted HTTP connection gets
//!
//! - `TCP_NOTSENT_LOWAT` (`http.notsent_lowat`): the socket reports writable only while fewer
//!   than that many bytes wait unsent in the kernel, so bytes stay in the server (where a
//!   growing LL-DASH segment is produced only when the response is polled) until the viewer's
//!   connection can take them;
//! - a bounded `SO_SNDBUF` (`http.send_buffer`), which also caps what the kernel holds for a
//!   connection (it stops autotuning it up to megabytes).
//!
//! actix-web's dispatcher polls a streaming body only while its own write buffer is small, so a
//! chunked response moves at the pace the socket drains. Set either to 0 to keep the kernel's
//! default.
//!
//! Open connections are counted ([`OpenConnection`], [`open_connections`]): actix-web copies a
//! body chunk into the connection's write buffer whole, so the origin sizes the chunks it hands
//! over by how many connections share [`WRITE_BUFFERS`] (see `serve::chunk_size`).

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::rt::net::TcpStream;

/// The socket options of playback connections.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// `SO_SNDBUF` in bytes (0: the kernel's default and autotuning).
    pub send_buffer: usize,
    /// `TCP_NOTSENT_LOWAT` in bytes (0: off).
    pub notsent_lowat: u32,
}

impl Pacing {
    /// Applies the options to a newly accepted connection (`HttpServer::on_connect`). A
    /// connection whose options cannot be set is served anyway, with a warning.
    pub fn apply(&self, connection: &dyn Any) {
        let Some(stream) = connection.downcast_ref::<TcpStream>() else {
            return;
        };
        let socket = socket2::SockRef::from(stream);
        if self.send_buffer > 0 {
            if let Err(e) = socket.set_send_buffer_size(self.send_buffer) {
                tracing::warn!(error = %e, "could not bound a connection's send buffer");
            }
        }
        if self.notsent_lowat > 0 {
            if let Err(e) = socket.set_tcp_notsent_lowat(self.notsent_lowat) {
                tracing::warn!(error = %e, "could not set TCP_NOTSENT_LOWAT on a connection");
            }
        }
    }
}

/// Bytes all connections' write buffers may hold together while they send large bodies.
pub const WRITE_BUFFERS: usize = 256 << 20;

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One open HTTP connection, counted while it lives (kept in the connection's data).
pub struct OpenConnection(());

impl OpenConnection {
    pub fn new() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// HTTP connections open now, in this process.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}
