//! A bounds-checked MSB-first bit reader for the few header fields Strata reads itself (AAC
//! AudioSpecificConfig, the start of an HEVC SPS, the AV1 sequence header, the VP9 frame
//! header), with Exp-Golomb codes for the HEVC SPS. Every read past the end is an error.

/// Ran out of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// `count` (≤ 32) bits as an unsigned number.
    pub fn read(&mut self, count: usize) -> Result<u32, Truncated> {
        debug_assert!(count <= 32);
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self.data.get(self.pos / 8).ok_or(Truncated)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(value)
    }

    pub fn flag(&mut self) -> Result<bool, Truncated> {
        Ok(self.read(1)? == 1)
    }

    pub fn skip(&mut self, count: usize) -> Result<(), Truncated> {
        let end = self.pos.checked_add(count).ok_or(Truncated)?;
        if end > self.data.len() * 8 {
            return Err(Truncated);
        }
        self.pos = end;
        Ok(())
    }

    /// An unsigned Exp-Golomb code `ue(v)`; codes longer than 31 leading zeros are refused
    /// (no field Strata reads can be that large).
    pub fn ue(&mut self) -> Result<u32, Truncated> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(Truncated);
            }
        }
        let rest = self.read(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }
}

/// The RBSP of a NAL unit: emulation-prevention bytes (`00 00 03`) removed.
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_exp_golomb() {
        // 101 | 1 (ue 0) | 010 (ue 1) | 00111 (ue 6) | pad
        let data = [0b1011_0100, 0b0111_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.read(3), Ok(5));
        assert_eq!(r.ue(), Ok(0));
        assert_eq!(r.ue(), Ok(1));
        assert_eq!(r.ue(), Ok(6));
        assert!(r.skip(5).is_err());
        assert_eq!(BitReader::new(&[0, 0, 0, 0, 0]).ue(), Err(Truncated));
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            unescape_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            vec![0, 0, 1, 0, 0, 0, 3]
        );
    }
}
