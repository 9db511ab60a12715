//! A bounds-checked AMF0 walker that validates structure and nesting depth without building
//! values or recursing. It runs before rml_amf0 sees a command: rml_amf0 recurses per nested
//! object and overflows the stack (aborting the process) at a few thousand levels.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AmfError {
    #[error("AMF0 nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("truncated AMF0 value")]
    Truncated,
    #[error("unsupported AMF0 marker 0x{0:02x}")]
    UnsupportedMarker(u8),
}

enum Container {
    /// Object, ECMA array or typed object: key/value pairs until an empty key + 0x09.
    Properties,
    /// Strict array with this many values left.
    Values(u32),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        let end = self.pos.checked_add(n).ok_or(AmfError::Truncated)?;
        let slice = self.data.get(self.pos..end).ok_or(AmfError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, AmfError> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Checks that `data` is a sequence of well-formed AMF0 values nested at most `max_depth` deep;
/// returns how many values it holds at the top level.
pub fn check(data: &[u8], max_depth: usize) -> Result<usize, AmfError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Container> = Vec::new();
    let mut top_level = 0;
    loop {
        match stack.last_mut() {
            None => {
                if r.remaining() == 0 {
                    return Ok(top_level);
                }
                top_level += 1;
            }
            Some(Container::Values(left)) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
            }
            Some(Container::Properties) => {
                let key_len = r.u16()?;
                if key_len == 0 && r.data.get(r.pos) == Some(&0x09) {
                    r.pos += 1;
                    stack.pop();
                    continue;
                }
                r.take(key_len)?;
            }
        }
        // one value
        match r.u8()? {
            0x00 => drop(r.take(8)?),
            0x01 => drop(r.take(1)?),
            0x02 => {
                let n = r.u16()?;
                r.take(n)?;
            }
            0x03 => push(&mut stack, Container::Properties, max_depth)?,
            0x05 | 0x06 | 0x0D => {}
            0x07 => drop(r.take(2)?),
            0x08 => {
                r.u32()?; // approximate count; the pairs end with the object-end marker
                push(&mut stack, Container::Properties, max_depth)?;
            }
            0x0A => {
                let count = r.u32()?;
                // every value takes at least one byte: a larger count is a lie
                if count as usize > r.remaining() {
                    return Err(AmfError::Truncated);
                }
                push(&mut stack, Container::Values(count), max_depth)?;
            }
            0x0B => drop(r.take(10)?),
            0x0C | 0x0F => {
                let n = r.u32()? as usize;
                r.take(n)?;
            }
            0x10 => {
                let n = r.u16()?;
                r.take(n)?;
                push(&mut stack, Container::Properties, max_depth)?;
            }
            other => return Err(AmfError::UnsupportedMarker(other)),
        }
    }
}

fn push(stack: &mut Vec<Container>, c: Container, max_depth: usize) -> Result<(), AmfError> {
    if stack.len() >= max_depth {
        return Err(AmfError::TooDeep(max_depth));
    }
    stack.push(c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![0x02];
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn connect_command() -> Vec<u8> {
        let mut v = string("connect");
        v.push(0x00);
        v.extend_from_slice(&1.0f64.to_be_bytes());
        v.push(0x03);
        v.extend_from_slice(&3u16.to_be_bytes());
        v.extend_from_slice(b"app");
        v.extend(string("live"));
        v.extend_from_slice(&[0, 0, 0x09]);
        v
    }

    #[test]
    fn accepts_a_real_connect_command() {
        assert_eq!(check(&connect_command(), 16), Ok(3));
    }

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        let mut v = string("connect");
        for _ in 0..100_000 {
            v.push(0x03);
            v.extend_from_slice(&1u16.to_be_bytes());
            v.push(b'a');
        }
        assert_eq!(check(&v, 16), Err(AmfError::TooDeep(16)));
    }

    #[test]
    fn refuses_lying_lengths() {
        assert_eq!(
            check(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x05], 16),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            check(&[0x02, 0x00, 0x10, b'a'], 16),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            check(&[0x0C, 0xFF, 0xFF, 0xFF, 0xFF], 16),
            Err(AmfError::Truncated)
        );
        assert_eq!(check(&[0x11], 16), Err(AmfError::UnsupportedMarker(0x11)));
    }
}
