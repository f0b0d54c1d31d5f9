#[gotalk_peer::service(prefx = "chat")]
trait Chat {
    async fn send(&self, text: String) -> u64;
}

fn main() {}
