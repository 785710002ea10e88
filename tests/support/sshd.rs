//! A real OpenSSH server for the tests (Debian's `openssh-server`), on
//! 127.0.0.1 with a configuration of its own: key authentication only, one
//! authorized key. Git over SSH then runs `git-upload-pack` through it as
//! it would on a Git host.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd; it stops when dropped.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// The private key sshd accepts.
    pub user_key: PathBuf,
    /// A private key sshd does not accept.
    pub other_key: PathBuf,
    /// The `known_hosts` line for this server.
    pub known_host: String,
    pub user: String,
    _dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "canopy-tests", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (Debian package openssh-client)");
    assert!(ok.success());
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the SSH tests need Debian's openssh-server (.ci/run installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for k in ["host_key", "user_key", "other_key"] {
            keygen(&d.join(k));
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege separation folder.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd (the tests run as root)");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\nAuthorizedKeysFile {keys}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowUsers {user}\n",
                host = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                keys = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_host = format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        Sshd {
            child,
            port,
            user_key: d.join("user_key"),
            other_key: d.join("other_key"),
            known_host,
            user,
            _dir: dir,
        }
    }

    /// `ssh://user@127.0.0.1:port/<abs path>`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running ssh-agent holding one key; it stops when dropped.
pub struct Agent {
    pid: String,
    pub socket: PathBuf,
}

impl Agent {
    pub fn with_key(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .output()
            .expect("ssh-agent runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split(';')
            .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
            .expect("ssh-agent prints its pid")
            .to_string();
        let ok = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "ssh-add");
        Agent { pid, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}
