//! `dbus/org.proxyuserd1.xml` is exactly what the daemon serves for its own interfaces.
//! After changing the API, regenerate it with
//! `PROXYUSERD_BLESS=1 cargo test --test introspection` and review the diff.

mod common;

use common::*;

/// The `<interface name="org.proxyuserd1.…">` blocks of an introspection document.
fn our_interfaces(xml: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in xml.lines() {
        if line
            .trim_start()
            .starts_with("<interface name=\"org.proxyuserd1.")
        {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if inside && line.trim() == "</interface>" {
            inside = false;
        }
    }
    out
}

#[test]
fn committed_introspection_equals_the_live_interface() {
    let env = Env::start("introspect");
    let live = env.busctl(
        ROOT,
        &[
            "introspect",
            "--xml-interface",
            "org.proxyuserd1",
            "/org/proxyuserd1",
        ],
    );
    assert!(live.ok(), "{}", live.stderr);
    let live = our_interfaces(&live.stdout);
    assert!(live.contains("org.proxyuserd1.Identity"), "{live}");
    let path = repo().join("dbus/org.proxyuserd1.xml");
    if std::env::var_os("PROXYUSERD_BLESS").is_some() {
        let document = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n\
             <!-- The D-Bus API of proxyuserd at /org/proxyuserd1 on the system bus name\n     \
             org.proxyuserd1. Generated from the running daemon by\n     \
             PROXYUSERD_BLESS=1 cargo test --test introspection -->\n<node name=\"/org/proxyuserd1\">\n{live}</node>\n"
        );
        std::fs::write(&path, document).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        our_interfaces(&committed),
        live,
        "dbus/org.proxyuserd1.xml differs from the live interface; regenerate with PROXYUSERD_BLESS=1"
    );
    // Every interface the bus policy lets callers reach is served (or is still to come),
    // and every served one is in the policy.
    let policy = std::fs::read_to_string(repo().join("dbus/org.proxyuserd1.conf")).unwrap();
    for line in live
        .lines()
        .filter(|l| l.trim_start().starts_with("<interface name="))
    {
        let name = line.split('"').nth(1).unwrap();
        assert!(
            policy.contains(&format!("send_interface=\"{name}\"")),
            "{name} missing from the bus policy"
        );
    }
}
