//! Structured: an arbitrary valid message encodes and decodes back to itself
//! through every API, and its prefixes ask for no more than is missing.

#![no_main]

use bytes::BytesMut;
use gotalk_proto::{DecodeLimits, Decoded, GotalkCodec, Message, decode, decode_bytes};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

const LIMITS: DecodeLimits = DecodeLimits::with_max_payload(u32::MAX);

fuzz_target!(|msg: Message| {
    let wire = msg
        .to_vec()
        .expect("arbitrary messages respect the wire limits");
    assert_eq!(wire.len(), msg.encoded_len());

    let mut header = Vec::new();
    msg.encode_header(&mut header).unwrap();
    assert_eq!(header.len(), msg.header_len());
    assert_eq!(&wire[..header.len()], &header[..]);

    let mut framed = BytesMut::new();
    Encoder::encode(&mut GotalkCodec::new(LIMITS), &msg, &mut framed).unwrap();
    assert_eq!(&framed[..], &wire[..]);

    assert_eq!(
        decode(&wire, &LIMITS).unwrap(),
        Decoded::Complete(msg.as_borrowed(), wire.len())
    );
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        decode_bytes(&mut buf, &LIMITS).unwrap(),
        Decoded::Complete(msg.clone(), wire.len())
    );
    assert!(buf.is_empty());
    assert_eq!(
        GotalkCodec::new(LIMITS).decode(&mut framed).unwrap(),
        Some(msg.clone())
    );

    // A reader that reads exactly what Incomplete asks for lands on the frame end.
    let mut have = 0;
    for _ in 0..=wire.len() {
        match decode(&wire[..have], &LIMITS).unwrap() {
            Decoded::Complete(_, used) => {
                assert_eq!((have, used), (wire.len(), wire.len()));
                return;
            }
            Decoded::Incomplete(n) => {
                assert!(n > 0 && have + n <= wire.len(), "asked {n} at {have}");
                have += n;
            }
        }
    }
    panic!("never completed");
});
