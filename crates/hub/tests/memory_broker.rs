//! `MemoryBroker` keeps the same broker contract as `RedisBroker`: the
//! shared suite of `support/contract.rs`, on one node (a memory broker
//! serves one process).

#[path = "support/contract.rs"]
mod contract;

use std::sync::Arc;

use contract::Node;
use gotalk_hub::broker::memory::MemoryBroker;

macro_rules! contract_tests {
    ($($name:ident => |$nodes:ident| $check:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let nodes = [Node::start(Arc::new(MemoryBroker::new())).await];
            let $nodes = &nodes[..];
            $check.await;
        }
    )*};
}

contract_tests! {
    offsets_increase => |n| contract::offsets_increase(n);
    deliveries_arrive_once_in_order => |n| contract::deliveries_reach_every_node_once_in_order(n, 300);
    presence_events_reach_subscribers => |n| contract::presence_events_reach_subscribers(n);
    unsubscribe_stops_deliveries => |n| contract::unsubscribe_stops_deliveries(n);
    history_keeps_the_last_size => |n| contract::history_keeps_the_last_size(n);
    history_since_tells_what_was_missed => |n| contract::history_since_tells_what_was_missed(n);
    a_fresh_channel_position_is_continued => |n| contract::a_fresh_channel_position_is_continued(n);
    history_expires => |n| contract::history_expires(n);
    presence_is_listed => |n| contract::presence_is_cluster_wide(n);
    presence_entries_expire => |n| contract::presence_entries_expire(n);
}
