#[gotalk_peer::service]
trait Chat {
    async fn send(&self, text: String) -> u64;
    #[op(name = "send")]
    async fn post(&self, text: String) -> u64;
}

fn main() {}
