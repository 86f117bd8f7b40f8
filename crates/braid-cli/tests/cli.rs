//! The `braid` binary end to end: keygen, serve + connect as a stdio bridge, half-close,
//! `connect --listen`, the control socket.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_braid");

struct Tmp(PathBuf);
impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("braid-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child when the test ends, pass or fail.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < within,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(dir: &Path) -> String {
    let key = dir.join("key");
    let st = Command::new(BIN).arg("keygen").arg(&key).status().unwrap();
    assert!(st.success());
    std::fs::read_to_string(&key).unwrap().trim().to_string()
}

fn serve(dir: &Path, key: &str, port: u16, forward: &str) -> Proc {
    serve_with(dir, key, port, forward, &[])
}

/// `braid serve` on 127.0.0.1:`port`, forwarding to `forward`, its control socket at
/// `control`.
fn serve_command(port: u16, forward: &str, control: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--forward",
        forward,
    ])
    .arg("--control")
    .arg(control);
    c
}

fn serve_with(dir: &Path, key: &str, port: u16, forward: &str, extra: &[&str]) -> Proc {
    let p = serve_command(port, forward, &dir.join("serve.sock"))
        .args(extra)
        .env("BRAID_KEY", key)
        .env("XDG_RUNTIME_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Listening, and its control socket bound (the two are not made in one step: a test
    // that went straight for the socket once found it missing on a loaded machine).
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !dir.join("serve.sock").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(p)
}

/// A TCP target that reads until EOF, then answers with the byte count and closes.
fn counting_target() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        s.write_all(format!("got {} bytes\n", all.len()).as_bytes())
            .unwrap();
        all
    });
    (addr, t)
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Tmp::new("keygen");
    let key = keygen(&dir.0);
    assert_eq!(key.len(), 64);
    let mode = std::fs::metadata(dir.0.join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let st = Command::new(BIN)
        .arg("keygen")
        .arg(dir.0.join("key"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!st.success());
}

#[test]
fn connect_bridges_stdio_with_half_close_both_ways() {
    bridge_stdio("bridge", &[], &[]);
}

#[test]
fn plaintext_with_checksums_bridges_stdio() {
    bridge_stdio(
        "plain",
        &["--insecure-plaintext"],
        &["--insecure-plaintext", "--checksum"],
    );
}

#[test]
fn checksum_without_plaintext_is_refused_clearly() {
    let out = Command::new(BIN)
        .args(["connect", "--checksum", "tcp://127.0.0.1:9"])
        .env("BRAID_KEY", "00".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-plaintext"), "{err}");
}

/// Sends 3 MB through `braid connect` to a target behind `braid serve` (with extra flags
/// for each) and checks the target got it all and the answer came back after the half-close.
fn bridge_stdio(name: &str, serve_flags: &[&str], connect_flags: &[&str]) {
    let dir = Tmp::new(name);
    let key = keygen(&dir.0);
    let (target, t) = counting_target();
    let port = free_port();
    let _server = serve_with(&dir.0, &key, port, &target, serve_flags);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let mut c = Proc(
        Command::new(BIN)
            .args(["connect", &format!("tcp://127.0.0.1:{port}?count=3")])
            .args(connect_flags)
            .arg("--control")
            .arg(dir.0.join("c.sock"))
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = c.0.stdin.take().unwrap();
    let d2 = data.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&d2).unwrap();
        // Dropping stdin ends the client's stream; the target answers only after that.
    });
    let mut out = String::new();
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    writer.join().unwrap();
    assert_eq!(out, format!("got {} bytes\n", data.len()));
    assert_eq!(t.join().unwrap(), data);
    assert!(wait_exit(&mut c, Duration::from_secs(15)).success());
}

#[test]
fn connect_exits_when_the_far_side_closes() {
    let dir = Tmp::new("farclose");
    let key = keygen(&dir.0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"bye\n").unwrap();
    });
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let mut c = Proc(
        Command::new(BIN)
            .args(["connect", &format!("127.0.0.1:{port}")])
            .arg("--control")
            .arg(dir.0.join("c.sock"))
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _stdin = c.0.stdin.take().unwrap(); // kept open
    let mut out = String::new();
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "bye\n");
    assert!(wait_exit(&mut c, Duration::from_secs(15)).success());
}

/// One `braid serve` port, two `braid connect`s at once: each is its own `forward` stream,
/// its own TCP connection to the target.
#[test]
fn two_connects_share_one_serve_port() {
    let dir = Tmp::new("shared");
    let key = keygen(&dir.0);
    // A target that answers each connection with its own first line, upper-cased.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = l.accept().unwrap();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                s.read_to_end(&mut all).unwrap();
                s.write_all(&all.to_ascii_uppercase()).unwrap();
            });
        }
    });
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let spawn = |name: &str| {
        Proc(
            Command::new(BIN)
                .args(["connect", &format!("tcp://127.0.0.1:{port}?count=2")])
                .arg("--control")
                .arg(dir.0.join(name))
                .env("BRAID_KEY", &key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut a = spawn("a.sock");
    let mut b = spawn("b.sock");
    a.0.stdin.take().unwrap().write_all(b"first\n").unwrap();
    b.0.stdin.take().unwrap().write_all(b"second\n").unwrap();
    let mut out_a = String::new();
    let mut out_b = String::new();
    a.0.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out_a)
        .unwrap();
    b.0.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out_b)
        .unwrap();
    assert_eq!(out_a, "FIRST\n");
    assert_eq!(out_b, "SECOND\n");
    assert!(wait_exit(&mut a, Duration::from_secs(15)).success());
    assert!(wait_exit(&mut b, Duration::from_secs(15)).success());
}

/// A malformed `--forward` target is a usage error at startup (it used to be found only when
/// the first client connected, and reported to that client).
#[test]
fn serve_refuses_a_malformed_forward_target_at_startup() {
    let dir = Tmp::new("badfwd");
    let key = keygen(&dir.0);
    for target in ["nohost", "host:99999", "host:0", "::1:22", ":22", "host:"] {
        let mut s = Proc(
            serve_command(free_port(), target, &dir.0.join("s.sock"))
                .env("BRAID_KEY", &key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let st = wait_exit(&mut s, Duration::from_secs(10));
        assert_eq!(st.code(), Some(2), "--forward {target}");
        let mut err = String::new();
        s.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(
            err.contains("--forward") && err.contains("HOST:PORT"),
            "--forward {target}: {err}"
        );
    }
}

/// The server cannot reach its target: `braid connect` fails with the server's reason.
#[test]
fn connect_reports_an_unreachable_target() {
    let dir = Tmp::new("unreach");
    let key = keygen(&dir.0);
    let dead = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &dead);
    let mut c = Proc(
        Command::new(BIN)
            .args(["connect", &format!("tcp://127.0.0.1:{port}")])
            .arg("--control")
            .arg(dir.0.join("c.sock"))
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _stdin = c.0.stdin.take().unwrap();
    let st = wait_exit(&mut c, Duration::from_secs(15));
    assert_eq!(st.code(), Some(1));
    let mut err = String::new();
    c.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("unavailable (3)") && err.contains(&dead),
        "{err}"
    );
    let mut out = Vec::new();
    c.0.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert!(out.is_empty(), "nothing on stdout");
}

fn links_cmd(sock: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("links")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "braid links {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn links_can_be_listed_added_and_removed_live() {
    let dir = Tmp::new("links");
    let key = keygen(&dir.0);
    let (target, _t) = counting_target();
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let sock = dir.0.join("c.sock");
    let mut c = Proc(
        Command::new(BIN)
            .args(["connect", &format!("127.0.0.1:{port}")])
            .arg("--control")
            .arg(&sock)
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = links_cmd(&sock, &["list"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    links_cmd(&sock, &["add", &format!("tcp://127.0.0.1:{port}?count=2")]);
    let start = Instant::now();
    loop {
        let n = links_cmd(&sock, &["list"]).lines().count();
        if n == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "links not added");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = links_cmd(&sock, &["list"])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    links_cmd(&sock, &["remove", &first]);
    let start = Instant::now();
    while links_cmd(&sock, &["list"]).lines().count() != 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "link not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let server_list = links_cmd(&dir.0.join("serve.sock"), &["list"]);
    assert!(server_list.contains("listening"), "{server_list}");
    drop(c.0.stdin.take());
    assert!(wait_exit(&mut c, Duration::from_secs(15)).success());
}

/// `connect --listen` accepts links made by someone else (here: this test, playing socat).
#[test]
fn connect_accepts_links_made_by_others() {
    let dir = Tmp::new("listen");
    let key = keygen(&dir.0);
    let (target, t) = counting_target();
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let unix = dir.0.join("links.sock");
    let mut c = Proc(
        Command::new(BIN)
            .arg("connect")
            .arg("--listen")
            .arg(format!("unix:{}", unix.display()))
            .arg("--control")
            .arg(dir.0.join("c.sock"))
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !unix.exists() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two "socat" pipes: unix socket <-> server's TCP port.
    for _ in 0..2 {
        let a = std::os::unix::net::UnixStream::connect(&unix).unwrap();
        let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let (mut a, mut b) = (a, b);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut a, &mut b);
            let _ = b.shutdown(std::net::Shutdown::Write);
        });
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut b2, &mut a2);
            let _ = a2.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"hello through socat\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    c.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert_eq!(out, "got 20 bytes\n");
    assert_eq!(t.join().unwrap(), b"hello through socat\n");
    assert!(wait_exit(&mut c, Duration::from_secs(15)).success());
}

#[test]
fn serve_without_a_key_creates_one_and_says_how_to_use_it() {
    let dir = Tmp::new("autokey");
    let port = free_port();
    let mut p = Proc(
        serve_command(port, "127.0.0.1:9", &dir.0.join("s.sock"))
            .env_remove("BRAID_KEY")
            .env("XDG_CONFIG_HOME", &dir.0)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let key = dir.0.join("braid").join("key");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(key.exists());
    let _ = p.0.kill();
    let mut err = String::new();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains("--key-file") && err.contains("BRAID_KEY"),
        "{err}"
    );
}

#[test]
fn connect_without_a_key_fails_clearly() {
    let dir = Tmp::new("nokey");
    let o = Command::new(BIN)
        .args(["connect", "127.0.0.1:9"])
        .env_remove("BRAID_KEY")
        .env("XDG_CONFIG_HOME", &dir.0)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no key"));
    assert!(o.stdout.is_empty());
}

#[test]
fn demo_verifies_its_transfer_with_a_link_killed_and_restored() {
    let start = Instant::now();
    let o = Command::new(BIN)
        .args(["demo", "--mib", "128"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("killing the"), "{out}");
    assert!(out.contains("verified: every byte arrived"), "{out}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// `braid demo | head -1`: the demo stops quietly once its stdout is gone (`println!` used to
/// panic: exit 101 and a panic message on stderr).
#[test]
fn demo_stops_quietly_when_stdout_closes() {
    let mut d = Proc(
        Command::new(BIN)
            .args(["demo", "--mib", "64"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufReader::new(d.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("braid demo:"), "{first}");
    let st = wait_exit(&mut d, Duration::from_secs(30));
    let mut err = String::new();
    d.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// A pipe whose reader is gone: what a process writing to it sees after `| head -0`.
fn closed_pipe() -> Stdio {
    let (w, r) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(r);
    Stdio::from(std::os::fd::OwnedFd::from(w))
}

/// `braid links list | head -0` and `braid keygen FILE 2>&- `-like closed pipes: the command
/// does its work and exits 0 without a panic (`print!`/`eprintln!` used to panic: exit 101).
#[test]
fn links_and_keygen_shrug_off_a_closed_output() {
    let dir = Tmp::new("closed-out");
    let key = keygen(&dir.0);
    let _server = serve(&dir.0, &key, free_port(), "127.0.0.1:9");
    let o = Command::new(BIN)
        .arg("links")
        .arg("--control")
        .arg(dir.0.join("serve.sock"))
        .arg("list")
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "links list: {err}");
    assert!(err.is_empty(), "{err}");
    let file = dir.0.join("key2");
    let st = Command::new(BIN)
        .arg("keygen")
        .arg(&file)
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0), "keygen");
    assert!(file.exists());
}

/// `braid connect` to `port` with its control socket at `control`, stdin and stdout piped.
fn connect_on(dir: &Path, key: &str, port: u16, control: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(["connect", &format!("tcp://127.0.0.1:{port}")])
            .arg("--control")
            .arg(control)
            .env("BRAID_KEY", key)
            .env("XDG_RUNTIME_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The reader of `braid connect`'s stdout goes away (`braid connect ... | head -c 10`) while
/// stdin stays open: the process exits (before session 5 the error path dropped the runtime,
/// which waited for the blocking stdin read for ever).
#[test]
fn connect_exits_when_stdout_closes() {
    let dir = Tmp::new("epipe");
    let key = keygen(&dir.0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let chunk = vec![b'x'; 65536];
        while s.write_all(&chunk).is_ok() {}
    });
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let mut c = connect_on(&dir.0, &key, port, &dir.0.join("c.sock"));
    let _stdin = c.0.stdin.take().unwrap(); // kept open, like a terminal
    let mut out = c.0.stdout.take().unwrap();
    let mut buf = [0u8; 10];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    // Still running 20 s after its stdout closed: fails.
    wait_exit(&mut c, Duration::from_secs(20));
}

/// `braid serve` is stopped the usual way (SIGTERM / Ctrl-C): it exits and removes its control
/// socket (it used to stay, and `braid links` without --control then found a dead socket).
#[test]
fn serve_removes_its_control_socket_on_sigterm() {
    let dir = Tmp::new("stale");
    let key = keygen(&dir.0);
    let port = free_port();
    let sock = dir.0.join("serve.sock");
    let mut s = serve(&dir.0, &key, port, "127.0.0.1:9");
    assert!(sock.exists());
    let pid = s.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_exit(&mut s, Duration::from_secs(10));
    assert!(
        !sock.exists(),
        "control socket {} left behind after SIGTERM",
        sock.display()
    );
}

/// `--control PATH` naming an existing regular file (a typo, a wrong argument order) is an
/// error; the file is kept (it used to be deleted).
#[test]
fn a_control_path_naming_a_file_is_an_error_and_the_file_is_kept() {
    let dir = Tmp::new("clobber");
    let key = keygen(&dir.0);
    let port = free_port();
    let precious = dir.0.join("notes.txt");
    std::fs::write(&precious, b"important").unwrap();
    let mut s = Proc(
        serve_command(port, "127.0.0.1:9", &precious)
            .env("BRAID_KEY", &key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let _ = s.0.kill();
    let _ = s.0.wait();
    assert_eq!(
        std::fs::read(&precious).ok().as_deref(),
        Some(&b"important"[..]),
        "--control deleted an existing regular file"
    );
}

/// Two `braid connect`s given the same --control path: the second is refused (it used to take
/// the path over silently, and the first deleted the second's socket when it exited).
#[test]
fn a_second_process_on_a_live_control_path_is_refused() {
    let dir = Tmp::new("shared-ctl");
    let key = keygen(&dir.0);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all);
            });
        }
    });
    let port = free_port();
    let _server = serve(&dir.0, &key, port, &target);
    let sock = dir.0.join("c.sock");
    let mut a = connect_on(&dir.0, &key, port, &sock);
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = connect_on(&dir.0, &key, port, &sock);
    let st = wait_exit(&mut b, Duration::from_secs(10));
    assert!(!st.success());
    // The first one is still reachable on its socket.
    let o = Command::new(BIN)
        .args(["links", "--control"])
        .arg(&sock)
        .arg("list")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(a.0.stdin.take());
    let st = wait_exit(&mut a, Duration::from_secs(15));
    assert!(st.success());
    assert!(!sock.exists(), "A removes its socket when it exits");
}

/// Without XDG_RUNTIME_DIR the control socket goes to `$TMPDIR/braid-UID`. When that exists
/// but is a symlink, another user's, or open to others, `serve` and `links` refuse it (they
/// used to use it: someone else's directory let them replace or spoof the socket, and a
/// symlink was followed and its target chmodded). A missing one is made with mode 0700.
#[test]
fn an_unsafe_runtime_dir_fallback_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = Tmp::new("rundir");
    let key = keygen(&tmp.0);
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let dir = tmp.0.join(format!("braid-{uid}"));
    let elsewhere = tmp.0.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    let braid = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", &tmp.0)
            .env("BRAID_KEY", &key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let serve = |port: u16| {
        let f = format!("127.0.0.1:{port}");
        braid(&["serve", "--listen", &f, "--forward", "127.0.0.1:9"])
    };
    let mut cases = vec!["is a symlink", "is open to other users"];
    if uid == 0 {
        cases.push("belongs to uid 65534");
    } else {
        eprintln!("not root: the case of a directory owned by someone else is skipped");
    }
    for why in cases {
        if why == "is a symlink" {
            std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        } else {
            std::fs::create_dir(&dir).unwrap();
            let (mode, owner) = match why {
                "is open to other users" => (0o777, uid),
                _ => (0o700, 65534),
            };
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(&dir, Some(owner), None).unwrap();
        }
        let mut s = Proc(serve(free_port()).spawn().unwrap());
        let st = wait_exit(&mut s, Duration::from_secs(10));
        let mut err = String::new();
        s.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(st.code(), Some(1), "{why}: {err}");
        assert!(
            err.contains(why) && err.contains("XDG_RUNTIME_DIR"),
            "{why}: {err}"
        );
        let o = braid(&["links", "list"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(why),
            "links, {why}: {err}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "{why}");
        assert_eq!(
            std::fs::metadata(&elsewhere).unwrap().mode() & 0o777,
            0o755,
            "{why}: the symlink's target was chmodded"
        );
        let _ = std::fs::remove_file(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // None there: made, private, and used.
    let port = free_port();
    let _s = Proc(serve(port).spawn().unwrap());
    let start = Instant::now();
    while std::fs::read_dir(&dir).map_or(0, |d| d.count()) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let o = braid(&["links", "list"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `--control PATH`: the socket is mode 0600 whatever the umask (it was made with the umask's
/// mode, 0777 under `umask 000`, and `links add exec:...` runs a command).
#[test]
fn an_explicit_control_socket_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Tmp::new("ctl-mode");
    let key = keygen(&dir.0);
    let sock = dir.0.join("s.sock");
    let port = free_port();
    let _s = Proc(
        Command::new("sh")
            .args(["-c", "umask 000 && exec \"$0\" \"$@\"", BIN])
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--forward", "127.0.0.1:9", "--control"])
            .arg(&sock)
            .env("BRAID_KEY", &key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");
}

/// Whoever connects to a control socket is checked by uid (`SO_PEERCRED`), so that a socket
/// others can reach (made world-writable here; a shared directory, or the moment between bind
/// and chmod) still obeys only its user: another user's `links list` is refused with a reason.
/// Needs root, to run `braid links` as another user.
#[test]
fn the_control_socket_refuses_other_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("skipped: not root, cannot connect as another user");
        return;
    }
    let dir = Tmp::new("peercred");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = keygen(&dir.0);
    let _s = serve(&dir.0, &key, free_port(), "127.0.0.1:9");
    let sock = dir.0.join("serve.sock");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A copy of the binary the other user can reach: the build directory may be under a
    // home directory it may not enter (a CI clone as root).
    let bin = dir.0.join("braid");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(&bin)
        .args(["links", "--control"])
        .arg(&sock)
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "uid 65534 was obeyed: {err}");
    assert!(err.contains("uid 65534 may not use"), "{err}");
    assert!(o.stdout.is_empty());
    assert!(links_cmd(&sock, &["list"]).contains("listening"));
}
