//! The JSON of docs/hub.md: requests, results, and the payloads of the
//! notifications that carry a channel's deliveries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    HubError,
    broker::{ClientInfo, History, Publication, StreamPosition},
};

/// Parses a request payload (errors are `invalid request: ...`).
pub(crate) fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, HubError> {
    serde_json::from_slice(payload).map_err(|e| HubError::InvalidRequest(e.to_string()))
}

/// Encodes a result.
pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    // Our result types hold only strings, numbers and valid raw JSON.
    Bytes::from(serde_json::to_vec(value).expect("hub results always encode"))
}

#[derive(Deserialize)]
pub(crate) struct AuthIn {
    pub(crate) token: String,
}

#[derive(Serialize)]
pub(crate) struct AuthOut<'a> {
    pub(crate) user: &'a str,
    pub(crate) client: &'a str,
    pub(crate) expires: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct SubscribeIn {
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) since: Option<StreamPosition>,
    #[serde(default)]
    pub(crate) presence: bool,
    #[serde(default)]
    pub(crate) events: bool,
}

/// The result of `subscribe`. `publications` are already encoded `P`s.
pub(crate) struct SubscribeOut {
    pub(crate) position: StreamPosition,
    pub(crate) recovered: bool,
    pub(crate) publications: Vec<Bytes>,
}

impl SubscribeOut {
    /// `{"offset":..,"epoch":..,"recovered":..,"publications":[P,..]}`,
    /// with each `P` copied in as it was encoded for notifications.
    pub(crate) fn encode(&self) -> Bytes {
        let len = 96 + self.publications.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(br#"{"offset":"#);
        out.extend_from_slice(self.position.offset.to_string().as_bytes());
        out.extend_from_slice(br#","epoch":"#);
        serde_json::to_writer(&mut out, &self.position.epoch).expect("a string encodes");
        out.extend_from_slice(br#","recovered":"#);
        out.extend_from_slice(if self.recovered { b"true" } else { b"false" });
        out.extend_from_slice(br#","publications":["#);
        splice(&mut out, &self.publications);
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }
}

/// The result of `history`:
/// `{"publications":[P,..],"offset":..,"epoch":..,"complete":..}`.
pub(crate) fn history(history: &History) -> Bytes {
    let epoch = &history.position.epoch;
    let publications: Vec<Bytes> = history
        .publications
        .iter()
        .map(|p| publication(epoch, p))
        .collect();
    let mut out = Vec::with_capacity(96 + publications.iter().map(|p| p.len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"publications":["#);
    splice(&mut out, &publications);
    out.extend_from_slice(br#"],"offset":"#);
    out.extend_from_slice(history.position.offset.to_string().as_bytes());
    out.extend_from_slice(br#","epoch":"#);
    serde_json::to_writer(&mut out, epoch).expect("a string encodes");
    out.extend_from_slice(br#","complete":"#);
    out.extend_from_slice(if history.complete {
        b"true}"
    } else {
        b"false}"
    });
    Bytes::from(out)
}

/// Appends encoded values, comma-separated.
fn splice(out: &mut Vec<u8>, values: &[Bytes]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v);
    }
}

#[derive(Deserialize)]
pub(crate) struct ChannelIn {
    pub(crate) channel: String,
}

#[derive(Deserialize)]
pub(crate) struct PublishIn<'a> {
    pub(crate) channel: String,
    #[serde(borrow)]
    pub(crate) data: &'a RawValue,
    #[serde(default)]
    pub(crate) others: bool,
}

#[derive(Serialize)]
pub(crate) struct PositionOut<'a> {
    pub(crate) offset: u64,
    pub(crate) epoch: &'a str,
}

#[derive(Serialize)]
pub(crate) struct PresenceOut<'a> {
    pub(crate) clients: &'a [ClientInfo],
}

#[derive(Deserialize)]
pub(crate) struct HistoryIn {
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) since: Option<StreamPosition>,
    #[serde(default)]
    pub(crate) limit: Option<usize>,
}

/// `P`: one publication as clients see it.
#[derive(Serialize)]
struct PublicationOut<'a> {
    offset: u64,
    epoch: &'a str,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a ClientInfo>,
}

/// Encodes `P` for a publication of `epoch`.
///
/// Data that is not JSON (published on the broker by something other
/// than a hub) is sent as a JSON string of its text, so that every `P` is
/// valid JSON and no offset goes missing.
pub(crate) fn publication(epoch: &str, publication: &Publication) -> Bytes {
    let fallback;
    let data = match serde_json::from_slice::<&RawValue>(&publication.data) {
        Ok(raw) => raw,
        Err(_) => {
            let text = String::from_utf8_lossy(&publication.data);
            fallback = serde_json::value::to_raw_value(&text).expect("a string encodes");
            &*fallback
        }
    };
    encode(&PublicationOut {
        offset: publication.offset,
        epoch,
        data,
        info: publication.info.as_ref(),
    })
}

/// A presence event, encoded externally tagged:
/// `{"join": {...}}` or `{"leave": {...}}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PresenceEvent<'a> {
    Join(&'a ClientInfo),
    Leave(&'a ClientInfo),
}

/// Encodes a presence event.
pub(crate) fn presence_event(event: PresenceEvent<'_>) -> Bytes {
    encode(&event)
}

/// `{"unsubscribed": "reason"}`.
pub(crate) fn unsubscribed(reason: &str) -> Bytes {
    #[derive(Serialize)]
    struct Unsubscribed<'a> {
        unsubscribed: &'a str,
    }
    encode(&Unsubscribed {
        unsubscribed: reason,
    })
}

/// `{"lost": {"offset": .., "epoch": ..}}`.
pub(crate) fn lost(position: &StreamPosition) -> Bytes {
    #[derive(Serialize)]
    struct Lost<'a> {
        lost: &'a StreamPosition,
    }
    encode(&Lost { lost: position })
}

/// Whether `data` is one JSON value.
pub(crate) fn check_json(data: &[u8]) -> Result<(), HubError> {
    serde_json::from_slice::<&RawValue>(data)
        .map(drop)
        .map_err(|e| HubError::InvalidData(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_embed_their_data_as_published() {
        let p = Publication {
            offset: 8,
            data: Bytes::from_static(br#"{"text": "hi"}"#),
            info: Some(ClientInfo {
                user: "u".into(),
                client: "c".into(),
            }),
        };
        assert_eq!(
            publication("e", &p),
            r#"{"offset":8,"epoch":"e","data":{"text": "hi"},"info":{"user":"u","client":"c"}}"#
        );
        let raw = Publication {
            offset: 1,
            data: Bytes::from_static(b"not json"),
            info: None,
        };
        assert_eq!(
            publication("e", &raw),
            r#"{"offset":1,"epoch":"e","data":"not json"}"#
        );
    }

    #[test]
    fn subscribe_results_splice_encoded_publications() {
        let out = SubscribeOut {
            position: StreamPosition {
                offset: 7,
                epoch: "e\"x".into(),
            },
            recovered: true,
            publications: vec![
                Bytes::from_static(b"{\"offset\":6}"),
                Bytes::from_static(b"{\"offset\":7}"),
            ],
        };
        let v: serde_json::Value = serde_json::from_slice(&out.encode()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"offset": 7, "epoch": "e\"x", "recovered": true,
                "publications": [{"offset": 6}, {"offset": 7}]})
        );
    }

    #[test]
    fn events() {
        let info = ClientInfo {
            user: "u".into(),
            client: "c".into(),
        };
        assert_eq!(
            presence_event(PresenceEvent::Join(&info)),
            r#"{"join":{"user":"u","client":"c"}}"#
        );
        assert_eq!(unsubscribed("bye"), r#"{"unsubscribed":"bye"}"#);
        let pos = StreamPosition {
            offset: 9,
            epoch: "e2".into(),
        };
        assert_eq!(lost(&pos), r#"{"lost":{"offset":9,"epoch":"e2"}}"#);
    }
}
