//! HTTP/1.1 over multiplexed streams: a hyper server answers on every stream the peer opens,
//! and a hyper client sends one request per stream, all over a single TCP connection.
//!
//! Each accepted [`braid::mux::Stream`] is an `AsyncRead + AsyncWrite`, so anything that serves
//! a tokio byte stream serves it (like muxado's `NetListener` for Go's `http.Serve`).
//!
//! ```text
//! cargo run -p braid --example mux_http
//! ```

use std::convert::Infallible;

use braid::mux::{Config, Session};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!(
        "hello from a braid stream, you asked for {}\n",
        req.uri().path()
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// Serves HTTP on every stream of every session accepted on `listener`.
async fn serve(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        // Small frames (window updates, pings) must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let session = Session::server(tcp, Config::default());
        tokio::spawn(async move {
            while let Some(stream) = session.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(hello);
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        eprintln!("stream error: {e}");
                    }
                });
            }
        });
    }
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
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener));

    // One TCP connection, many concurrent HTTP exchanges, each on its own stream.
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
                String::from_utf8_lossy(&body).trim_end()
            ))
        }));
    }
    for r in requests {
        println!("{}", r.await??);
    }
    println!("rtt {:?}", session.ping().await?);
    Ok(())
}
