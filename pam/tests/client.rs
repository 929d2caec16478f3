//! The module's D-Bus client against a real `dbus-daemon`, and against peers that
//! misbehave: each call ends, within its timeout, with an answer or an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pam_proxyuserd::client::{CallError, call};
use pam_proxyuserd::message::{Call, Value};

/// A private dbus-daemon, killed on drop.
struct Bus {
    dir: PathBuf,
    child: Child,
}

impl Bus {
    fn start(name: &str) -> Bus {
        let dir =
            std::env::temp_dir().join(format!("pxt-pam-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "<busconfig><type>custom</type><auth>EXTERNAL</auth>\
             <listen>unix:path={}/bus</listen><policy context=\"default\">\
             <allow user=\"*\"/><allow send_destination=\"*\"/><allow own=\"*\"/>\
             <allow receive_type=\"method_call\"/><allow receive_type=\"method_return\"/>\
             <allow receive_type=\"error\"/><allow receive_type=\"signal\"/>\
             </policy></busconfig>",
            dir.display()
        );
        std::fs::write(dir.join("bus.conf"), config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", dir.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon is missing: run `sudo tests/setup`");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        Bus { dir, child }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("bus")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);

fn bus_call<'a>(member: &'a str, args: &'a [&'a str]) -> Call<'a> {
    Call {
        destination: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
        interface: "org.freedesktop.DBus",
        member,
        args,
    }
}

#[test]
fn a_call_to_a_real_bus_gets_its_answer() {
    let bus = Bus::start("answer");
    let owner = call(
        &bus.socket(),
        TIMEOUT,
        &bus_call("GetNameOwner", &["org.freedesktop.DBus"]),
    );
    assert_eq!(owner, Ok(vec![Value::Str("org.freedesktop.DBus".into())]));
    // Booleans come back as such.
    let has = call(
        &bus.socket(),
        TIMEOUT,
        &bus_call("NameHasOwner", &["org.proxyuserd1"]),
    );
    assert_eq!(has, Ok(vec![Value::Bool(false)]));
}

#[test]
fn a_service_nobody_provides_is_unavailable_and_errors_are_refusals() {
    let bus = Bus::start("errors");
    let missing = Call {
        destination: "org.proxyuserd1",
        path: "/org/proxyuserd1",
        interface: "org.proxyuserd1.Pam",
        member: "Authorize",
        args: &["a", "b", "su", "", ""],
    };
    let err = call(&bus.socket(), TIMEOUT, &missing).unwrap_err();
    assert!(matches!(err, CallError::Unavailable(_)), "{err}");
    let err = call(&bus.socket(), TIMEOUT, &bus_call("NoSuchMethod", &[])).unwrap_err();
    assert!(
        matches!(&err, CallError::Refused { name, .. } if name == "org.freedesktop.DBus.Error.UnknownMethod"),
        "{err}"
    );
}

/// A peer at `path` that runs `behave` on the first connection.
fn peer(path: &Path, behave: impl FnOnce(std::os::unix::net::UnixStream) + Send + 'static) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            behave(stream);
        }
    });
}

#[test]
fn peers_that_hang_up_stay_silent_or_speak_nonsense_give_errors_not_hangs() {
    let dir = std::env::temp_dir().join(format!("pxt-pam-peers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hello = bus_call("Hello", &[]);

    // Accepts, reads, never answers: the call gives up at its timeout.
    let silent = dir.join("silent");
    let (held, keep) = std::sync::mpsc::channel();
    peer(&silent, move |stream| {
        held.send(stream).unwrap();
    });
    let err = call(&silent, Duration::from_millis(300), &hello).unwrap_err();
    assert!(matches!(err, CallError::Unavailable(_)), "{err}");
    drop(keep);

    // Hangs up after the authentication, so the client writes to a closed socket. As in
    // su, SIGPIPE is not ignored here: a write that raised it would kill this test.
    // SAFETY: restoring the default disposition runs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let gone = dir.join("gone");
    peer(&gone, |mut stream| {
        let mut buf = [0u8; 256];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n");
    });
    let err = call(&gone, TIMEOUT, &hello).unwrap_err();
    assert!(matches!(err, CallError::Unavailable(_)), "{err}");

    // Refuses the authentication.
    let rejecting = dir.join("rejecting");
    peer(&rejecting, |mut stream| {
        let mut buf = [0u8; 256];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"REJECTED EXTERNAL\r\n");
        std::thread::sleep(Duration::from_millis(100));
    });
    let err = call(&rejecting, TIMEOUT, &hello).unwrap_err();
    assert!(matches!(err, CallError::Refused { .. }), "{err}");

    // Answers the authentication, then sends a message claiming to be 2 GiB long.
    let liar = dir.join("liar");
    peer(&liar, |mut stream| {
        let mut buf = [0u8; 256];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"OK 0123456789abcdef0123456789abcdef\r\n");
        let mut huge = vec![b'l', 2, 0, 1];
        huge.extend_from_slice(&0x8000_0000u32.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        let _ = stream.write_all(&huge);
        std::thread::sleep(Duration::from_millis(100));
    });
    let err = call(&liar, TIMEOUT, &hello).unwrap_err();
    assert!(matches!(err, CallError::Protocol(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
