//! Request ID allocation: a little-endian counter that wraps around,
//! skipping IDs still in flight.

use bytes::Bytes;

use super::{
    config, id,
    pair::{OnRequest, Pair},
};
use crate::core::Reply;

#[test]
fn ids_count_up_and_skip_those_in_flight_after_wrapping() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (zero, zero_id) = p.a.request("op", b"");
    assert_eq!(zero_id, id(0));
    p.a.core.tables.skip_ids_to(u32::MAX - 1);
    let (last, last_id) = p.a.request("op", b"");
    let (max, max_id) = p.a.stream_request("op");
    let (one, one_id) = p.a.request("op", b"");
    assert_eq!(
        [last_id, max_id, one_id],
        [id(u32::MAX - 1), id(u32::MAX), id(1)],
        "0 is in flight"
    );
    p.step();
    let seen: Vec<_> = p.b.requests.iter().map(|r| r.0).collect();
    assert_eq!(seen, [id(0), id(u32::MAX - 1), id(u32::MAX), id(1)]);
    // Answers in another order reach the right callers.
    for (n, call) in [one_id, zero_id, last_id].into_iter().enumerate() {
        p.b.answer(call, Reply::Value(Bytes::from(vec![n as u8])));
    }
    p.b.answer(max_id, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.value_of(one), [0u8][..]);
    assert_eq!(p.a.value_of(zero), [1u8][..]);
    assert_eq!(p.a.value_of(last), [2u8][..]);
    assert_eq!(p.a.data_of(max), (Vec::new(), true));
    // Once 0 is answered it is given out again.
    p.a.core.tables.skip_ids_to(0);
    assert_eq!(p.a.request("op", b"").1, id(0));
}
