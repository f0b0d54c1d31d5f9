#[gotalk_peer::service]
trait Chat {
    #[notification]
    async fn typing(&self, who: String) -> bool;
}

fn main() {}
