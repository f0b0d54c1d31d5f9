//! Uploads and downloads with stream requests and streamed results.
//!
//! ```text
//! cargo run -p gotalk-peer --example stream
//! ```
//!
//! - `upload` (stream request → streamed result): the client sends a
//!   generated 1 MiB file in 64 KiB parts; the server answers with a JSON
//!   summary (size and checksum) as the first result part, then sends the
//!   file back in parts. Memory stays bounded on both sides: at most
//!   `Config::stream_buffer_parts` parts wait in each direction.
//! - `download` (single request → streamed result): the client asks for N
//!   bytes; the server streams them. `Peer::request` collects a streamed
//!   result into one buffer; `Peer::stream_request` hands out the parts.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FILE_SIZE: usize = 1024 * 1024;
const PART: usize = 64 * 1024;

/// First result part of `upload`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Summary {
    bytes: u64,
    checksum: String,
}

/// Input of `download`.
#[derive(Debug, Serialize, Deserialize)]
struct DownloadIn {
    bytes: usize,
}

/// FNV-1a, 64 bits: enough to check that bytes came through unchanged.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Deterministic file contents, generated in memory.
fn generate(len: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn server_handlers() -> Handlers {
    Handlers::new()
        .stream("upload", |_ctx, mut parts, mut results| async move {
            // The parts are `Bytes` slices of the connection's read buffer:
            // keeping them costs no copy.
            let mut file = Vec::new();
            let mut hash = Fnv::new();
            let mut bytes = 0u64;
            while let Some(part) = parts.next().await {
                let part = part?;
                hash.update(&part);
                bytes += part.len() as u64;
                file.push(part);
            }
            let summary = Summary {
                bytes,
                checksum: hash.hex(),
            };
            results.send(serde_json::to_vec(&summary)?).await?;
            for part in file {
                results.send(part).await?;
            }
            // Returning Ok ends the result stream (an empty `S` on the wire).
            Ok::<_, HandlerError>(())
        })
        .stream("download", |_ctx, mut parts, mut results| async move {
            // A single request arrives as a one-part stream.
            let input = parts.next().await.ok_or("missing input")??;
            let input: DownloadIn = serde_json::from_slice(&input)?;
            let data = generate(input.bytes.min(16 * FILE_SIZE));
            let mut at = 0;
            while at < data.len() {
                let end = (at + PART).min(data.len());
                results.send(data.slice(at..end)).await?;
                at = end;
            }
            Ok::<_, HandlerError>(())
        })
}

async fn upload(peer: &Peer) -> Result<(), BoxError> {
    let file = generate(FILE_SIZE);
    let mut local = Fnv::new();
    local.update(&file);

    let (mut writer, mut results) = peer.stream_request("upload").await?;
    // Send and receive at once: the server answers only after the last part,
    // but in general a stream handler may answer while parts still arrive.
    let send = async {
        for chunk in file.chunks(PART) {
            writer.send(file.slice_ref(chunk)).await?;
        }
        writer.end().await
    };
    let receive = async {
        let first = results.next().await.ok_or("no result")??;
        let summary: Summary = serde_json::from_slice(&first)?;
        let mut back = BytesMut::with_capacity(FILE_SIZE);
        let mut parts = 0;
        while let Some(part) = results.next().await {
            back.extend_from_slice(&part?);
            parts += 1;
        }
        Ok::<_, BoxError>((summary, back.freeze(), parts))
    };
    let (sent, received) = tokio::join!(send, receive);
    sent?;
    let (summary, back, parts) = received?;
    println!(
        "upload: sent {} bytes in {} parts; server says {summary:?}; got {} bytes back in {parts} parts",
        file.len(),
        file.len().div_ceil(PART),
        back.len()
    );
    if summary.checksum != local.hex() || back != file {
        return Err("upload: checksum or echoed data differ".into());
    }
    Ok(())
}

async fn download(peer: &Peer) -> Result<(), BoxError> {
    let want = 3 * PART + 100;
    let request = serde_json::to_vec(&DownloadIn { bytes: want })?;

    // Streamed result collected into one buffer by `request`.
    let whole = peer.request("download", request.clone()).await?;

    // The same result part by part: a stream request with one part.
    let (mut writer, mut results) = peer.stream_request("download").await?;
    writer.send(request).await?;
    writer.end().await?;
    let mut sizes = Vec::new();
    while let Some(part) = results.next().await {
        sizes.push(part?.len());
    }
    println!(
        "download: {} bytes collected by request(); part sizes via stream_request(): {sizes:?}",
        whole.len()
    );
    if whole != generate(want) || sizes.iter().sum::<usize>() != want {
        return Err("download: data differ".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Server::bind("127.0.0.1:0", server_handlers(), Config::default())
        .await?
        .spawn();
    let peer = Peer::connect(
        server.local_addr().to_string(),
        Handlers::new(),
        Config::default(),
    )
    .await?;
    upload(&peer).await?;
    download(&peer).await?;
    peer.close().await;
    server.shutdown().await;
    println!("ok");
    Ok(())
}
