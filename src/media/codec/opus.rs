//! Opus configuration: the identification header `OpusHead` (RFC 7845 §5.1), which WebM's
//! `CodecPrivate` and MP4's `dOps` (without its magic) carry and libavcodec's Opus decoder takes
//! as its extradata. Read here because it is a 19-byte fixed layout. Strata decodes Opus (a
//! transcoding ladder turns it into AAC: a browser's recording) but does not package it.

use bytes::Bytes;

use super::CodecError;

const MAGIC: &[u8; 8] = b"OpusHead";
/// Magic, version, channels, pre-skip, input rate, gain, mapping family.
const FIXED: usize = 19;

/// Opus configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct OpusConfig {
    /// The `OpusHead` exactly as received.
    pub head: Bytes,
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder drops at the start.
    pub pre_skip: u16,
    /// The encoder's input rate, for information: Opus always decodes at 48 kHz.
    pub input_sample_rate: u32,
}

/// Opus's decoding rate, whatever the input rate was.
pub const OPUS_SAMPLE_RATE: u32 = 48_000;

impl OpusConfig {
    pub fn parse(head: Bytes) -> Result<Self, CodecError> {
        let fixed = head
            .get(..FIXED)
            .ok_or_else(|| CodecError::Opus(format!("{} bytes, under {FIXED}", head.len())))?;
        if &fixed[..8] != MAGIC {
            return Err(CodecError::Opus("no OpusHead magic".into()));
        }
        let version = fixed[8];
        if version >> 4 != 0 {
            return Err(CodecError::Opus(format!("version {version}")));
        }
        let channels = fixed[9];
        let mapping_family = fixed[18];
        let valid_channels = match mapping_family {
            0 => (1..=2).contains(&channels),
            _ => channels >= 1,
        };
        if !valid_channels {
            return Err(CodecError::Opus(format!(
                "{channels} channels with mapping family {mapping_family}"
            )));
        }
        // family 0 ends here; the others carry a channel mapping table (RFC 7845 §5.1.1)
        if mapping_family != 0 {
            check_mapping_table(&head[FIXED..], channels, mapping_family)?;
        }
        Ok(Self {
            channels,
            pre_skip: u16::from_le_bytes([fixed[10], fixed[11]]),
            input_sample_rate: u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]),
            head,
        })
    }

    /// A family-0 header for `channels` (1 or 2), for a container that declares Opus without
    /// one.
    pub fn for_channels(channels: u8) -> Result<Self, CodecError> {
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&[1, channels]);
        head.extend_from_slice(&0u16.to_le_bytes());
        head.extend_from_slice(&OPUS_SAMPLE_RATE.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        Self::parse(Bytes::from(head))
    }

    pub fn codec_string(&self) -> String {
        "opus".into()
    }
}

/// The stream count, coupled count and one entry per channel: at least one stream, no more
/// coupled streams than streams, at most 255 decoded channels, every entry a decoded channel
/// or 255 (silence); family 1 has at most 8 channels.
fn check_mapping_table(table: &[u8], channels: u8, family: u8) -> Result<(), CodecError> {
    let bad = |why: String| Err(CodecError::Opus(why));
    let Some((&[streams, coupled], entries)) = table.split_first_chunk::<2>() else {
        return bad("truncated channel mapping table".into());
    };
    let Some(entries) = entries.get(..usize::from(channels)) else {
        return bad("truncated channel mapping table".into());
    };
    let decoded = u16::from(streams) + u16::from(coupled);
    if streams == 0 || coupled > streams || decoded > 255 {
        return bad(format!("{streams} streams with {coupled} coupled"));
    }
    if family == 1 && channels > 8 {
        return bad(format!("{channels} channels with mapping family 1"));
    }
    if let Some(entry) = entries
        .iter()
        .find(|&&e| e != 255 && u16::from(e) >= decoded)
    {
        return bad(format!(
            "channel mapping entry {entry} of {decoded} channels"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stereo_head_is_read_and_a_made_one_parses() {
        let made = OpusConfig::for_channels(2).unwrap();
        assert_eq!((made.channels, made.pre_skip), (2, 0));
        let mut head = made.head.to_vec();
        head[10..12].copy_from_slice(&312u16.to_le_bytes());
        let read = OpusConfig::parse(Bytes::from(head)).unwrap();
        assert_eq!(
            (read.channels, read.pre_skip, read.input_sample_rate),
            (2, 312, 48_000)
        );
    }

    #[test]
    fn short_foreign_or_inconsistent_heads_are_refused() {
        let good = OpusConfig::for_channels(1).unwrap().head;
        assert!(OpusConfig::parse(good.slice(..18)).is_err());
        let mut magic = good.to_vec();
        magic[0] = b'X';
        assert!(OpusConfig::parse(Bytes::from(magic)).is_err());
        let mut channels = good.to_vec();
        channels[9] = 3; // family 0 is mono or stereo
        assert!(OpusConfig::parse(Bytes::from(channels)).is_err());
        let mut family = good.to_vec();
        family[18] = 1; // a mapping table must follow
        assert!(OpusConfig::parse(Bytes::from(family.clone())).is_err());
        family.extend_from_slice(&[1, 0, 0]); // one stream, none coupled, channel 0
        assert!(OpusConfig::parse(Bytes::from(family.clone())).is_ok());
        let last = family.len() - 1;
        family[last] = 1; // a channel beyond the one decoded
        assert!(OpusConfig::parse(Bytes::from(family.clone())).is_err());
        family[last] = 255; // silence
        assert!(OpusConfig::parse(Bytes::from(family.clone())).is_ok());
        family[last - 2] = 0; // no stream
        assert!(OpusConfig::parse(Bytes::from(family)).is_err());
        assert!(OpusConfig::for_channels(0).is_err());
    }
}
