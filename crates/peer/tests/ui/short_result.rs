#[gotalk_peer::service]
trait Chat {
    async fn send(&self, text: String) -> std::io::Result<u64>;
}

fn main() {}
