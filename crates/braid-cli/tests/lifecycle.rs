//! The `braid` processes' lifecycle: exiting when stdout closes, stopping on a signal, and
//! their control sockets (never deleting a file that is not a stale socket of theirs).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_braid");

struct Tmp(PathBuf);
impl Tmp {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("braid-lifecycle-{name}-{}", std::process::id()));
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

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > within {
            return None;
        }
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
    assert!(
        Command::new(BIN)
            .arg("keygen")
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    std::fs::read_to_string(&key).unwrap().trim().to_string()
}

fn serve(dir: &Path, key: &str, port: u16, forward: &str, control: &Path) -> Proc {
    let p = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--forward",
            forward,
        ])
        .arg("--control")
        .arg(control)
        .env("BRAID_KEY", key)
        .env("XDG_RUNTIME_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The control socket is bound right after the listener.
    std::thread::sleep(Duration::from_millis(200));
    Proc(p)
}

fn connect(dir: &Path, key: &str, port: u16, control: &Path) -> Proc {
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
    let _server = serve(&dir.0, &key, port, &target, &dir.0.join("serve.sock"));
    let mut c = connect(&dir.0, &key, port, &dir.0.join("c.sock"));
    let _stdin = c.0.stdin.take().unwrap(); // kept open, like a terminal
    let mut out = c.0.stdout.take().unwrap();
    let mut buf = [0u8; 10];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    assert!(
        wait_exit(&mut c, Duration::from_secs(20)).is_some(),
        "braid connect still running 20 s after its stdout closed"
    );
}

/// `braid serve` is stopped the usual way (SIGTERM / Ctrl-C): it exits and removes its control
/// socket (it used to stay, and `braid links` without --control then found a dead socket).
#[test]
fn serve_removes_its_control_socket_on_sigterm() {
    let dir = Tmp::new("stale");
    let key = keygen(&dir.0);
    let port = free_port();
    let sock = dir.0.join("serve.sock");
    let mut s = serve(&dir.0, &key, port, "127.0.0.1:9", &sock);
    assert!(sock.exists());
    let pid = s.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(wait_exit(&mut s, Duration::from_secs(10)).is_some());
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
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--forward",
                "127.0.0.1:9",
            ])
            .arg("--control")
            .arg(&precious)
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
    let _server = serve(&dir.0, &key, port, &target, &dir.0.join("serve.sock"));
    let sock = dir.0.join("c.sock");
    let mut a = connect(&dir.0, &key, port, &sock);
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = connect(&dir.0, &key, port, &sock);
    let st = wait_exit(&mut b, Duration::from_secs(10)).expect("the second process is refused");
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
    let st = wait_exit(&mut a, Duration::from_secs(15)).expect("A did not exit");
    assert!(st.success());
    assert!(!sock.exists(), "A removes its socket when it exits");
}
