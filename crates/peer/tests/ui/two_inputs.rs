#[gotalk_peer::service]
trait Chat {
    async fn send(&self, room: String, text: String) -> u64;
}

fn main() {}
