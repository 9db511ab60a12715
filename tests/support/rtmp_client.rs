//! A scripted RTMP publisher on rml_rtmp's client session, for tests that need what no real
//! encoder sends (frozen timestamps, audio without video): it connects, publishes to a key and
//! then sends whatever FLV tag bodies and timestamps the test gives it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

pub struct ScriptedPublisher {
    socket: TcpStream,
    session: ClientSession,
}

impl ScriptedPublisher {
    /// Connects to `rtmp` (host:port), app `live`, and publishes to `key`; fails if the server
    /// does not accept within 10 s.
    pub fn publish(rtmp: &str, key: &str) -> Result<Self, String> {
        let mut socket = TcpStream::connect(rtmp).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let leftover = handshake(&mut socket)?;
        let (session, _) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
        let mut this = Self { socket, session };
        this.consume(&leftover)?;
        let connect = this
            .session
            .request_connection("live".into())
            .map_err(|e| format!("{e:?}"))?;
        this.send(connect)?;
        this.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))?;
        let publish = this
            .session
            .request_publishing(key.into(), PublishRequestType::Live)
            .map_err(|e| format!("{e:?}"))?;
        this.send(publish)?;
        this.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))?;
        Ok(this)
    }

    /// Sends one FLV tag body of type `kind` (9 video, 8 audio; others are skipped).
    pub fn tag(&mut self, kind: u8, body: &[u8], ms: u32) -> Result<(), String> {
        match kind {
            9 => self.video(body, ms),
            8 => self.audio(body, ms),
            _ => Ok(()),
        }
    }

    /// Sends one FLV video tag body stamped `ms`.
    pub fn video(&mut self, body: &[u8], ms: u32) -> Result<(), String> {
        let packet = self
            .session
            .publish_video_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ms), false)
            .map_err(|e| format!("{e:?}"))?;
        self.send(packet)
    }

    /// Sends one FLV audio tag body stamped `ms`.
    pub fn audio(&mut self, body: &[u8], ms: u32) -> Result<(), String> {
        let packet = self
            .session
            .publish_audio_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ms), false)
            .map_err(|e| format!("{e:?}"))?;
        self.send(packet)
    }

    fn send(&mut self, result: ClientSessionResult) -> Result<(), String> {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            self.socket
                .write_all(&packet.bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn consume(&mut self, bytes: &[u8]) -> Result<Vec<ClientSessionEvent>, String> {
        let results = self
            .session
            .handle_input(bytes)
            .map_err(|e| format!("{e:?}"))?;
        let mut events = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self
                    .socket
                    .write_all(&packet.bytes)
                    .map_err(|e| e.to_string())?,
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    fn wait_for(&mut self, wanted: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            for event in self.consume(&buf[..n])? {
                if wanted(&event) {
                    return Ok(());
                }
                if let ClientSessionEvent::ConnectionRequestRejected { description } = event {
                    return Err(description);
                }
            }
        }
    }
}

/// The client side of the RTMP handshake; returns the bytes that followed it.
fn handshake(socket: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("{e:?}"))?;
    socket.write_all(&c0c1).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| format!("{e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket
                    .write_all(&response_bytes)
                    .map_err(|e| e.to_string())?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket
                    .write_all(&response_bytes)
                    .map_err(|e| e.to_string())?;
                return Ok(remaining_bytes);
            }
        }
    }
}
