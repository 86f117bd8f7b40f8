//! Real OpenSSH through `braid connect` as ProxyCommand: an sshd on loopback in a temporary
//! directory with generated keys, braid serve in front of it, 4 links.
//!
//! Skips with a message when sshd is not installed, except under CI (CI=true), where it fails.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_braid");

struct Cleanup(Vec<Child>, PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_sshd() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn wait_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

#[test]
fn openssh_through_braid_connect_as_proxy_command() {
    let Some(sshd) = find_sshd().filter(|_| Command::new("ssh").arg("-V").output().is_ok()) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "sshd/ssh not installed under CI (.ci/run installs openssh-server and openssh-client)"
            );
        }
        eprintln!(
            "SKIPPED: OpenSSH (sshd, ssh) not installed; apt-get install openssh-server openssh-client"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("braid-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup(Vec::new(), dir.clone());
    keygen(&dir.join("host"));
    keygen(&dir.join("user"));
    std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let ssh_port = free_port();
    let config = dir.join("sshd_config");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(
        f,
        "Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin yes\nPubkeyAuthentication yes\nLogLevel ERROR",
        d = dir.display()
    )
    .unwrap();
    if std::fs::metadata("/run").is_ok() {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    guard.0.push(
        Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd"),
    );
    wait_port(ssh_port, "sshd");

    let key = dir.join("braid.key");
    assert!(
        Command::new(BIN)
            .arg("keygen")
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let key = std::fs::read_to_string(&key).unwrap().trim().to_string();
    let braid_port = free_port();
    guard.0.push(
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{braid_port}")])
            .args(["--forward", &format!("127.0.0.1:{ssh_port}")])
            .arg("--control")
            .arg(dir.join("serve.sock"))
            .env("BRAID_KEY", &key)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(braid_port, "braid serve");

    let ssh = |remote: &str, input: &[u8]| -> Vec<u8> {
        let mut c = Command::new("ssh")
            .args(["-F", "/dev/null", "-T"])
            .arg("-o")
            .arg(format!(
                "ProxyCommand={BIN} connect tcp://127.0.0.1:{braid_port}?count=4 --control {}/c-%p.sock",
                dir.display()
            ))
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
            .arg(dir.join("user"))
            .args(["-p", &ssh_port.to_string(), &format!("{user}@127.0.0.1"), remote])
            .env("BRAID_KEY", &key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let input = input.to_vec();
        let w = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = c.wait_with_output().unwrap();
        w.join().unwrap();
        assert!(
            out.status.success(),
            "ssh {remote} failed: {:?}",
            out.status
        );
        out.stdout
    };

    assert_eq!(ssh("echo hello over braid", b""), b"hello over braid\n");
    // 8 MB up, its checksum back; 8 MB down, counted.
    let data: Vec<u8> = (0..8_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let remote_sum = String::from_utf8(ssh("sha256sum", &data)).unwrap();
    let mut local = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    local.stdin.take().unwrap().write_all(&data).unwrap();
    let local_sum = String::from_utf8(local.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(remote_sum, local_sum);
    let down = ssh("head -c 8000000 /dev/zero", b"");
    assert_eq!(down.len(), 8_000_000);
}
