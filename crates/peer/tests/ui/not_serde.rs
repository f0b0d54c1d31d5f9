struct Secret;

#[gotalk_peer::service]
trait Chat {
    async fn send(&self, text: String) -> u64;
    async fn reveal(&self, secret: Secret) -> u64;
}

fn main() {}
