//! The chunk-stream guard in front of rml_rtmp. Sans-IO: bytes in, complete messages out.
//!
//! rml_rtmp 0.8's deserializer can be crashed or made to reserve memory by a peer: (a) deep
//! AMF0 nesting overflows the stack, (b) a message interleaved with a message on another chunk
//! stream panics, (c) a type-1 chunk with an extended timestamp below 0xFFFFFF underflows, and
//! (d) chunk sizes up to 2^31−1 let a header reserve 16 MiB. Rather than patch around each,
//! this guard owns chunk parsing completely: it tracks every chunk stream's header state,
//! enforces limits *before* storing any bytes (message length, total buffered bytes, chunk
//! size, number of chunk streams), checks AMF0 depth of command and data messages, and yields
//! whole messages. The session layer re-serializes each one as a single type-0 chunk for
//! rml_rtmp, whose deserializer therefore never sees interleaving, compressed headers or a
//! peer-chosen chunk size.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};

use super::amf::{self, AmfError};

/// RTMP message type ids the guard acts on.
pub mod message_type {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const AMF3_DATA: u8 = 15;
    pub const AMF3_COMMAND: u8 = 17;
    pub const AMF0_DATA: u8 = 18;
    pub const AMF0_COMMAND: u8 = 20;
}

#[derive(Debug, Clone)]
pub struct GuardLimits {
    pub max_message_size: u32,
    /// Bytes of partial messages held across all chunk streams.
    pub max_buffered: usize,
    pub max_chunk_size: u32,
    pub max_chunk_streams: usize,
    /// Command/data (AMF) messages are small; larger ones are refused.
    pub max_command_size: usize,
    pub max_amf_depth: usize,
}

impl GuardLimits {
    pub fn new(max_message_size: u32) -> Self {
        Self {
            max_message_size,
            max_buffered: max_message_size as usize + (1 << 20),
            max_chunk_size: 0x00FF_FFFF,
            max_chunk_streams: 64,
            max_command_size: 256 * 1024,
            max_amf_depth: 16,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GuardError {
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge { size: u32, limit: u32 },
    #[error("partial messages would hold more than {0} bytes")]
    TooMuchBuffered(usize),
    #[error("chunk size {size} outside 1..={limit}")]
    BadChunkSize { size: u32, limit: u32 },
    #[error("more than {0} chunk streams in use")]
    TooManyChunkStreams(usize),
    #[error("chunk on stream {0} continues a message that has no header")]
    NoPreviousHeader(u32),
    #[error("command message of {0} bytes is too large")]
    CommandTooLarge(usize),
    #[error("malformed command: {0}")]
    Amf(#[from] AmfError),
    #[error("command with {0} values (a command has a name, a transaction id and an object)")]
    ShortCommand(usize),
    #[error("malformed protocol control message (type {0})")]
    BadControl(u8),
}

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Header state of one chunk stream (what compressed headers inherit).
#[derive(Debug, Default, Clone, Copy)]
struct Header {
    timestamp: u32,
    /// The last timestamp (type 0) or delta (types 1, 2) field; a type-3 chunk that starts a
    /// message adds it again.
    timestamp_field: u32,
    /// Whether that field used the extended timestamp (then type-3 chunks carry one too).
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

#[derive(Debug, Default)]
struct ChunkStream {
    header: Header,
    /// The message being assembled; only received bytes are stored.
    partial: Option<BytesMut>,
}

/// Parses the chunk stream of one connection.
#[derive(Debug)]
pub struct ChunkGuard {
    limits: GuardLimits,
    chunk_size: u32,
    input: BytesMut,
    streams: HashMap<u32, ChunkStream>,
    buffered: usize,
}

impl ChunkGuard {
    pub fn new(limits: GuardLimits) -> Self {
        Self {
            limits,
            chunk_size: 128,
            input: BytesMut::new(),
            streams: HashMap::new(),
            buffered: 0,
        }
    }

    /// Feeds received bytes; returns every message completed by them. Set Chunk Size and
    /// Abort are applied here and not returned. After an error the connection must close.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, GuardError> {
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            if let Some(message) = chunk {
                if let Some(message) = self.apply_control(message)? {
                    out.push(message);
                }
            }
        }
        Ok(out)
    }

    /// Parses one chunk if it is fully buffered: `None` when more bytes are needed,
    /// `Some(Some(message))` when the chunk completed a message.
    fn next_chunk(&mut self) -> Result<Option<Option<Message>>, GuardError> {
        let data = &self.input[..];
        let Some(first) = data.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, basic_len) = match first & 0x3F {
            0 => match data.get(1) {
                Some(b) => (u32::from(*b) + 64, 2),
                None => return Ok(None),
            },
            1 => match (data.get(1), data.get(2)) {
                (Some(lo), Some(hi)) => (u32::from(*lo) + u32::from(*hi) * 256 + 64, 3),
                _ => return Ok(None),
            },
            id => (u32::from(id), 1),
        };
        let header_len = [11usize, 7, 3, 0][fmt as usize];
        let Some(fields) = data.get(basic_len..basic_len + header_len) else {
            return Ok(None);
        };
        let (previous, have, continuing) = match self.streams.get(&csid) {
            Some(s) => (
                Some(s.header),
                s.partial.as_ref().map_or(0, BytesMut::len),
                s.partial.is_some(),
            ),
            None => (None, 0, false),
        };
        if previous.is_none() && self.streams.len() >= self.limits.max_chunk_streams {
            return Err(GuardError::TooManyChunkStreams(
                self.limits.max_chunk_streams,
            ));
        }
        let state = match (fmt, previous) {
            (0, p) => p.unwrap_or_default(),
            (_, Some(p)) => p,
            (_, None) => return Err(GuardError::NoPreviousHeader(csid)),
        };
        let extended = if fmt < 3 {
            read_u24(&fields[0..3]) == 0x00FF_FFFF
        } else {
            state.extended
        };
        let ext_len = if extended { 4 } else { 0 };
        let Some(ext) = data.get(basic_len + header_len..basic_len + header_len + ext_len) else {
            return Ok(None);
        };
        let field_value = match (fmt, extended) {
            (3, _) => state.timestamp_field,
            (_, true) => u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]),
            (_, false) => read_u24(&fields[0..3]),
        };
        let mut next = state;
        match fmt {
            0 => {
                next.length = read_u24(&fields[3..6]);
                next.type_id = fields[6];
                next.stream_id = u32::from_le_bytes([fields[7], fields[8], fields[9], fields[10]]);
                next.timestamp = field_value;
            }
            1 | 2 => {
                if fmt == 1 {
                    next.length = read_u24(&fields[3..6]);
                    next.type_id = fields[6];
                }
                next.timestamp = state.timestamp.wrapping_add(field_value);
            }
            _ if !continuing => next.timestamp = state.timestamp.wrapping_add(field_value),
            _ => {}
        }
        if fmt < 3 {
            next.timestamp_field = field_value;
            next.extended = extended;
        }
        if next.length > self.limits.max_message_size {
            return Err(GuardError::MessageTooLarge {
                size: next.length,
                limit: self.limits.max_message_size,
            });
        }
        // A new header while a message is unfinished abandons that message.
        let have = if fmt < 3 { 0 } else { have };
        let want = (next.length as usize)
            .saturating_sub(have)
            .min(self.chunk_size as usize);
        let start = basic_len + header_len + ext_len;
        if data.len() < start + want {
            return Ok(None);
        }
        let stream = self.streams.entry(csid).or_default();
        if fmt < 3 {
            if let Some(abandoned) = stream.partial.take() {
                self.buffered -= abandoned.len();
            }
        }
        if self.buffered + want > self.limits.max_buffered {
            return Err(GuardError::TooMuchBuffered(self.limits.max_buffered));
        }
        stream.header = next;
        let partial = stream.partial.get_or_insert_with(BytesMut::new);
        partial.extend_from_slice(&self.input[start..start + want]);
        self.buffered += want;
        let message = if partial.len() >= next.length as usize {
            let payload = stream.partial.take().unwrap_or_default().freeze();
            self.buffered -= payload.len();
            Some(Message {
                timestamp: next.timestamp,
                type_id: next.type_id,
                stream_id: next.stream_id,
                payload,
            })
        } else {
            None
        };
        self.input.advance(start + want);
        Ok(Some(message))
    }

    fn apply_control(&mut self, message: Message) -> Result<Option<Message>, GuardError> {
        use message_type::*;
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size = read_u32(&message.payload)
                    .ok_or(GuardError::BadControl(SET_CHUNK_SIZE))?
                    & 0x7FFF_FFFF;
                if size == 0 || size > self.limits.max_chunk_size {
                    return Err(GuardError::BadChunkSize {
                        size,
                        limit: self.limits.max_chunk_size,
                    });
                }
                self.chunk_size = size;
                Ok(None)
            }
            ABORT => {
                let csid = read_u32(&message.payload).ok_or(GuardError::BadControl(ABORT))?;
                if let Some(stream) = self.streams.get_mut(&csid) {
                    if let Some(p) = stream.partial.take() {
                        self.buffered -= p.len();
                    }
                }
                Ok(None)
            }
            AMF0_COMMAND | AMF0_DATA | AMF3_COMMAND | AMF3_DATA => {
                if message.payload.len() > self.limits.max_command_size {
                    return Err(GuardError::CommandTooLarge(message.payload.len()));
                }
                let message = as_amf0(message);
                let values = amf::check(&message.payload, self.limits.max_amf_depth)?;
                // rml_rtmp takes the first three values of a command without looking (a panic)
                if message.type_id == AMF0_COMMAND && values < 3 {
                    return Err(GuardError::ShortCommand(values));
                }
                Ok(Some(message))
            }
            _ => Ok(Some(message)),
        }
    }
}

/// The AMF0 message a command or data message is parsed as, so that the bytes `amf::check`
/// validates are exactly the bytes rml_rtmp parses.
///
/// AMF3-typed messages (15, 17) from real clients carry a 0x00 format byte before AMF0 values;
/// rml_rtmp skips that byte for commands but not for data, and reads either from byte 0 when the
/// prefix is missing. Checking one reading and forwarding the other let a peer hide deep
/// nesting from the check. Instead the guard strips an optional leading 0x00 and re-types the
/// message as AMF0 (18, 20): rml_rtmp then has exactly one way to read it, the checked one.
fn as_amf0(mut message: Message) -> Message {
    use message_type::*;
    let amf0_type = match message.type_id {
        AMF3_COMMAND => AMF0_COMMAND,
        AMF3_DATA => AMF0_DATA,
        _ => return message,
    };
    if message.payload.first() == Some(&0x00) {
        message.payload.advance(1);
    }
    message.type_id = amf0_type;
    message
}

fn read_u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

fn read_u32(b: &[u8]) -> Option<u32> {
    let b = b.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type0(csid: u8, ts: u32, len: u32, type_id: u8) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.min(0xFF_FFFF).to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&1u32.to_le_bytes());
        v
    }

    fn guard() -> ChunkGuard {
        ChunkGuard::new(GuardLimits::new(1 << 20))
    }

    #[test]
    fn interleaved_messages_are_reassembled() {
        let mut g = guard();
        let first: Vec<u8> = (0..200u8).collect();
        let mut bytes = type0(3, 0, 200, message_type::VIDEO);
        bytes.extend_from_slice(&first[..128]);
        bytes.extend(type0(4, 7, 10, message_type::AUDIO));
        bytes.extend_from_slice(&[9; 10]);
        bytes.push(0xC3);
        bytes.extend_from_slice(&first[128..]);
        // byte by byte: every split point must work
        let mut out = Vec::new();
        for b in &bytes {
            out.extend(g.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].type_id, message_type::AUDIO);
        assert_eq!(out[0].timestamp, 7);
        assert_eq!(&out[1].payload[..], &first[..]);
    }

    #[test]
    fn type1_with_small_extended_timestamp_is_a_plain_delta() {
        let mut g = guard();
        let mut bytes = type0(5, 1_000, 2, message_type::AUDIO);
        bytes.extend_from_slice(&[0xaf, 0x01]);
        bytes.push(0x45);
        bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0, 0, 2, message_type::AUDIO]);
        bytes.extend_from_slice(&0x10u32.to_be_bytes());
        bytes.extend_from_slice(&[0xaf, 0x01]);
        // a type-3 chunk starting a new message repeats the delta, with the extended field
        bytes.push(0xC5);
        bytes.extend_from_slice(&0x10u32.to_be_bytes());
        bytes.extend_from_slice(&[0xaf, 0x01]);
        let out = g.push(&bytes).unwrap();
        let times: Vec<u32> = out.iter().map(|m| m.timestamp).collect();
        assert_eq!(times, vec![1_000, 1_016, 1_032]);
    }

    #[test]
    fn limits_are_checked_before_bytes_are_stored() {
        let mut g = guard();
        let err = g
            .push(&type0(3, 0, 0xFF_FFFF, message_type::VIDEO))
            .unwrap_err();
        assert!(matches!(err, GuardError::MessageTooLarge { .. }));

        let mut g = guard();
        let mut set = type0(2, 0, 4, message_type::SET_CHUNK_SIZE);
        set.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        assert!(matches!(
            g.push(&set).unwrap_err(),
            GuardError::BadChunkSize { .. }
        ));

        let mut g = guard();
        let mut many = Vec::new();
        for csid in 0..70u32 {
            // two-byte basic headers: csid 64 + n
            many.extend_from_slice(&[0x00, csid as u8]);
            many.extend_from_slice(&type0(0, 0, 100, message_type::VIDEO)[1..]);
            many.extend_from_slice(&[0; 100]);
        }
        assert_eq!(
            g.push(&many).unwrap_err(),
            GuardError::TooManyChunkStreams(64)
        );

        let mut g = guard();
        assert_eq!(
            g.push(&[0x43, 0, 0, 0, 0, 0, 2, 9]).unwrap_err(),
            GuardError::NoPreviousHeader(3)
        );
    }

    /// The remote crash of issue 13: from byte 1 (where the old guard started) one long
    /// string; from byte 0 (where rml_rtmp starts when there is no 0x00 prefix) an object whose
    /// 3072-byte key is followed by thousands of nested objects.
    fn two_faced_body(levels: usize) -> Vec<u8> {
        let key_end = 3 + 0x0C00;
        let total = key_end + 4 * levels;
        let mut body = vec![0x03, 0x0C];
        body.extend_from_slice(&((total - 6) as u32).to_be_bytes());
        body.resize(key_end, b'k');
        for _ in 0..levels {
            body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        body
    }

    fn command(type_id: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = type0(3, 0, body.len() as u32, type_id);
        for (i, piece) in body.chunks(128).enumerate() {
            if i > 0 {
                bytes.push(0xC3);
            }
            bytes.extend_from_slice(piece);
        }
        bytes
    }

    #[test]
    fn amf3_typed_messages_are_checked_as_rml_rtmp_reads_them() {
        let body = two_faced_body(19_600);
        assert_eq!(amf::check(&body[1..], 16), Ok(1), "the old reading is flat");
        for type_id in [message_type::AMF3_COMMAND, message_type::AMF3_DATA] {
            let err = guard().push(&command(type_id, &body)).unwrap_err();
            assert_eq!(
                err,
                GuardError::Amf(AmfError::TooDeep(16)),
                "type {type_id}"
            );
        }
        // With the 0x00 format byte the rest is what gets checked (and forwarded).
        let mut prefixed = vec![0x00];
        prefixed.extend_from_slice(&body);
        let err = guard()
            .push(&command(message_type::AMF3_COMMAND, &prefixed))
            .unwrap_err();
        assert_eq!(err, GuardError::Amf(AmfError::TooDeep(16)));
    }

    #[test]
    fn amf3_typed_messages_are_forwarded_as_the_amf0_bytes_that_were_checked() {
        let mut body = vec![0x00, 0x02, 0x00, 0x07];
        body.extend_from_slice(b"connect");
        body.push(0x00);
        body.extend_from_slice(&1.0f64.to_be_bytes());
        body.push(0x05);
        for (type_id, forwarded) in [
            (message_type::AMF3_COMMAND, message_type::AMF0_COMMAND),
            (message_type::AMF3_DATA, message_type::AMF0_DATA),
        ] {
            let mut g = guard();
            let out = g.push(&command(type_id, &body)).unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].type_id, forwarded);
            assert_eq!(&out[0].payload[..], &body[1..]);
        }
    }

    #[test]
    fn commands_of_fewer_than_three_values_are_refused() {
        // rml_rtmp 0.8 panics on these (`drain(..3)`); found by the rtmp_session fuzz target
        let mut name = vec![0x02, 0x00, 0x07];
        name.extend_from_slice(b"connect");
        let err = guard()
            .push(&command(message_type::AMF0_COMMAND, &name))
            .unwrap_err();
        assert_eq!(err, GuardError::ShortCommand(1));
        // data messages may hold any number of values
        assert!(guard()
            .push(&command(message_type::AMF0_DATA, &name))
            .is_ok());
    }

    #[test]
    fn partial_messages_across_streams_are_bounded() {
        let mut g = ChunkGuard::new(GuardLimits {
            max_buffered: 1_000,
            ..GuardLimits::new(1 << 20)
        });
        let mut bytes = Vec::new();
        for csid in 3..20u8 {
            bytes.extend(type0(csid, 0, 500, message_type::VIDEO));
            bytes.extend_from_slice(&[0; 128]);
        }
        assert_eq!(
            g.push(&bytes).unwrap_err(),
            GuardError::TooMuchBuffered(1_000)
        );
    }
}
