//! The pub/sub message encoding (version 1) and the parsing of the
//! scripts' replies.
//!
//! A message is one version byte (`1`), one kind byte, then a header of
//! ASCII decimal numbers each ended by `:`, then raw bytes whose lengths the
//! header gives; whatever follows is the publication's data:
//!
//! ```text
//! 1p OFFSET: EPOCH_LEN: EPOCH DATA                          publication
//! 1P OFFSET: EPOCH_LEN: USER_LEN: CLIENT_LEN: EPOCH USER CLIENT DATA
//!                                                           publication with its publisher
//! 1j USER_LEN: USER CLIENT                                  join
//! 1l USER_LEN: USER CLIENT                                  leave
//! ```
//!
//! The data travels as is (no escaping, no base64), so a message costs its
//! payload plus a few dozen bytes. Publications are encoded by the publish
//! script, presence events here. The spaces above are for reading only.

use std::sync::Arc;

use ::redis::Value;
use bytes::Bytes;

use crate::broker::{ClientInfo, Delivery, Publication};

/// The encoding's version byte.
const VERSION: u8 = b'1';

/// Why a pub/sub message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown encoding version {0:#04x}")]
    Version(u8),
    #[error("unknown message kind {0:#04x}")]
    Kind(u8),
    #[error("malformed header")]
    Header,
    #[error("message shorter than its header says")]
    Truncated,
    #[error("user or client is not UTF-8")]
    Utf8,
}

/// Encodes a join or leave event; `None` for a publication (those are
/// encoded by the publish script).
pub(super) fn encode_presence(event: &Delivery) -> Option<Vec<u8>> {
    let (kind, info) = match event {
        Delivery::Join(info) => (b'j', info),
        Delivery::Leave(info) => (b'l', info),
        Delivery::Publication { .. } => return None,
    };
    let len = info.user.len().to_string();
    let mut out = Vec::with_capacity(3 + len.len() + info.user.len() + info.client.len());
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(len.as_bytes());
    out.push(b':');
    out.extend_from_slice(info.user.as_bytes());
    out.extend_from_slice(info.client.as_bytes());
    Some(out)
}

/// A decoded message. The epoch is borrowed so the caller can reuse the
/// `Arc<str>` it already holds for the channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded<'a> {
    Publication {
        epoch: &'a str,
        publication: Publication,
    },
    Presence(Delivery),
}

impl Decoded<'_> {
    /// The delivery, with `epoch` as the publication's epoch.
    pub(super) fn into_delivery(self, epoch: impl FnOnce(&str) -> Arc<str>) -> Delivery {
        match self {
            Decoded::Publication {
                epoch: e,
                publication,
            } => Delivery::Publication {
                epoch: epoch(e),
                publication,
            },
            Decoded::Presence(delivery) => delivery,
        }
    }
}

/// Decodes one pub/sub message.
pub(super) fn decode(message: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let (&version, rest) = message.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let (&kind, mut rest) = rest.split_first().ok_or(DecodeError::Truncated)?;
    match kind {
        b'p' | b'P' => {
            let offset = number(&mut rest)?;
            let epoch_len = length(&mut rest)?;
            let lens = if kind == b'P' {
                Some((length(&mut rest)?, length(&mut rest)?))
            } else {
                None
            };
            let epoch = text(take(&mut rest, epoch_len)?)?;
            let info = match lens {
                Some((user, client)) => Some(ClientInfo {
                    user: text(take(&mut rest, user)?)?.to_owned(),
                    client: text(take(&mut rest, client)?)?.to_owned(),
                }),
                None => None,
            };
            Ok(Decoded::Publication {
                epoch,
                publication: Publication {
                    offset,
                    data: Bytes::copy_from_slice(rest),
                    info,
                },
            })
        }
        b'j' | b'l' => {
            let user_len = length(&mut rest)?;
            let user = text(take(&mut rest, user_len)?)?.to_owned();
            let info = ClientInfo {
                user,
                client: text(rest)?.to_owned(),
            };
            Ok(Decoded::Presence(if kind == b'j' {
                Delivery::Join(info)
            } else {
                Delivery::Leave(info)
            }))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

/// Reads a decimal number ended by `:`.
fn number(rest: &mut &[u8]) -> Result<u64, DecodeError> {
    let end = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or(DecodeError::Header)?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError::Header);
    }
    let value = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError::Header)?;
    *rest = &rest[end + 1..];
    Ok(value)
}

fn length(rest: &mut &[u8]) -> Result<usize, DecodeError> {
    usize::try_from(number(rest)?).map_err(|_| DecodeError::Header)
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    if rest.len() < len {
        return Err(DecodeError::Truncated);
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8)
}

/// A script reply that is not what the script returns.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub(super) struct ReplyError(pub(super) &'static str);

/// The elements of an array reply.
pub(super) fn array(value: Value, what: &'static str) -> Result<Vec<Value>, ReplyError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        _ => Err(ReplyError(what)),
    }
}

/// A bulk or simple string.
pub(super) fn bytes(value: Value, what: &'static str) -> Result<Vec<u8>, ReplyError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        _ => Err(ReplyError(what)),
    }
}

pub(super) fn string(value: Value, what: &'static str) -> Result<String, ReplyError> {
    String::from_utf8(bytes(value, what)?).map_err(|_| ReplyError(what))
}

/// An integer, as an integer reply or as a decimal string.
pub(super) fn integer(value: Value, what: &'static str) -> Result<u64, ReplyError> {
    match value {
        Value::Int(n) => u64::try_from(n).map_err(|_| ReplyError(what)),
        other => string(other, what)?.parse().map_err(|_| ReplyError(what)),
    }
}

/// The offset a stream entry id (`OFFSET-0`) stands for.
fn entry_offset(id: &[u8]) -> Option<u64> {
    let ms = id.split(|&b| b == b'-').next()?;
    std::str::from_utf8(ms).ok()?.parse().ok()
}

/// One XRANGE/XREVRANGE entry, `[id, [field, value, ...]]`, as a
/// publication.
pub(super) fn stream_entry(value: Value) -> Result<Publication, ReplyError> {
    const WHAT: &str = "history entry";
    let mut entry = array(value, WHAT)?.into_iter();
    let (Some(id), Some(fields), None) = (entry.next(), entry.next(), entry.next()) else {
        return Err(ReplyError(WHAT));
    };
    let offset = entry_offset(&bytes(id, WHAT)?).ok_or(ReplyError(WHAT))?;
    let (mut data, mut user, mut client) = (None, None, None);
    let fields: Vec<(Value, Value)> = match fields {
        Value::Map(pairs) => pairs,
        other => {
            let mut flat = array(other, WHAT)?.into_iter();
            let mut pairs = Vec::new();
            while let Some(name) = flat.next() {
                pairs.push((name, flat.next().ok_or(ReplyError(WHAT))?));
            }
            pairs
        }
    };
    for (name, value) in fields {
        match bytes(name, WHAT)?.as_slice() {
            b"d" => data = Some(Bytes::from(bytes(value, WHAT)?)),
            b"u" => user = Some(string(value, WHAT)?),
            b"c" => client = Some(string(value, WHAT)?),
            // Fields a later version may add are ignored.
            _ => {}
        }
    }
    let info = match (user, client) {
        (Some(user), Some(client)) => Some(ClientInfo { user, client }),
        (None, None) => None,
        _ => return Err(ReplyError(WHAT)),
    };
    Ok(Publication {
        offset,
        data: data.ok_or(ReplyError(WHAT))?,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(user: &str, client: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
        }
    }

    #[test]
    fn decodes_publications_as_the_script_encodes_them() {
        let decoded = decode(b"1p42:3:e:1{\"a\":1}").unwrap();
        assert_eq!(
            decoded,
            Decoded::Publication {
                epoch: "e:1",
                publication: Publication {
                    offset: 42,
                    data: Bytes::from_static(b"{\"a\":1}"),
                    info: None,
                },
            }
        );
        let decoded = decode(b"1P7:2:5:2:abalicec9\x00\xffbinary").unwrap();
        assert_eq!(
            decoded,
            Decoded::Publication {
                epoch: "ab",
                publication: Publication {
                    offset: 7,
                    data: Bytes::from_static(b"\x00\xffbinary"),
                    info: Some(info("alice", "c9")),
                },
            }
        );
        // Empty data, empty user.
        let decoded = decode(b"1P1:1:0:1:ec").unwrap();
        let Decoded::Publication { publication, .. } = decoded else {
            panic!("not a publication");
        };
        assert_eq!(publication.info, Some(info("", "c")));
        assert!(publication.data.is_empty());
    }

    #[test]
    fn presence_events_round_trip() {
        for event in [
            Delivery::Join(info("bob", "client:1")),
            Delivery::Leave(info("", "x")),
            Delivery::Join(info("ünïcode:", "")),
        ] {
            let bytes = encode_presence(&event).unwrap();
            assert_eq!(decode(&bytes).unwrap(), Decoded::Presence(event));
        }
        let publication = Delivery::Publication {
            epoch: "e".into(),
            publication: Publication {
                offset: 1,
                data: Bytes::new(),
                info: None,
            },
        };
        assert_eq!(encode_presence(&publication), None);
    }

    #[test]
    fn rejects_malformed_messages() {
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", DecodeError::Empty),
            (b"2p1:1:e", DecodeError::Version(b'2')),
            (b"1", DecodeError::Truncated),
            (b"1x", DecodeError::Kind(b'x')),
            (b"1p", DecodeError::Header),
            (b"1p1", DecodeError::Header),
            (b"1p:1:e", DecodeError::Header),
            (b"1p-1:1:e", DecodeError::Header),
            (b"1p99999999999999999999999:1:e", DecodeError::Header),
            (b"1p1:5:e", DecodeError::Truncated),
            (b"1P1:1:9:1:eabc", DecodeError::Truncated),
            (b"1p1:1:\xff", DecodeError::Utf8),
            (b"1j3:ab", DecodeError::Truncated),
            (b"1jx:ab", DecodeError::Header),
            (b"1l1:a\xff", DecodeError::Utf8),
        ];
        for (message, error) in cases {
            assert_eq!(
                decode(message).unwrap_err(),
                *error,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn parses_stream_entries() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        let entry = Value::Array(vec![
            bulk(b"12-0"),
            Value::Array(vec![
                bulk(b"d"),
                bulk(b"data"),
                bulk(b"u"),
                bulk(b"ann"),
                bulk(b"c"),
                bulk(b"c1"),
            ]),
        ]);
        assert_eq!(
            stream_entry(entry).unwrap(),
            Publication {
                offset: 12,
                data: Bytes::from_static(b"data"),
                info: Some(info("ann", "c1")),
            }
        );
        let no_data = Value::Array(vec![bulk(b"1-0"), Value::Array(vec![])]);
        assert!(stream_entry(no_data).is_err());
        let half_info = Value::Array(vec![
            bulk(b"1-0"),
            Value::Array(vec![bulk(b"d"), bulk(b""), bulk(b"u"), bulk(b"ann")]),
        ]);
        assert!(stream_entry(half_info).is_err());
    }
}
