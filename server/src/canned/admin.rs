//! `holdfast-server canned export` and `import`: a site's list, or one
//! agent's own, as CSV with the header `shortcut,body` (PROTOCOL.md
//! 10.21). An import is all or nothing: every row is checked against the
//! list as it will be before anything is written, and one bad row refuses
//! the file, naming it.

use holdfast_protocol::agent::SiteId;

use super::csv::{self, Record};
use super::{Owner, Stored};
use crate::admin::AdminError;
use crate::store::reads;
use crate::store::sql::{Db, transaction};
use crate::store::{StoreError, now_ms};

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Rows whose shortcut was new to the list.
    pub added: usize,
    /// Rows that replaced the body of a reply with their shortcut.
    pub replaced: usize,
}

/// The site `key`, and the list meant: the site's, or `agent`'s own, which
/// must be an agent of that site.
fn target(conn: &dyn Db, key: &str, agent: Option<&str>) -> Result<(SiteId, Owner), AdminError> {
    let site = reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))?;
    let owner = match agent {
        None => Owner::Site,
        Some(user) => {
            let a = reads::agent_by_username(conn, user)?
                .ok_or_else(|| AdminError::NoAgent(user.into()))?;
            if a.site != site.id {
                return Err(AdminError::Invalid(format!(
                    "{user} is an agent of another site, not of {key}"
                )));
            }
            Owner::Agent(a.id)
        }
    };
    Ok((site.id, owner))
}

/// The list as CSV, by shortcut.
pub fn export(conn: &dyn Db, key: &str, agent: Option<&str>) -> Result<String, AdminError> {
    let (site, owner) = target(conn, key, agent)?;
    let mut out = String::new();
    csv::write_record(&mut out, &["shortcut", "body"]);
    for s in super::list(conn, site, owner)? {
        csv::write_record(
            &mut out,
            &[
                &csv::guard_formula(&s.reply.shortcut),
                &csv::guard_formula(&s.reply.body),
            ],
        );
    }
    Ok(out)
}

/// Why a row is refused.
fn bad(r: &Record, what: impl std::fmt::Display) -> AdminError {
    AdminError::Invalid(format!("row {} (line {}): {what}", r.row, r.line))
}

/// One row's change, checked.
enum Change {
    Add { shortcut: String, body: String },
    Replace { id: u64, body: String },
}

/// Check every row against `list` and say what each changes; nothing is
/// written.
fn plan(records: &[Record], owner: Owner, list: &[Stored]) -> Result<Vec<Change>, AdminError> {
    let Some((header, rows)) = records.split_first() else {
        return Err(AdminError::Invalid(
            "the file is empty: its first row must be shortcut,body".into(),
        ));
    };
    let names: Vec<String> = header
        .fields
        .iter()
        .map(|f| f.trim().to_lowercase())
        .collect();
    if names != ["shortcut", "body"] {
        return Err(bad(
            header,
            "the first row must be the header shortcut,body",
        ));
    }
    let mut count = list.len();
    let mut bytes: usize = list
        .iter()
        .map(|s| super::weight(&s.reply.shortcut, &s.reply.body))
        .sum();
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut changes = Vec::new();
    for r in rows.iter().filter(|r| !r.is_blank()) {
        let [shortcut, body] = r.fields.as_slice() else {
            return Err(bad(
                r,
                format!(
                    "a row has two fields, shortcut and body, not {}",
                    r.fields.len()
                ),
            ));
        };
        // Spreadsheets on Windows end lines inside a cell with CRLF; the
        // app writes LF. One reply reads the same whichever wrote it.
        let body = csv::unguard_formula(body).replace("\r\n", "\n");
        let shortcut = csv::unguard_formula(shortcut);
        super::check_shortcut(shortcut).map_err(|e| bad(r, e))?;
        super::check_body(&body).map_err(|e| bad(r, e))?;
        let key = super::key(shortcut);
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            return Err(bad(
                r,
                format!("the shortcut {shortcut:?} is already on row {first}"),
            ));
        }
        seen.push((key.clone(), r.row));
        match list.iter().find(|s| s.key == key) {
            Some(s) => {
                bytes = bytes - s.reply.body.len() + body.len();
                changes.push(Change::Replace {
                    id: s.reply.id,
                    body,
                });
            }
            None => {
                count += 1;
                bytes += super::weight(shortcut, &body);
                changes.push(Change::Add {
                    shortcut: shortcut.to_owned(),
                    body,
                });
            }
        }
        super::check_size(owner, count, bytes).map_err(|e| bad(r, e))?;
    }
    Ok(changes)
}

/// Read `text` into the list: a row whose shortcut the list has (case
/// ignored) replaces that reply's body, keeping its id and spelling; the
/// others are added. In one transaction, after every row is checked, so
/// a refused file changes nothing. Agents signed in now get the new list
/// within a second (`lists::watch`).
pub fn import(
    conn: &dyn Db,
    key: &str,
    agent: Option<&str>,
    text: &str,
) -> Result<Imported, AdminError> {
    let records = csv::parse(text).map_err(|e| AdminError::Invalid(e.to_string()))?;
    transaction(conn, |conn| {
        let (site, owner) = target(conn, key, agent)?;
        super::lock_site(conn, site)?;
        let list = super::list(conn, site, owner)?;
        let changes = plan(&records, owner, &list)?;
        let now = now_ms();
        let mut done = Imported::default();
        for c in changes {
            match c {
                Change::Add { shortcut, body } => {
                    super::insert(conn, site, owner, &shortcut, &body, now)?;
                    done.added += 1;
                }
                Change::Replace { id, body } => {
                    let shortcut = list
                        .iter()
                        .find(|s| s.reply.id == id)
                        .map(|s| s.reply.shortcut.clone())
                        .ok_or_else(|| StoreError::Corrupt(format!("reply {id} vanished")))?;
                    super::update(conn, id, &shortcut, &body, now)?;
                    done.replaced += 1;
                }
            }
        }
        Ok::<_, AdminError>(done)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use holdfast_protocol::agent::Role;

    use super::*;

    fn db() -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        crate::admin::add_site(&c, "acme", "Acme", None).unwrap();
        crate::admin::add_site(&c, "other", "Other", None).unwrap();
        crate::admin::add_agent(&c, "acme", "alice", "Alice", "pw-12345678", 2, Role::Agent)
            .unwrap();
        crate::admin::add_agent(&c, "other", "mallory", "M", "pw-12345678", 2, Role::Agent)
            .unwrap();
        c
    }

    #[test]
    fn canned_import_adds_and_replaces_and_export_reads_it_back() {
        let c = db();
        let first = "shortcut,body\nhi,Hello\nRefund,\"Refunds take 3 days, sorry.\"\n";
        assert_eq!(
            import(&c, "acme", None, first).unwrap(),
            Imported {
                added: 2,
                replaced: 0
            }
        );
        // Another case of a known shortcut replaces its body, keeps its
        // spelling; CRLF inside a cell becomes LF.
        let second =
            "\u{feff}shortcut,body\r\nREFUND,\"Two lines:\r\n\"\"quoted\"\"\"\r\nbye,Bye\r\n";
        assert_eq!(
            import(&c, "acme", None, second).unwrap(),
            Imported {
                added: 1,
                replaced: 1
            }
        );
        assert_eq!(
            export(&c, "acme", None).unwrap(),
            "shortcut,body\r\nbye,Bye\r\nhi,Hello\r\nRefund,\"Two lines:\n\"\"quoted\"\"\"\r\n"
        );
        // Alice's own list is another list.
        assert_eq!(
            export(&c, "acme", Some("alice")).unwrap(),
            "shortcut,body\r\n"
        );
    }

    #[test]
    fn canned_export_never_starts_a_cell_a_spreadsheet_would_run() {
        // A reply an agent saved can be a formula to a spreadsheet; the
        // admin who opens the export must not run it.
        let c = db();
        let bodies = [
            "=HYPERLINK(\"http://evil.example\",\"Click\")",
            "+1 555 0100",
            "-- thanks",
            "@mention",
            "\tindented",
            "'=already quoted once",
            "''@twice",
            "'plain apostrophe",
            "plain",
        ];
        let mut file = String::new();
        csv::write_record(&mut file, &["shortcut", "body"]);
        for (i, b) in bodies.iter().enumerate() {
            csv::write_record(&mut file, &[&format!("r{i}"), &csv::guard_formula(b)]);
        }
        // Typed by hand without the apostrophe, a formula-like text is
        // taken as written too.
        csv::write_record(&mut file, &["raw", "=1+1"]);
        import(&c, "acme", None, &file).unwrap();
        let out = export(&c, "acme", None).unwrap();
        for rec in csv::parse(&out).unwrap() {
            for cell in &rec.fields {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "a cell a spreadsheet would run: {cell:?}"
                );
            }
        }
        // And the export imports back to the same replies.
        let d = db();
        import(&d, "acme", None, &out).unwrap();
        assert_eq!(export(&d, "acme", None).unwrap(), out);
        let (site, owner) = target(&d, "acme", None).unwrap();
        let listed = super::super::list(&d, site, owner).unwrap();
        let mut got: Vec<&str> = listed.iter().map(|s| s.reply.body.as_str()).collect();
        let mut want: Vec<&str> = bodies.to_vec();
        want.push("=1+1");
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn canned_import_refuses_a_bad_file_whole_naming_the_row() {
        let c = db();
        import(&c, "acme", None, "shortcut,body\nhi,Hello\n").unwrap();
        let before = export(&c, "acme", None).unwrap();
        for (file, row) in [
            ("shortcut,body\nnew,ok\nhi,Changed\ntwo words,x\n", "row 4"),
            ("shortcut,body\na,ok\nb,\n", "row 3"),
            ("shortcut,body\na,ok\nA,again\n", "row 3"),
            ("shortcut,body\na,ok,extra\n", "row 2"),
            ("shortcut,body\na,\"unclosed\n", "row 2"),
            ("body,shortcut\na,ok\n", "row 1"),
            ("shortcut,body\na,\"x\"y\n", "row 2"),
        ] {
            let e = import(&c, "acme", None, file).unwrap_err().to_string();
            assert!(e.contains(row), "{file:?}: {e}");
            assert_eq!(export(&c, "acme", None).unwrap(), before, "{file:?}");
        }
        let big = "b".repeat(super::super::MAX_BODY_BYTES + 1);
        let e = import(&c, "acme", None, &format!("shortcut,body\nbig,{big}\n")).unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
        assert!(import(&c, "acme", None, "").is_err());
        assert_eq!(export(&c, "acme", None).unwrap(), before);
    }

    #[test]
    fn canned_import_stops_at_the_row_that_overfills_the_list() {
        let c = db();
        let mut file = String::from("shortcut,body\n");
        for i in 0..=super::super::MAX_PERSONAL {
            file.push_str(&format!("s{i},text {i}\n"));
        }
        let e = import(&c, "acme", Some("alice"), &file).unwrap_err();
        // Row 1 is the header: the 101st reply is on row 102.
        assert!(e.to_string().contains("row 102"), "{e}");
        assert_eq!(
            export(&c, "acme", Some("alice")).unwrap(),
            "shortcut,body\r\n"
        );
    }

    #[test]
    fn canned_import_knows_whose_list() {
        let c = db();
        assert!(matches!(
            import(&c, "nope", None, "shortcut,body\n"),
            Err(AdminError::NoSite(_))
        ));
        assert!(matches!(
            export(&c, "acme", Some("nobody")),
            Err(AdminError::NoAgent(_))
        ));
        // An agent of another site has no list here.
        assert!(matches!(
            export(&c, "acme", Some("mallory")),
            Err(AdminError::Invalid(_))
        ));
    }
}
