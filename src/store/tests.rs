use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("proxyuserd-store-{name}-{}/db", std::process::id()));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

fn config() -> StoreConfig {
    StoreConfig {
        cache_bytes: 1 << 20,
        reserve_bytes: 0,
    }
}

fn assoc(proxy: &str) -> Association {
    Association {
        proxy: proxy.into(),
        since: 7,
        by_uid: 1000,
    }
}

#[test]
fn commits_survive_reopen() {
    let dir = temp_dir("reopen");
    {
        let store = Store::open(&dir, config()).unwrap();
        store
            .commit(&[
                Write::put(Tree::Associations, "alice", &assoc("etl")),
                Write::put(Tree::Associations, "bob", &assoc("etl")),
            ])
            .unwrap();
        store
            .commit(&[Write::delete(Tree::Associations, "bob")])
            .unwrap();
        store.close().unwrap();
    }
    let store = Store::open(&dir, config()).unwrap();
    let all = store.associations().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "alice");
    assert_eq!(all[0].1.proxy, "etl");
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn corrupt_record_is_named() {
    let dir = temp_dir("corrupt");
    let store = Store::open(&dir, config()).unwrap();
    store
        .db()
        .unwrap()
        .tree(Tree::Associations)
        .insert("alice", b"{not json".to_vec())
        .unwrap();
    let err = store.association("alice").unwrap_err().to_string();
    assert!(
        err.contains("\"alice\" in associations does not decode"),
        "{err}"
    );
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn concurrent_writers_share_flushes_and_all_become_durable() {
    let dir = temp_dir("group");
    let store = Arc::new(Store::open(&dir, config()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let key = format!("user-{t}-{i}");
                    store
                        .commit(&[Write::put(Tree::Associations, key.as_str(), &assoc("etl"))])
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.associations().unwrap().len(), 400);
    let ticket = store.applied_ticket();
    store.wait_durable(ticket).unwrap();
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(store.associations().unwrap().len(), 400);
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_failed_store_refuses_writes_serves_reads_and_reopens_on_the_disk_state() {
    let dir = temp_dir("fail");
    let store = Store::open(&dir, config()).unwrap();
    store
        .commit(&[Write::put(Tree::Associations, "alice", &assoc("etl"))])
        .unwrap();
    let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
    let why = Unavailable::Flush(IoFailure::io("fdatasync of the log (test)", &full));
    assert!(why.disk_full());
    store.commits.fail(why.clone());
    let err = store
        .apply(&[Write::put(Tree::Associations, "bob", &assoc("etl"))])
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.disk_full(), "{err}");
    assert!(
        err.to_string()
            .contains("flush to disk failed: fdatasync of the log (test): No space left"),
        "{err}"
    );
    assert_eq!(store.association("alice").unwrap().unwrap().proxy, "etl");
    assert_eq!(store.unavailable(), Some(why));
    store.reopen().unwrap();
    assert_eq!(store.unavailable(), None);
    store
        .commit(&[Write::put(Tree::Associations, "bob", &assoc("etl"))])
        .unwrap();
    assert_eq!(store.associations().unwrap().len(), 2);
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_ticket_of_a_failed_epoch_is_never_durable() {
    let dir = temp_dir("epoch");
    let store = Store::open(&dir, config()).unwrap();
    let durable = store
        .apply(&[Write::put(Tree::Associations, "a", &assoc("etl"))])
        .unwrap();
    store.wait_durable(durable).unwrap();
    // A ticket the committer has not flushed when the store fails.
    store.commits.fail(Unavailable::Write(IoFailure::other(
        "a write (test)",
        "refused",
    )));
    let lost = store.commits.phantom();
    assert!(matches!(
        store.wait_durable(lost),
        Err(StoreError::Unavailable(Unavailable::Write(_)))
    ));
    store.reopen().unwrap();
    assert!(store.wait_durable(lost).is_err());
    assert!(store.wait_durable(durable).is_ok());
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_users_jobs_page_newest_first() {
    let dir = temp_dir("jobs");
    let store = Store::open(&dir, config()).unwrap();
    let job = |id: &str, run_as: &str, started: i64| JobRecord {
        id: id.into(),
        login: "alice".into(),
        run_as: run_as.into(),
        uid: 1,
        argv: vec!["/bin/true".into()],
        cwd: "/".into(),
        state: JobState::Exited,
        started,
        finished: started + 1,
        exit_code: 0,
        signal: None,
        reason: String::new(),
        stdout_bytes: 0,
        stderr_bytes: 0,
        caller_uid: 1,
        caller_pid: 1,
        caller: "alice".into(),
        pid: 0,
        pid_start: 0,
        unit: String::new(),
        output_kept: true,
    };
    let mut writes = Vec::new();
    for (i, started) in [30, 10, 20, 40].into_iter().enumerate() {
        writes.extend(Store::put_job(&job(&format!("j{i}"), "etl", started)));
    }
    writes.extend(Store::put_job(&job("other", "etl2", 50)));
    store.commit(&writes).unwrap();
    let page = store.job_ids_of("etl", None, 2).unwrap();
    let ids: Vec<&str> = page.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["j3", "j0"]);
    let next = store
        .job_ids_of("etl", Some(&page.last().unwrap().0), 10)
        .unwrap();
    let ids: Vec<&str> = next.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["j2", "j1"]);
    assert_eq!(store.oldest_job_ids_of("etl", 1).unwrap(), ["j1"]);
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// A store as proxyuserd 0.1 wrote it (schema 1: no version key, the rule files in the
/// meta tree, no indexes), written with sled directly in that format.
#[test]
fn a_schema_1_store_is_migrated() {
    let dir = temp_dir("migrate");
    {
        let db = sled::open(&dir).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(
            "rule-files",
            br#"{"generation":3,"files":[["/etc/proxyuserd/rules.d/a.toml","[[allow]]\nlogins = [\"alice\"]\nproxies = [\"etl\"]\n"]]}"#
                .to_vec(),
        )
        .unwrap();
        meta.insert("live-rule-counter", b"2".to_vec()).unwrap();
        db.open_tree("associations")
            .unwrap()
            .insert(
                "alice",
                br#"{"proxy":"etl","since":5,"by_uid":1000}"#.to_vec(),
            )
            .unwrap();
        db.open_tree("jobs")
            .unwrap()
            .insert(
                "job-7",
                br#"{"id":"job-7","login":"alice","run_as":"etl","uid":1001,"argv":["/bin/true"],"cwd":"/","state":"exited","started":100,"finished":200,"exit_code":0,"signal":null,"reason":"","stdout_bytes":0,"stderr_bytes":0,"caller_uid":1000,"caller_pid":42,"caller":"alice","pid":4242,"pid_start":9}"#
                    .to_vec(),
            )
            .unwrap();
        db.open_tree("sessions")
            .unwrap()
            .insert(
                "abcd",
                br#"{"id":"abcd","kind":"login","login":"alice","proxy":"","parent":"","created":1,"last_used":2,"expires":3,"by_uid":1001}"#
                    .to_vec(),
            )
            .unwrap();
        db.open_tree("audit")
            .unwrap()
            .insert(1u64.to_be_bytes(), br#"{"seq":"1"}"#.to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(
        store.get::<u32>(Tree::Meta, keys::SCHEMA).unwrap(),
        Some(SCHEMA_VERSION)
    );
    let job = store.job("job-7").unwrap().unwrap();
    assert_eq!((job.state, job.output_kept), (JobState::Exited, true));
    let ids = store.job_ids_of("etl", None, 10).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].1, "job-7");
    let sessions = store.sessions_of("alice", 10).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].1.kind, SessionKind::Login);
    let snapshot = store.rule_snapshot().unwrap().unwrap();
    assert_eq!(snapshot.generation, 3);
    let files = store.read_rule_files(&snapshot.sha256).unwrap();
    assert_eq!(files[0].0, "/etc/proxyuserd/rules.d/a.toml");
    assert_eq!(store.live_counter().unwrap(), 2);
    assert_eq!(store.audit_stats().unwrap().records, 1);
    assert_eq!(store.association("alice").unwrap().unwrap().proxy, "etl");
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn a_read_notes_the_unflushed_change_it_saw_and_nothing_else() {
    let dir = temp_dir("noting");
    let store = Arc::new(Store::open(&dir, config()).unwrap());
    store
        .commit(&[Write::put(Tree::Associations, "bob", &assoc("etl"))])
        .unwrap();
    // Hold the committer before its next flush until the reads are done.
    let (hold, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    store.set_hooks(Hooks {
        before_flush: Box::new(move || {
            let _ = held.lock().unwrap().recv();
        }),
        after_flush: Box::new(|_| {}),
    });
    let ticket = store
        .apply(&[Write::put(Tree::Associations, "alice", &assoc("etl"))])
        .unwrap();
    let read = |login: &str| store.noting_unflushed(|| store.association(login).unwrap());
    let (alice, noted) = read("alice");
    assert_eq!(alice.unwrap().proxy, "etl");
    assert_eq!(
        noted,
        Some(ticket),
        "alice's association is not on disk yet"
    );
    let (bob, noted) = read("bob");
    assert!(bob.is_some());
    assert_eq!(
        noted, None,
        "bob's association is durable: nothing to wait for"
    );
    // An enclosing reader hears of what an inner one saw.
    let (_, outer) = store.noting_unflushed(|| read("alice"));
    assert_eq!(outer, Some(ticket));
    // Reads outside noting note nothing for a later noter.
    store.association("alice").unwrap();
    assert_eq!(read("bob").1, None);
    drop(hold);
    store.wait_durable(ticket).unwrap();
    assert_eq!(read("alice").1, None, "durable now");
    drop(store);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}
