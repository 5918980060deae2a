//! On-disk record framing: `[len u32][crc32c u32][offset u64][timestamp_ms i64][payload]`,
//! little-endian. `len` counts everything after the CRC; the CRC covers the
//! same bytes, so a torn or flipped record is always detected.

/// Bytes before the checksummed body: length and CRC.
pub(crate) const HEADER_LEN: usize = 8;
/// Fixed part of the body: offset and timestamp.
const BODY_PREFIX_LEN: usize = 16;
/// Largest record the decoder accepts; anything longer is corruption, so a
/// flipped length field can never make the reader allocate gigabytes.
pub(crate) const MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// One record as read from a segment, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: i64,
    pub(crate) payload: &'a [u8],
}

/// What the decoder found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole, checksum-valid record occupying `frame_len` bytes.
    Record {
        record: RecordRef<'a>,
        frame_len: usize,
    },
    /// The buffer ends inside a record; `needed` bytes would complete it.
    Incomplete { needed: usize },
    /// The bytes cannot be a valid record.
    Corrupt { reason: &'static str },
}

/// Appends the framed record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: i64, payload: &[u8]) {
    let body_len = BODY_PREFIX_LEN + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Length of the frame `encode` writes for a payload of `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    HEADER_LEN + BODY_PREFIX_LEN + payload_len
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete {
            needed: HEADER_LEN - buf.len(),
        };
    };
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(BODY_PREFIX_LEN..=MAX_RECORD_LEN).contains(&body_len) {
        return Decoded::Corrupt {
            reason: "record length out of range",
        };
    }
    let frame_len = HEADER_LEN + body_len;
    let Some(body) = buf.get(HEADER_LEN..frame_len) else {
        return Decoded::Incomplete {
            needed: frame_len - buf.len(),
        };
    };
    if crc32c::crc32c(body) != crc {
        return Decoded::Corrupt {
            reason: "checksum mismatch",
        };
    }
    let (offset, rest) = body.split_at(8);
    let (timestamp, payload) = rest.split_at(8);
    Decoded::Record {
        record: RecordRef {
            offset: u64::from_le_bytes(offset.try_into().unwrap_or_default()),
            timestamp_ms: i64::from_le_bytes(timestamp.try_into().unwrap_or_default()),
            payload,
        },
        frame_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, -3, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        let Decoded::Record { record, frame_len } = decode(&buf) else {
            panic!("expected a record")
        };
        assert_eq!(frame_len, buf.len());
        assert_eq!(record.offset, 7);
        assert_eq!(record.timestamp_ms, -3);
        assert_eq!(record.payload, b"hello");
    }

    #[test]
    fn detects_truncation_and_flips() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, b"payload");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut flipped = buf.clone();
            flipped[i] ^= 0x40;
            assert!(
                !matches!(decode(&flipped), Decoded::Record { .. }),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn refuses_absurd_lengths_without_allocating() {
        let buf = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        assert!(matches!(decode(&buf), Decoded::Corrupt { .. }));
        assert!(matches!(decode(&[0; 8]), Decoded::Corrupt { .. }));
    }
}
