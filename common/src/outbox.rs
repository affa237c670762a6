//! The outbox row's frames: how the processor writes a row's events into one `bytea` and the
//! relay reads them back in place (migration 6). Per event, in order, lengths big-endian:
//! `u32` key length, key, 16 bytes event id, `u32` type length, type, `u32` payload length,
//! payload. `paystream.outbox_events(frames)` reads the same format in SQL.

use uuid::Uuid;

/// The channel the processor notifies after a commit that wrote outbox rows, and the relay
/// listens on.
pub const CHANNEL: &str = "paystream_outbox";

/// The statement that wakes the relay.
pub const NOTIFY: &str = "NOTIFY paystream_outbox";

/// The statement a relay session listens with.
pub const LISTEN: &str = "LISTEN paystream_outbox";

/// Bytes the length prefixes and the event id add to an event's key, type and payload.
pub const FRAME_OVERHEAD: usize = 4 + 16 + 4 + 4;

/// The room an event takes in a row's frames.
pub fn frame_len(key: &str, event_type: &str, payload: &[u8]) -> usize {
    key.len() + event_type.len() + payload.len() + FRAME_OVERHEAD
}

/// Appends one event's frame to `frames`.
pub fn push_frame(frames: &mut Vec<u8>, key: &str, event_id: &Uuid, event_type: &str, payload: &[u8]) {
    frames.reserve(frame_len(key, event_type, payload));
    // Keys, types and payloads are bounded far below 4 GiB (a Kafka record is), so the
    // lengths fit; saturating would only make the relay refuse the row, never misread it.
    let len = |bytes: &[u8]| u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes();
    frames.extend_from_slice(&len(key.as_bytes()));
    frames.extend_from_slice(key.as_bytes());
    frames.extend_from_slice(event_id.as_bytes());
    frames.extend_from_slice(&len(event_type.as_bytes()));
    frames.extend_from_slice(event_type.as_bytes());
    frames.extend_from_slice(&len(payload));
    frames.extend_from_slice(payload);
}

/// One event read from a row's frames, borrowed from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The aggregate key (the Kafka key).
    pub key: &'a str,
    /// The event id (the `event_id` header).
    pub event_id: Uuid,
    /// The event type (the `event_type` header).
    pub event_type: &'a str,
    /// The Avro single-object bytes (the Kafka value).
    pub payload: &'a [u8],
}

/// Why a row's frames cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes end inside a frame.
    #[error("frame {index} truncated at byte {at}")]
    Truncated {
        /// The frame's position in the row, from 0.
        index: usize,
        /// Where the bytes ran out.
        at: usize,
    },
    /// A key or type is not UTF-8.
    #[error("frame {index}: {field} is not UTF-8")]
    NotUtf8 {
        /// The frame's position in the row, from 0.
        index: usize,
        /// `key` or `event type`.
        field: &'static str,
    },
}

/// The frames of one row, in order. After an error it yields nothing more.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    at: usize,
    index: usize,
}

impl<'a> Frames<'a> {
    /// Reads `bytes` as frames.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0, index: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else { return Err(FrameError::Truncated { index: self.index, at: self.bytes.len() }) };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn take_prefixed(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.take(4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn text(&self, bytes: &'a [u8], field: &'static str) -> Result<&'a str, FrameError> {
        std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8 { index: self.index, field })
    }

    fn frame(&mut self) -> Result<Frame<'a>, FrameError> {
        let key = self.take_prefixed()?;
        let key = self.text(key, "key")?;
        let id = self.take(16)?;
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(id);
        let event_type = self.take_prefixed()?;
        let event_type = self.text(event_type, "event type")?;
        let payload = self.take_prefixed()?;
        Ok(Frame { key, event_id: Uuid::from_bytes(event_id), event_type, payload })
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let frame = self.frame();
        match frame {
            Ok(_) => self.index += 1,
            // Nothing after a broken frame can be trusted.
            Err(_) => self.at = self.bytes.len(),
        }
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_what_was_written() {
        let events = [
            ("3f1c1b7e-4c53-4a8e-9d5e-1f0a2b3c4d5e", Uuid::from_u128(1), "PaymentApplied", vec![0xc3, 0x01, 7]),
            ("", Uuid::from_u128(2), "", vec![]),
            ("topic/3/17", Uuid::from_u128(u128::MAX), "DeadLetter", vec![9; 70_000]),
        ];
        let mut frames = Vec::new();
        for (key, id, kind, payload) in &events {
            push_frame(&mut frames, key, id, kind, payload);
        }
        let expected: usize = events.iter().map(|(k, _, t, p)| frame_len(k, t, p)).sum();
        assert_eq!(frames.len(), expected);
        let read: Vec<Frame> = Frames::new(&frames).collect::<Result<_, _>>().expect("frames");
        assert_eq!(read.len(), 3);
        for (frame, (key, id, kind, payload)) in read.iter().zip(&events) {
            assert_eq!((frame.key, frame.event_id, frame.event_type, frame.payload), (*key, *id, *kind, &payload[..]));
        }
        assert_eq!(Frames::new(&[]).count(), 0);
    }

    #[test]
    fn broken_frames_are_refused_and_end_the_row() {
        let mut frames = Vec::new();
        push_frame(&mut frames, "k", &Uuid::from_u128(1), "T", b"payload");
        push_frame(&mut frames, "k", &Uuid::from_u128(2), "T", b"payload");
        let whole = frames.len();
        for cut in 1..whole / 2 {
            let read: Vec<_> = Frames::new(&frames[..whole - cut]).collect();
            assert!(read[0].is_ok());
            assert!(matches!(read[1], Err(FrameError::Truncated { index: 1, .. })), "cut {cut}: {read:?}");
            assert_eq!(read.len(), 2);
        }
        let mut bad = Vec::new();
        push_frame(&mut bad, "k", &Uuid::from_u128(1), "T", b"");
        bad[4] = 0xff;
        assert_eq!(Frames::new(&bad).next(), Some(Err(FrameError::NotUtf8 { index: 0, field: "key" })));
        // A length running past the end (here 4 GiB) is a truncation, not an overflow.
        let huge = [0xff, 0xff, 0xff, 0xff, b'k'];
        assert!(matches!(Frames::new(&huge).next(), Some(Err(FrameError::Truncated { index: 0, .. }))));
    }
}
