//! The CLI's CSV, as RFC 4180 has it: records end with CRLF (LF alone is
//! read too), fields are separated by commas, and a field with a comma, a
//! quote or a line break is quoted, its quotes doubled. Small enough to
//! write here rather than add a crate for two columns.
//!
//! Reading is strict where a wrong guess would change a reply's text (a
//! quote in the middle of an unquoted field, text after a closing quote,
//! a quoted field never closed) and forgiving where nothing is lost: a
//! byte-order mark (spreadsheets on Windows write one) and LF or CRLF.

/// One record as read, with where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's number in the file, from 1 (the header).
    pub row: usize,
    /// The line it starts on, from 1: differs from `row` once a quoted
    /// field has spanned lines.
    pub line: usize,
    pub fields: Vec<String>,
}

impl Record {
    /// A blank line: no text at all.
    #[must_use]
    pub fn is_blank(&self) -> bool {
        self.fields.len() == 1 && self.fields[0].is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("row {row} (line {line}): {what}")]
pub struct CsvError {
    pub row: usize,
    pub line: usize,
    pub what: String,
}

/// Append one record, CRLF-terminated.
pub fn write_record(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

/// What makes Excel, LibreOffice and Google Sheets read a cell as a
/// formula (or, for tab and CR, what they strip before looking).
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether `cell`, after any leading apostrophes, starts a formula.
fn formula_like(cell: &str) -> bool {
    cell.trim_start_matches('\'').starts_with(FORMULA_START)
}

/// `cell` as written to a file an admin may open in a spreadsheet: one
/// more apostrophe in front when it reads as a formula, so a reply saved
/// as `=HYPERLINK(…)` is shown there as text, never run (OWASP's advice
/// for CSV injection). [`unguard_formula`] undoes exactly this, also for
/// a reply that itself starts with apostrophes, so export and import
/// round-trip every text.
#[must_use]
pub fn guard_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    if formula_like(cell) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The text [`guard_formula`] was given.
#[must_use]
pub fn unguard_formula(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if formula_like(cell) => rest,
        _ => cell,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    Start,
    /// In a field that did not begin with a quote.
    Bare,
    /// Inside quotes.
    Quoted,
    /// Just after a quote inside quotes: a second one is a literal quote,
    /// anything else ends the quoted part.
    QuoteInQuoted,
}

/// Every record of `text`. An empty text, or one ending in a line break,
/// has no record after the last break.
pub fn parse(text: &str) -> Result<Vec<Record>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::Start;
    // Whether anything of the current record was read.
    let mut open = false;
    let (mut row, mut line, mut start_line) = (1, 1, 1);
    let mut chars = text.chars().peekable();
    let error = |row, line, what: &str| CsvError {
        row,
        line,
        what: what.to_owned(),
    };
    while let Some(c) = chars.next() {
        if !open {
            open = true;
            start_line = line;
        }
        match (state, c) {
            (State::Quoted, '"') => state = State::QuoteInQuoted,
            (State::Quoted, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (State::QuoteInQuoted, '"') => {
                field.push('"');
                state = State::Quoted;
            }
            (State::Start, '"') => state = State::Quoted,
            (State::Bare, '"') => {
                return Err(error(
                    row,
                    start_line,
                    "a quote inside a field that does not start with one (quote the field and double its quotes)",
                ));
            }
            (_, ',') => {
                fields.push(std::mem::take(&mut field));
                state = State::Start;
            }
            (_, '\r' | '\n') => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                line += 1;
                fields.push(std::mem::take(&mut field));
                records.push(Record {
                    row,
                    line: start_line,
                    fields: std::mem::take(&mut fields),
                });
                row += 1;
                state = State::Start;
                open = false;
            }
            (State::QuoteInQuoted, _) => {
                return Err(error(
                    row,
                    start_line,
                    "text after a closing quote (a quote inside a quoted field is written twice)",
                ));
            }
            (State::Start | State::Bare, c) => {
                field.push(c);
                state = State::Bare;
            }
        }
    }
    if state == State::Quoted {
        return Err(error(
            row,
            start_line,
            "a quoted field is not closed before the end of the file",
        ));
    }
    if open {
        fields.push(field);
        records.push(Record {
            row,
            line: start_line,
            fields,
        });
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        parse(text).unwrap().into_iter().map(|r| r.fields).collect()
    }

    fn v(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    #[test]
    fn canned_csv_reads_plain_records_with_lf_or_crlf() {
        let want = v(&[&["shortcut", "body"], &["hi", "Hello"]]);
        assert_eq!(fields("shortcut,body\nhi,Hello\n"), want);
        assert_eq!(fields("shortcut,body\r\nhi,Hello\r\n"), want);
        // The last line needs no break.
        assert_eq!(fields("shortcut,body\r\nhi,Hello"), want);
        assert_eq!(fields(""), Vec::<Vec<String>>::new());
    }

    #[test]
    fn canned_csv_reads_quotes_commas_and_line_breaks_inside_quotes() {
        let text = "shortcut,body\r\n\"a,b\",\"She said \"\"hi\"\"\"\r\nml,\"one\r\ntwo\nthree\"\r\nempty,\"\"\r\n";
        assert_eq!(
            fields(text),
            v(&[
                &["shortcut", "body"],
                &["a,b", "She said \"hi\""],
                &["ml", "one\r\ntwo\nthree"],
                &["empty", ""],
            ])
        );
        let recs = parse(text).unwrap();
        // Rows count records; lines count line breaks.
        assert_eq!((recs[3].row, recs[3].line), (4, 6));
    }

    #[test]
    fn canned_csv_skips_a_byte_order_mark() {
        assert_eq!(
            fields("\u{feff}shortcut,body\nhi,\"x\"\n"),
            v(&[&["shortcut", "body"], &["hi", "x"]])
        );
    }

    #[test]
    fn canned_csv_keeps_blank_lines_as_blank_records() {
        let recs = parse("a,b\n\nc,d\n").unwrap();
        assert_eq!(recs.len(), 3);
        assert!(recs[1].is_blank());
        assert!(!recs[0].is_blank());
        assert_eq!(recs[2].row, 3);
    }

    #[test]
    fn canned_csv_refuses_what_it_would_have_to_guess() {
        let e = parse("shortcut,body\nhi,say \"hi\"\n").unwrap_err();
        assert_eq!((e.row, e.line), (2, 2));
        let e = parse("shortcut,body\nhi,\"x\"y\n").unwrap_err();
        assert_eq!(e.row, 2);
        let e = parse("shortcut,body\nok,fine\nhi,\"never closed\nmore\n").unwrap_err();
        assert_eq!((e.row, e.line), (3, 3));
        assert!(e.to_string().starts_with("row 3 (line 3): "), "{e}");
    }

    #[test]
    fn canned_csv_formula_guard_round_trips() {
        for cell in [
            "=1+1", "+x", "-", "@a", "\tx", "\rx", "'=x", "''-x", "'", "''", "'a", "a=b", "",
            "退款",
        ] {
            let g = guard_formula(cell);
            assert!(!g.starts_with(FORMULA_START), "{g:?}");
            assert_eq!(unguard_formula(&g), cell);
        }
        assert_eq!(guard_formula("=1"), "'=1");
        assert_eq!(guard_formula("plain"), "plain");
    }

    #[test]
    fn canned_csv_writes_what_it_reads() {
        let hostile = [
            "plain",
            "comma, inside",
            "\"quoted\" twice \"\"",
            "line\nbreak",
            "crlf\r\nbreak",
            "退款, 谢谢 \"您\"",
            "",
            " spaces ",
            "=SUM(A1)",
        ];
        let mut out = String::new();
        write_record(&mut out, &["shortcut", "body"]);
        for (i, h) in hostile.iter().enumerate() {
            write_record(&mut out, &[&format!("s{i}"), h]);
        }
        assert!(out.starts_with("shortcut,body\r\ns0,plain\r\ns1,\"comma, inside\"\r\n"));
        let back = parse(&out).unwrap();
        assert_eq!(back.len(), hostile.len() + 1);
        for (i, h) in hostile.iter().enumerate() {
            assert_eq!(back[i + 1].fields, vec![format!("s{i}"), (*h).to_owned()]);
        }
    }
}
