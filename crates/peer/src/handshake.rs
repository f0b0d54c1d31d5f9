//! The version exchange that opens every connection.

use std::{io, time::Duration};

use bytes::Bytes;
use gotalk_proto::{
    Decoded, Message, ProtocolErrorCode, VERSION_BYTES, check_version, decode_version,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::timeout,
};

use crate::{Error, HandshakeError};

/// How long a refusal may take to reach the peer.
const REFUSAL_FLUSH: Duration = Duration::from_secs(2);

/// Exchanges versions: writes ours, reads the peer's. On a version we do not
/// speak, tells the peer with ProtocolError 1 and fails.
pub(crate) async fn handshake<T>(io: &mut T, limit: Duration) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        io.write_all(&VERSION_BYTES).await?;
        io.flush().await?;
        let mut version = [0u8; 2];
        io.read_exact(&mut version).await?;
        Ok::<_, io::Error>(version)
    };
    let version = timeout(limit, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .map_err(HandshakeError::Io)?;
    let (code, error) = match decode_version(&version) {
        Ok(Decoded::Complete(v, _)) if check_version(v).is_ok() => return Ok(()),
        Ok(Decoded::Complete(v, _)) => (
            ProtocolErrorCode::Unsupported,
            HandshakeError::UnsupportedVersion { version: v },
        ),
        Ok(Decoded::Incomplete(_)) => unreachable!("two bytes are a whole version"),
        Err(e) => (
            ProtocolErrorCode::InvalidMessage,
            HandshakeError::Malformed(e),
        ),
    };
    let refusal = Message::<Bytes>::ProtocolError { code }
        .to_vec()
        .expect("a ProtocolError always encodes");
    let _ = timeout(REFUSAL_FLUSH, async {
        io.write_all(&refusal).await?;
        io.shutdown().await
    })
    .await;
    Err(error.into())
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Self::Handshake(e)
    }
}
