//! Length-prefixed, size-capped postcard frames (SPEC §2, §13).
//!
//! A frame is a `u32` big-endian byte count followed by that many bytes of one
//! postcard-encoded message. The reader checks the count against its cap before
//! it allocates, so a hostile or broken peer cannot make us reserve gigabytes by
//! sending four bytes. This module owns only the byte layout: which message goes
//! on which stream is [`crate::protocol`]'s business.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::MESSAGE_BYTES_MAX;

/// Bytes of the length prefix.
const PREFIX_BYTES: usize = 4;

// The prefix must be able to express every frame we are willing to send.
const _: () = assert!(MESSAGE_BYTES_MAX <= u32::MAX as usize);

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error on the connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("message of {len} bytes exceeds the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// The size of `msg`'s frame body (its postcard encoding), without encoding
/// it: what the cap is checked against. `usize::MAX` for a value postcard
/// cannot encode, so it never fits.
pub fn encoded_len<T: Serialize + ?Sized>(msg: &T) -> usize {
    postcard::experimental::serialized_size(msg).unwrap_or(usize::MAX)
}

/// Encodes `msg` as one complete frame (prefix and body), so callers can batch
/// several frames into one write.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    // Size first: an oversized message is refused before anything is
    // allocated, and the body is then written into an exact slice (postcard's
    // slice flavour copies whole strings, where growing a `Vec` pushes byte by
    // byte: several times slower on megabyte argv in a debug build).
    let len = postcard::experimental::serialized_size(msg)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if len > MESSAGE_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: MESSAGE_BYTES_MAX,
        });
    }
    let mut buf = vec![0u8; PREFIX_BYTES + len];
    let body = postcard::to_slice(msg, &mut buf[PREFIX_BYTES..])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if body.len() != len {
        return Err(FrameError::Encode(format!(
            "encoded {} bytes where {len} were measured",
            body.len()
        )));
    }
    // Cannot fail: `len <= MESSAGE_BYTES_MAX <= u32::MAX` (checked above).
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: MESSAGE_BYTES_MAX,
    })?;
    buf[..PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Writes `msg` as one frame. Refuses messages over [`MESSAGE_BYTES_MAX`] without
/// writing anything, so the stream stays usable. Does not flush: QUIC send
/// streams need no flush, and a buffered writer is the caller's to flush.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame of at most `max` body bytes and decodes it.
///
/// `Ok(None)` means the peer finished the stream cleanly between frames; an end
/// of stream inside a frame is [`FrameError::Truncated`].
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    match read_frame_body(r, max).await? {
        Some(body) => decode_body(&body).map(Some),
        None => Ok(None),
    }
}

/// Reads one frame of at most `max` body bytes without decoding it (the
/// broker reads a hello's versions before the rest); [`read_frame`]'s `None`
/// and errors.
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut got = 0;
    while got < PREFIX_BYTES {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Decodes one frame body. Trailing bytes are refused: a frame holds exactly one
/// message, and leftovers mean the peer and we disagree about the message type.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(format!(
            "{} unexpected bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FromAgent, Request, RunRef};

    #[tokio::test]
    async fn round_trip_several_frames() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let msgs = vec![
            Request::Status {
                run: None,
                after: None,
            },
            Request::Stats { run: RunRef::Id(7) },
            Request::Shutdown,
        ];
        for m in &msgs {
            write_frame(&mut a, m).await.unwrap();
        }
        drop(a);
        for m in &msgs {
            let got: Request = read_frame(&mut b, MESSAGE_BYTES_MAX)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(format!("{got:?}"), format!("{m:?}"));
        }
        let end: Option<Request> = read_frame(&mut b, MESSAGE_BYTES_MAX).await.unwrap();
        assert!(
            end.is_none(),
            "clean end of stream between frames is Ok(None)"
        );
    }

    #[test]
    fn encoded_len_is_the_frame_body_without_encoding() {
        let msg = FromAgent::Leaving {
            reason: "x".repeat(300),
        };
        let frame = encode_frame(&msg).unwrap();
        assert_eq!(encoded_len(&msg), frame.len() - PREFIX_BYTES);
    }

    #[tokio::test]
    async fn batched_frames_decode_one_by_one() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let mut batch = encode_frame(&FromAgent::Heartbeat {
            running: 1,
            queued: 2,
        })
        .unwrap();
        batch.extend(
            encode_frame(&FromAgent::Leaving {
                reason: "idle".into(),
            })
            .unwrap(),
        );
        a.write_all(&batch).await.unwrap();
        drop(a);
        let first: FromAgent = read_frame(&mut b, 1024).await.unwrap().unwrap();
        assert!(matches!(
            first,
            FromAgent::Heartbeat {
                running: 1,
                queued: 2
            }
        ));
        let second: FromAgent = read_frame(&mut b, 1024).await.unwrap().unwrap();
        assert!(matches!(second, FromAgent::Leaving { reason } if reason == "idle"));
    }

    #[tokio::test]
    async fn oversized_declared_length_is_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Only the prefix is sent: a reader that allocated first would try to
        // reserve 4 GiB or wait forever for the body.
        a.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        let err = read_frame::<_, Request>(&mut b, MESSAGE_BYTES_MAX)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max } if len == u32::MAX as usize && max == MESSAGE_BYTES_MAX)
        );
        assert_eq!(
            err.to_string(),
            "message of 4294967295 bytes exceeds the 16777216-byte cap"
        );
    }

    #[tokio::test]
    async fn oversized_message_is_not_sent() {
        let (mut a, _b) = tokio::io::duplex(64);
        let big = FromAgent::Leaving {
            reason: "x".repeat(MESSAGE_BYTES_MAX + 1),
        };
        let err = write_frame(&mut a, &big).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let frame = encode_frame(&FromAgent::Leaving {
            reason: "draining".into(),
        })
        .unwrap();
        a.write_all(&frame[..frame.len() - 3]).await.unwrap();
        drop(a);
        let err = read_frame::<_, FromAgent>(&mut b, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn truncated_prefix_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        let err = read_frame::<_, FromAgent>(&mut b, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }

    #[tokio::test]
    async fn garbage_body_is_a_decode_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.extend([0xFF; 8]);
        a.write_all(&frame).await.unwrap();
        let err = read_frame::<_, FromAgent>(&mut b, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }

    #[tokio::test]
    async fn trailing_bytes_are_a_decode_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let body = postcard::to_stdvec(&Request::Shutdown).unwrap();
        let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend(&body);
        frame.extend([0, 0]);
        a.write_all(&frame).await.unwrap();
        let err = read_frame::<_, Request>(&mut b, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err}");
    }
}
