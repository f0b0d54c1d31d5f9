#[derive(Debug)]
struct Oops;

#[gotalk_peer::service]
trait Chat {
    async fn send(&self, text: String) -> Result<u64, Oops>;
}

fn main() {}
