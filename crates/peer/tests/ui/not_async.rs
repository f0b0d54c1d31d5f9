#[gotalk_peer::service]
trait Chat {
    async fn send(&self, text: String) -> u64;
    fn who(&self) -> Vec<String>;
}

fn main() {}
