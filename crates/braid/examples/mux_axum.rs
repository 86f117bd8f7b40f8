//! An axum app served over multiplexed streams: every stream the peer opens is one HTTP/1.1
//! connection to the same `Router`, all of them inside a single TCP connection (or a braid
//! aggregated connection: anything `Session::server` runs over).
//!
//! The adapter is the few lines of `StreamListener`: axum's `serve` takes any
//! `axum::serve::Listener`, and a session's `accept` is exactly that (muxado's `NetListener`).
//!
//! ```text
//! cargo run -p braid --example mux_axum
//! ```

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use braid::mux::{Config, Session, Stream, StreamId};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// A session's incoming streams as an axum listener.
struct StreamListener(Session);

impl axum::serve::Listener for StreamListener {
    type Io = Stream;
    type Addr = StreamId;

    async fn accept(&mut self) -> (Stream, StreamId) {
        match self.0.accept().await {
            Some(stream) => {
                let id = stream.id();
                (stream, id)
            }
            // The session is over: no stream will come any more (end the server with
            // `with_graceful_shutdown`).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<StreamId> {
        Err(std::io::Error::other(
            "a stream listener has no local address",
        ))
    }
}

async fn item(Path(n): Path<u32>) -> String {
    format!("item {n}, served by axum over a braid stream")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    run().await
}

/// Run by `cargo test` too (`test = true` for this example in Cargo.toml).
#[tokio::test]
async fn requests_are_answered() {
    run().await.unwrap();
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = tcp.accept().await {
            // Small frames (window updates, pings) must not wait for Nagle's algorithm.
            let _ = conn.set_nodelay(true);
            let app = Router::new().route("/item/{n}", get(item));
            let session = Session::server(conn, Config::default());
            tokio::spawn(async move { axum::serve(StreamListener(session), app).await });
        }
    });

    // One TCP connection, one stream per request.
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let session = Session::client(tcp, Config::default());
    let mut requests = Vec::new();
    for i in 0..5 {
        let stream = session.open().await?;
        requests.push(tokio::spawn(async move {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = Request::get(format!("/item/{i}"))
                .header("host", "braid")
                .body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(format!(
                "{status} {}",
                String::from_utf8_lossy(&body)
            ))
        }));
    }
    for r in requests {
        let line = r.await??;
        assert!(line.starts_with("200 OK item"), "{line}");
        println!("{line}");
    }
    Ok(())
}
