//! The protocol description's `greet` example: a server exposes the JSON
//! operation `greet`, a client connects over TCP and calls it.
//!
//! ```text
//! cargo run -p gotalk-peer --example greet                            # both, in one process
//! cargo run -p gotalk-peer --example greet -- server 127.0.0.1:1234   # serve until killed
//! cargo run -p gotalk-peer --example greet -- client 127.0.0.1:1234   # one request, then exit
//! ```
//!
//! The Go original, for comparison:
//!
//! ```go
//! gotalk.Handle("greet", func(in GreetIn) (GreetOut, error) {
//!   return GreetOut{"Hello " + in.Name}, nil
//! })
//! gotalk.Serve("tcp", "localhost:1234")
//! ...
//! s, _ := gotalk.Connect("tcp", "localhost:1234")
//! s.Request("greet", GreetIn{"Rasmus"}, &greeting)
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Input of `greet`: `{"name": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
struct GreetIn {
    name: String,
}

/// Result of `greet`: `{"greeting": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
struct GreetOut {
    greeting: String,
}

fn server_handlers() -> Handlers {
    Handlers::new().json("greet", |ctx, input: GreetIn| async move {
        println!(
            "server: greet {:?} from {}",
            input.name,
            ctx.peer().remote_addr().unwrap_or("?")
        );
        Ok::<_, HandlerError>(GreetOut {
            greeting: format!("Hello {}", input.name),
        })
    })
}

async fn client(addr: &str) -> Result<(), BoxError> {
    let peer = Peer::connect(addr, Handlers::new(), Config::default()).await?;
    let greeting: GreetOut = peer
        .request_json(
            "greet",
            &GreetIn {
                name: "Rasmus".into(),
            },
        )
        .await?;
    println!("client: greeting: {greeting:?}");
    peer.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => {
            let server = Server::bind("127.0.0.1:0", server_handlers(), Config::default())
                .await?
                .spawn();
            println!("server: listening on {}", server.local_addr());
            client(&server.local_addr().to_string()).await?;
            server.shutdown().await;
            Ok(())
        }
        ["server", addr] => {
            let server = Server::bind(addr, server_handlers(), Config::default()).await?;
            println!("server: listening on {}", server.local_addr());
            server.serve().await;
            Ok(())
        }
        ["client", addr] => client(addr).await,
        _ => Err("usage: greet [server ADDR | client ADDR]".into()),
    }
}
