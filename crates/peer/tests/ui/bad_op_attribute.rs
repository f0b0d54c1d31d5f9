#[gotalk_peer::service]
trait Chat {
    #[op(nmae = "send")]
    async fn send(&self, text: String) -> u64;
}

fn main() {}
