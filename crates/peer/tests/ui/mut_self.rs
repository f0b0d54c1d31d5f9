#[gotalk_peer::service]
trait Chat {
    async fn send(&mut self, text: String) -> u64;
}

fn main() {}
