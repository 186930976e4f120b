//! Canned replies (issue 17, PROTOCOL.md 10.21), server side: the site's
//! list (admins only) and each agent's own, changed with `SaveCanned` and
//! `DeleteCanned` from real client cores; every connection that uses a
//! list gets it whole after each change, on every node, and at login; the
//! refusals say why; and the CLI's CSV import and export round-trip what
//! a spreadsheet can throw at them, all or nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Output};

use holdfast_client::Update;
use holdfast_protocol::agent::{CannedReply, Role};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_server::canned;
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, PASSWORD, TestServer};

/// A list as `(personal, shortcut, body)`, for comparing.
fn rows(list: &[CannedReply]) -> Vec<(bool, String, String)> {
    list.iter()
        .map(|r| (r.personal, r.shortcut.clone(), r.body.clone()))
        .collect()
}

fn site(shortcut: &str, body: &str) -> (bool, String, String) {
    (false, shortcut.to_owned(), body.to_owned())
}

fn own(shortcut: &str, body: &str) -> (bool, String, String) {
    (true, shortcut.to_owned(), body.to_owned())
}

/// A client core with the canned-reply lists it got, in order, kept
/// apart from the other updates, so that waiting for an outcome does not
/// swallow a list that came before it.
struct Desk {
    core: CoreAgent,
    lists: VecDeque<Vec<CannedReply>>,
}

impl Desk {
    async fn live(srv: &TestServer, user: &str, dir: &tempfile::TempDir) -> Self {
        Self::new(live(srv, user, dir).await)
    }

    fn new(core: CoreAgent) -> Self {
        Self {
            core,
            lists: VecDeque::new(),
        }
    }

    /// As `CoreAgent::until`, keeping every list that goes by.
    async fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Update) -> Option<T>) -> T {
        let lists = &mut self.lists;
        self.core
            .until(what, |u| {
                if let Update::Canned(l) = u {
                    lists.push_back(l.clone());
                }
                f(u)
            })
            .await
    }

    /// The next list this agent got.
    async fn next_list(&mut self) -> Vec<CannedReply> {
        if self.lists.is_empty() {
            self.until("a canned-reply list", |u| {
                matches!(u, Update::Canned(_)).then_some(())
            })
            .await;
        }
        self.lists.pop_front().unwrap()
    }

    /// The first list equal to `want`, skipping older ones.
    async fn list_becomes(&mut self, want: &[(bool, String, String)]) -> Vec<CannedReply> {
        loop {
            let l = self.next_list().await;
            if rows(&l) == want {
                return l;
            }
        }
    }

    async fn outcome(&mut self, cmd: MsgId) -> Result<(), (ErrorCode, String)> {
        self.until("a command outcome", |u| match u {
            Update::CommandDone { id, .. } if *id == cmd => Some(Ok(())),
            Update::CommandRejected { id, code, message } if *id == cmd => {
                Some(Err((*code, message.clone())))
            }
            _ => None,
        })
        .await
    }

    async fn save(
        &mut self,
        id: Option<u64>,
        personal: bool,
        shortcut: &str,
        body: &str,
    ) -> Result<(), (ErrorCode, String)> {
        let cmd = self
            .core
            .handle
            .save_canned(id, personal, shortcut, body)
            .await
            .unwrap();
        self.outcome(cmd).await
    }

    async fn delete(&mut self, id: u64) -> Result<(), (ErrorCode, String)> {
        let cmd = self.core.handle.delete_canned(id).await.unwrap();
        self.outcome(cmd).await
    }

    async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

fn code(r: Result<(), (ErrorCode, String)>) -> ErrorCode {
    r.expect_err("refused").0
}

async fn add_admin(srv: &TestServer, user: &'static str) {
    srv.admin(move |db| {
        holdfast_server::admin::add_agent(db, "acme", user, "Carol", PASSWORD, 2, Role::Admin)
            .unwrap();
    })
    .await;
}

async fn site_and_personal_replies_reach_the_agents_that_use_them(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    add_admin(&srv, "carol").await;
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut carol = Desk::live(&srv, "carol", &dirs[0]).await;
    let mut alice = Desk::live(&srv, "alice", &dirs[1]).await;
    // Alice's second device: a list reaches every connection of hers.
    let mut alice2 = Desk::live(&srv, "alice", &dirs[2]).await;
    let mut bob = Desk::live(&srv, "bob", &dirs[3]).await;
    let mut mallory = Desk::live(&srv, "mallory", &dirs[4]).await;
    for a in [&mut carol, &mut alice, &mut alice2, &mut bob, &mut mallory] {
        assert!(a.next_list().await.is_empty(), "a list at login");
    }

    // An admin's site reply reaches every agent of the site.
    carol
        .save(None, false, "hi", "Hi {visitor.name}!")
        .await
        .unwrap();
    let want = vec![site("hi", "Hi {visitor.name}!")];
    let mut ids = Vec::new();
    for a in [&mut carol, &mut alice, &mut alice2, &mut bob] {
        ids.push(a.list_becomes(&want).await[0].id);
    }
    let hi = ids[0];
    assert!(ids.iter().all(|i| *i == hi), "{ids:?}");

    // A plain agent may not change the site's list.
    assert_eq!(
        code(alice.save(None, false, "mine", "text").await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(alice.save(Some(hi), false, "hi", "changed").await),
        ErrorCode::Forbidden
    );
    assert_eq!(code(alice.delete(hi).await), ErrorCode::Forbidden);

    // Her own reply reaches her two connections, after the site's.
    alice
        .save(None, true, "thanks", "Thank you, {visitor.name}.")
        .await
        .unwrap();
    let want_alice = vec![
        site("hi", "Hi {visitor.name}!"),
        own("thanks", "Thank you, {visitor.name}."),
    ];
    let thanks = alice.list_becomes(&want_alice).await[1].id;
    alice2.list_becomes(&want_alice).await;
    // ... and nobody else: Bob's next list is the one of the site's next
    // change, with no list in between.
    carol.save(None, false, "Bye", "Bye!").await.unwrap();
    assert_eq!(
        rows(&bob.next_list().await),
        vec![site("Bye", "Bye!"), site("hi", "Hi {visitor.name}!")]
    );
    alice
        .list_becomes(&[
            site("Bye", "Bye!"),
            site("hi", "Hi {visitor.name}!"),
            own("thanks", "Thank you, {visitor.name}."),
        ])
        .await;
    // Another site's agents hear nothing of it: Mallory's next list is
    // the one of her own change.
    mallory.save(None, true, "m", "Mallory's").await.unwrap();
    assert_eq!(
        rows(&mallory.next_list().await),
        vec![own("m", "Mallory's")]
    );

    // A shortcut is unique in its list with case ignored; a personal one
    // may share the site's.
    let (c, why) = carol.save(None, false, "HI", "again").await.unwrap_err();
    assert_eq!(c, ErrorCode::Conflict);
    assert!(why.contains("\"HI\""), "{why}");
    assert_eq!(
        code(alice.save(None, true, "Thanks", "again").await),
        ErrorCode::Conflict
    );
    alice.save(None, true, "hi", "My own hi").await.unwrap();
    alice
        .list_becomes(&[
            site("Bye", "Bye!"),
            site("hi", "Hi {visitor.name}!"),
            own("hi", "My own hi"),
            own("thanks", "Thank you, {visitor.name}."),
        ])
        .await;

    // Bad shortcuts and bodies.
    let (long_shortcut, long_body) = ("s".repeat(33), "b".repeat(4001));
    for (shortcut, body) in [
        ("two words", "x"),
        ("", "x"),
        ("tab\there", "x"),
        (long_shortcut.as_str(), "x"),
        ("empty", ""),
        ("blank", " \n "),
        ("long", long_body.as_str()),
    ] {
        assert_eq!(
            code(alice.save(None, true, shortcut, body).await),
            ErrorCode::BadRequest,
            "{shortcut:?}"
        );
    }
    // 4,000 bytes is still fine.
    alice
        .save(None, true, "long", &"b".repeat(4000))
        .await
        .unwrap();

    // A replace keeps the id, in its list; it cannot move the reply.
    carol
        .save(Some(hi), false, "hello", "Hello, {visitor.name}!")
        .await
        .unwrap();
    let got = bob
        .list_becomes(&[site("Bye", "Bye!"), site("hello", "Hello, {visitor.name}!")])
        .await;
    assert_eq!(got[1].id, hi);
    assert_eq!(
        code(carol.save(Some(hi), true, "hello", "mine now").await),
        ErrorCode::BadRequest
    );
    // Replacing with its own shortcut in another case is no conflict.
    alice
        .save(Some(thanks), true, "THANKS", "Thanks!")
        .await
        .unwrap();

    // Another agent's reply, or another site's, does not exist for them.
    assert_eq!(
        code(bob.save(Some(thanks), true, "x", "y").await),
        ErrorCode::NotFound
    );
    assert_eq!(code(bob.delete(thanks).await), ErrorCode::NotFound);
    assert_eq!(code(carol.delete(thanks).await), ErrorCode::NotFound);
    assert_eq!(code(mallory.delete(hi).await), ErrorCode::NotFound);
    assert_eq!(
        code(mallory.save(Some(hi), false, "x", "y").await),
        ErrorCode::NotFound
    );

    // Delete, and a second delete of the same one.
    alice.delete(thanks).await.unwrap();
    assert_eq!(code(alice.delete(thanks).await), ErrorCode::NotFound);
    let want_alice = vec![
        site("Bye", "Bye!"),
        site("hello", "Hello, {visitor.name}!"),
        own("hi", "My own hi"),
        own("long", &"b".repeat(4000)),
    ];
    alice2.list_becomes(&want_alice).await;

    // A new connection gets the same list at login.
    alice.shutdown().await;
    let laptop = tempfile::tempdir().unwrap();
    let mut again = Desk::live(&srv, "alice", &laptop).await;
    assert_eq!(rows(&again.next_list().await), want_alice);

    for a in [carol, alice2, bob, mallory, again] {
        a.shutdown().await;
    }
    srv.stop().await;
}
holdfast_tests::on_both_backends!(site_and_personal_replies_reach_the_agents_that_use_them);

/// A CSV of `n` replies `{prefix}{i}` with `body`.
fn csv_of(prefix: &str, n: usize, body: &str) -> String {
    let mut out = String::from("shortcut,body\n");
    for i in 0..n {
        out.push_str(&format!("{prefix}{i},{body}\n"));
    }
    out
}

async fn each_list_holds_at_most_its_limit(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    add_admin(&srv, "carol").await;
    // The site's list one short of full, filled the CLI's way.
    srv.admin(|db| {
        canned::admin::import(db, "acme", None, &csv_of("s", canned::MAX_SITE - 1, "x")).unwrap();
    })
    .await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut carol = Desk::live(&srv, "carol", &dirs[0]).await;
    let mut alice = Desk::live(&srv, "alice", &dirs[1]).await;
    assert_eq!(alice.next_list().await.len(), canned::MAX_SITE - 1);
    carol.save(None, false, "last", "x").await.unwrap();
    let (c, why) = carol.save(None, false, "over", "x").await.unwrap_err();
    assert_eq!(c, ErrorCode::BadRequest);
    assert!(why.contains("200"), "{why}");
    let full = alice.next_list().await;
    assert_eq!(full.len(), canned::MAX_SITE);
    // A replace in a full list is fine.
    carol
        .save(Some(full[0].id), false, "first", "y")
        .await
        .unwrap();

    // An agent's own list: 100 replies, sent back to back.
    let mut last = None;
    for i in 0..canned::MAX_PERSONAL {
        last = Some(
            alice
                .core
                .handle
                .save_canned(None, true, format!("p{i}"), "mine")
                .await
                .unwrap(),
        );
    }
    alice.outcome(last.unwrap()).await.unwrap();
    let (c, why) = alice.save(None, true, "over", "x").await.unwrap_err();
    assert_eq!(c, ErrorCode::BadRequest);
    assert!(why.contains("100"), "{why}");
    loop {
        let l = alice.next_list().await;
        if l.iter().filter(|r| r.personal).count() == canned::MAX_PERSONAL {
            assert_eq!(l.len(), canned::MAX_SITE + canned::MAX_PERSONAL);
            break;
        }
    }

    // Bob's own list is full by bytes before it is by count: 65 replies of
    // 4,000 bytes are all that fit in 256 KiB.
    srv.admin(|db| {
        canned::admin::import(db, "acme", Some("bob"), &csv_of("b", 65, &"b".repeat(4000)))
            .unwrap();
    })
    .await;
    let bob_dir = tempfile::tempdir().unwrap();
    let mut bob = Desk::live(&srv, "bob", &bob_dir).await;
    let (c, why) = bob
        .save(None, true, "one-more", &"b".repeat(4000))
        .await
        .unwrap_err();
    assert_eq!(c, ErrorCode::BadRequest);
    assert!(why.contains("KiB"), "{why}");
    // The largest lists an agent can have still reach it at login.
    assert_eq!(bob.next_list().await.len(), canned::MAX_SITE + 65);

    for a in [carol, alice, bob] {
        a.shutdown().await;
    }
    srv.stop().await;
}
holdfast_tests::on_both_backends!(each_list_holds_at_most_its_limit);

/// Run the real CLI against the test server's store.
fn cli(srv: &TestServer, args: &[&str]) -> Output {
    let mut c = Command::new(holdfast_tests::server::server_binary());
    c.args(args).arg("--data-dir").arg(srv.dir.path());
    if let Some(url) = &srv.database {
        c.arg("--database").arg(url);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

async fn cli_import_and_export_round_trip_hostile_csv(backend: Backend) {
    // Found (or built) before the server starts, so nothing idles through
    // a build.
    holdfast_tests::server::server_binary();
    let srv = TestServer::start_on(backend).await;
    let tmp = tempfile::tempdir().unwrap();
    // What a spreadsheet on Windows writes: a byte-order mark, CRLF,
    // quotes doubled, commas and line breaks inside quotes.
    let hostile = "\u{feff}shortcut,body\r\n\
        hi,\"Hello, {visitor.name}!\"\r\n\
        quote,\"She said \"\"no\"\"; I said \"\"yes\"\".\"\r\n\
        multi,\"line one\r\nline two\r\n\r\nline four\"\r\n\
        退款,\"退款将在3个工作日内到账，谢谢！\"\r\n\
        emoji,🙂 fine\r\n\
        formula,\"=HYPERLINK(\"\"http://x\"\")\"\r\n";
    let file = write(tmp.path(), "hostile.csv", hostile);
    let out = ok(&cli(&srv, &["canned", "import", "acme", &file]));
    assert!(out.contains("6 added, 0 replaced"), "{out}");
    let want = vec![
        site("emoji", "🙂 fine"),
        site("formula", "=HYPERLINK(\"http://x\")"),
        site("hi", "Hello, {visitor.name}!"),
        site("multi", "line one\nline two\n\nline four"),
        site("quote", "She said \"no\"; I said \"yes\"."),
        site("退款", "退款将在3个工作日内到账，谢谢！"),
    ];

    // The export reads back as the same replies, and imports onto itself
    // as replacements that change nothing. The formula goes out with an
    // apostrophe in front, so a spreadsheet shows it rather than runs it.
    let exported = ok(&cli(&srv, &["canned", "export", "acme"]));
    assert!(
        exported.contains("\r\nformula,\"'=HYPERLINK(\"\"http://x\"\")\"\r\n"),
        "{exported}"
    );
    let back: Vec<(bool, String, String)> = canned::csv::parse(&exported)
        .unwrap()
        .into_iter()
        .skip(1)
        .map(|r| {
            site(
                canned::csv::unguard_formula(&r.fields[0]),
                canned::csv::unguard_formula(&r.fields[1]),
            )
        })
        .collect();
    assert_eq!(back, want);
    let again = write(tmp.path(), "exported.csv", &exported);
    let out = ok(&cli(&srv, &["canned", "import", "acme", &again]));
    assert!(out.contains("0 added, 6 replaced"), "{out}");
    assert_eq!(ok(&cli(&srv, &["canned", "export", "acme"])), exported);

    // Alice's own list, and a known shortcut in another case replaces.
    let mine = write(
        tmp.path(),
        "mine.csv",
        "shortcut,body\nsig,\"— Alice, support\"\nHI,Hi from me\n",
    );
    ok(&cli(
        &srv,
        &["canned", "import", "acme", &mine, "--agent", "alice"],
    ));
    let fix = write(tmp.path(), "fix.csv", "shortcut,body\nSIG,— Alice\n");
    let out = ok(&cli(
        &srv,
        &["canned", "import", "acme", &fix, "--agent", "alice"],
    ));
    assert!(out.contains("0 added, 1 replaced"), "{out}");

    // A bad row refuses the file whole, naming the row; nothing changes.
    let before = ok(&cli(&srv, &["canned", "export", "acme"]));
    for (text, row) in [
        (
            "shortcut,body\nnew,fine\nhi,changed\ntwo words,x\n",
            "row 4",
        ),
        ("shortcut,body\nnew,fine\nnew2,\n", "row 3"),
        ("shortcut,body\nnew,fine\nNEW,twice\n", "row 3"),
        ("shortcut,body\nnew,\"never closed\n", "row 2"),
        ("shortcut,body\nnew,say \"hi\"\n", "row 2"),
        ("shortcut\nnew\n", "row 1"),
    ] {
        let bad = write(tmp.path(), "bad.csv", text);
        let out = cli(&srv, &["canned", "import", "acme", &bad]);
        assert!(!out.status.success(), "{text:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(row), "{text:?}: {err}");
        assert!(err.contains("nothing changed"), "{err}");
        assert_eq!(ok(&cli(&srv, &["canned", "export", "acme"])), before);
    }
    // Not a file of the site's agents.
    let out = cli(&srv, &["canned", "export", "acme", "--agent", "mallory"]);
    assert!(!out.status.success());

    // The agents get it at their next login, site's first.
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Desk::live(&srv, "alice", &dir).await;
    let mut want_alice = want.clone();
    want_alice.extend([own("HI", "Hi from me"), own("sig", "— Alice")]);
    assert_eq!(rows(&alice.next_list().await), want_alice);
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    cli_import_and_export_round_trip_hostile_csv
);

/// The CLI writes the store with no node told; agents signed in at the
/// time still get the new lists within seconds (`lists::watch`), each
/// agent only the lists it uses. So do their tag pickers.
async fn cli_changes_reach_signed_in_agents(backend: Backend) {
    holdfast_tests::server::server_binary();
    let srv = TestServer::start_on(backend).await;
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut alice = Desk::live(&srv, "alice", &da).await;
    let mut bob = Desk::live(&srv, "bob", &db).await;
    assert_eq!(rows(&alice.next_list().await), vec![]);
    assert_eq!(rows(&bob.next_list().await), vec![]);

    let file = write(
        tmp.path(),
        "site.csv",
        "shortcut,body\nhi,Hello!\n退款,三个工作日\n",
    );
    ok(&cli(&srv, &["canned", "import", "acme", &file]));
    let want = vec![site("hi", "Hello!"), site("退款", "三个工作日")];
    alice.list_becomes(&want).await;
    bob.list_becomes(&want).await;

    // Bob's own list changes: his list arrives, and Alice gets nothing.
    let mine = write(tmp.path(), "bob.csv", "shortcut,body\nsig,— Bob\n");
    ok(&cli(
        &srv,
        &["canned", "import", "acme", &mine, "--agent", "bob"],
    ));
    let mut want_bob = want.clone();
    want_bob.push(own("sig", "— Bob"));
    bob.list_becomes(&want_bob).await;
    // A body replaced in place (same id, same count) is a change too.
    let fix = write(tmp.path(), "fix.csv", "shortcut,body\nHI,Hello there!\n");
    ok(&cli(&srv, &["canned", "import", "acme", &fix]));
    let want = vec![site("hi", "Hello there!"), site("退款", "三个工作日")];
    // Had Bob's import reached Alice, this would be her second list.
    assert_eq!(rows(&alice.next_list().await), want);
    let mut want_bob = want.clone();
    want_bob.push(own("sig", "— Bob"));
    bob.list_becomes(&want_bob).await;

    // The site's tags, set from the CLI, reach the pickers as well.
    ok(&cli(
        &srv,
        &["site", "tags", "acme", "--set", "billing, 退款"],
    ));
    let tags = alice
        .until("the new tag list", |u| match u {
            Update::SiteTags(t) if !t.is_empty() => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(tags, vec!["billing".to_string(), "退款".to_string()]);
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    cli_changes_reach_signed_in_agents
);

/// Two nodes on one PostgreSQL and Redis: a change made through one node
/// reaches the agents on the other, over the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_agents_on_another() {
    holdfast_tests::init_logs();
    let c = holdfast_tests::cluster::Cluster::start_async(2, 5).await;
    let setup = tempfile::tempdir().unwrap();
    holdfast_tests::cluster::cli(
        &c.url,
        setup.path(),
        &["agent", "add", "carol", "--site", "acme", "--role", "admin"],
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut carol = Desk::new(c.agent(0, &dirs[0], "carol"));
    let mut alice_b = Desk::new(c.agent(1, &dirs[1], "alice"));
    let mut alice_a = Desk::new(c.agent(0, &dirs[2], "alice"));
    for a in [&mut carol, &mut alice_b, &mut alice_a] {
        a.core.live().await;
        assert!(a.next_list().await.is_empty());
    }

    // The admin on node 1 adds a site reply; Alice on node 2 gets it.
    carol
        .save(None, false, "hi", "Hi {visitor.name}!")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    alice_b
        .list_becomes(&[site("hi", "Hi {visitor.name}!")])
        .await;
    eprintln!("site reply reached the other node in {:?}", t0.elapsed());

    // Alice's own reply, saved through node 2, reaches her device on
    // node 1, and not the admin there.
    alice_b.save(None, true, "sig", "— Alice").await.unwrap();
    let want = [site("hi", "Hi {visitor.name}!"), own("sig", "— Alice")];
    alice_a.list_becomes(&want).await;
    alice_b.list_becomes(&want).await;
    carol.save(None, false, "bye", "Bye!").await.unwrap();
    // Carol's own change is the first list after "hi" that she gets.
    carol
        .list_becomes(&[site("hi", "Hi {visitor.name}!")])
        .await;
    assert_eq!(
        rows(&carol.next_list().await),
        vec![site("bye", "Bye!"), site("hi", "Hi {visitor.name}!")]
    );
    let want = [
        site("bye", "Bye!"),
        site("hi", "Hi {visitor.name}!"),
        own("sig", "— Alice"),
    ];
    alice_b.list_becomes(&want).await;
    for a in [carol, alice_a, alice_b] {
        a.shutdown().await;
    }
}
