//! Business hours per site (issue 17): when the widget offers a chat, and
//! when it offers the leave-a-message form instead.
//!
//! [`Hours`] is the rule, without I/O: weekly opening ranges in the site's
//! own time zone, and holidays as dates. [`watch`] checks every site with
//! hours once a second and tells the hub which sites are closed; the hub
//! then tells their visitors that no one is there to answer (`agents`
//! false), exactly as when every agent is offline.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use holdfast_protocol::agent::SiteId;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

use crate::Ctx;
use crate::store::reads;

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// A site's opening hours.
#[derive(Clone, Debug)]
pub struct Hours {
    tz: TimeZone,
    /// Per weekday (Monday first): open ranges in minutes after midnight,
    /// start inclusive, end exclusive.
    week: [Vec<(u16, u16)>; 7],
    holidays: BTreeSet<Date>,
}

fn day_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

fn day(name: &str) -> Result<usize, String> {
    let n = name.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|(short, _)| n.starts_with(short) && n.len() >= 3)
        .ok_or_else(|| format!("unknown day {name:?}; use mon, tue, wed, thu, fri, sat, sun"))
}

fn minute(t: &str) -> Result<u16, String> {
    let bad = || format!("bad time {t:?}; use HH:MM, 00:00 to 24:00");
    let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Hours {
    /// `tz` is an IANA name ("Asia/Shanghai"); `week` lists ranges such as
    /// "mon-fri 09:00-18:00, sat 10:00-14:00" ("daily" for every day; a
    /// range may end at 24:00, and one that runs past midnight is written
    /// as two); `holidays` lists dates ("2026-12-25, 2027-01-01"), closed
    /// all day. Every mistake is an error naming it.
    pub fn parse(tz: &str, week: &str, holidays: &str) -> Result<Self, String> {
        let zone = TimeZone::get(tz.trim()).map_err(|_| {
            format!("unknown time zone {tz:?}; use an IANA name such as Europe/Berlin")
        })?;
        let mut days: [Vec<(u16, u16)>; 7] = Default::default();
        let mut any = false;
        for entry in week
            .split([',', ';'])
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (which, range) = entry.split_once(' ').ok_or_else(|| {
                format!("{entry:?}: expected days and a range, as \"mon-fri 09:00-18:00\"")
            })?;
            let (from, to) = match which.trim().to_ascii_lowercase().as_str() {
                "daily" | "every" => (0, 6),
                w => match w.split_once('-') {
                    Some((a, b)) => (day(a)?, day(b)?),
                    None => (day(w)?, day(w)?),
                },
            };
            if to < from {
                return Err(format!("{entry:?}: days run from Monday to Sunday"));
            }
            let (start, end) = range
                .trim()
                .split_once('-')
                .ok_or_else(|| format!("{entry:?}: expected a range such as 09:00-18:00"))?;
            let (start, end) = (minute(start)?, minute(end)?);
            if start >= end {
                return Err(format!(
                    "{entry:?}: a range must end after it starts (write one past midnight as two)"
                ));
            }
            for d in &mut days[from..=to] {
                d.push((start, end));
            }
            any = true;
        }
        if !any {
            return Err("no opening hours given".into());
        }
        let mut dates = BTreeSet::new();
        for h in holidays
            .split([',', ';', ' '])
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            dates.insert(
                h.parse::<Date>()
                    .map_err(|_| format!("bad holiday {h:?}; use YYYY-MM-DD"))?,
            );
        }
        Ok(Self {
            tz: zone,
            week: days,
            holidays: dates,
        })
    }

    /// Whether the site is open at `at_ms` (Unix milliseconds), judged by
    /// its own wall clock: the day and time there, whatever the server's.
    pub fn is_open(&self, at_ms: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(at_ms) else {
            return false;
        };
        let local = ts.to_zoned(self.tz.clone());
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let m =
            u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        self.week[day_index(local.weekday())]
            .iter()
            .any(|&(s, e)| s <= m && m < e)
    }
}

/// Checks every site with hours once a second and tells the hub which are
/// closed now. The parsed hours are kept while their text is unchanged.
pub async fn watch(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut parsed: HashMap<SiteId, (String, Option<Hours>)> = HashMap::new();
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let rows = match ctx.reads.run(reads::site_hours).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("reading business hours failed: {e}");
                continue;
            }
        };
        let now = crate::store::now_ms();
        let mut closed = HashSet::new();
        let mut seen = HashSet::new();
        for (site, tz, week, holidays) in rows {
            seen.insert(site);
            let key = format!("{tz}\n{week}\n{holidays}");
            let entry = parsed.entry(site).or_insert_with(|| (String::new(), None));
            if entry.0 != key {
                // Written through the CLI, which checks it; a row edited by
                // hand that does not parse leaves the site open, loudly.
                entry.1 = Hours::parse(&tz, &week, &holidays)
                    .inspect_err(|e| tracing::warn!(site, "business hours ignored: {e}"))
                    .ok();
                entry.0 = key;
            }
            if entry.1.as_ref().is_some_and(|h| !h.is_open(now)) {
                closed.insert(site);
            }
        }
        parsed.retain(|s, _| seen.contains(s));
        ctx.hub.set_closed_sites(closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a wall-clock time in `tz`.
    fn at(tz: &str, civil: &str) -> i64 {
        civil
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    #[test]
    fn open_to_the_minute_in_the_sites_own_zone() {
        let h = Hours::parse("Asia/Shanghai", "mon-fri 09:00-18:00, sat 10:00-14:00", "").unwrap();
        // 2026-12-04 is a Friday.
        assert!(!h.is_open(at("Asia/Shanghai", "2026-12-04T08:59:59")));
        assert!(h.is_open(at("Asia/Shanghai", "2026-12-04T09:00:00")));
        assert!(h.is_open(at("Asia/Shanghai", "2026-12-04T17:59:59")));
        assert!(!h.is_open(at("Asia/Shanghai", "2026-12-04T18:00:00")));
        // The same instant is 10:00 UTC: the server's zone does not matter.
        assert_eq!(
            at("Asia/Shanghai", "2026-12-04T18:00:00"),
            at("UTC", "2026-12-04T10:00:00")
        );
        assert!(h.is_open(at("Asia/Shanghai", "2026-12-05T13:59:00")));
        assert!(!h.is_open(at("Asia/Shanghai", "2026-12-05T14:00:00")));
        assert!(
            !h.is_open(at("Asia/Shanghai", "2026-12-06T12:00:00")),
            "Sunday"
        );
    }

    #[test]
    fn holidays_close_the_whole_day_and_24_00_ends_it() {
        let h = Hours::parse(
            "Europe/Berlin",
            "daily 00:00-24:00",
            "2026-12-25, 2027-01-01",
        )
        .unwrap();
        assert!(h.is_open(at("Europe/Berlin", "2026-12-24T23:59:59")));
        assert!(!h.is_open(at("Europe/Berlin", "2026-12-25T00:00:00")));
        assert!(!h.is_open(at("Europe/Berlin", "2026-12-25T23:59:00")));
        assert!(h.is_open(at("Europe/Berlin", "2026-12-26T00:00:00")));
    }

    #[test]
    fn daylight_saving_moves_the_hours_with_the_wall_clock() {
        let h = Hours::parse("America/New_York", "daily 09:00-17:00", "").unwrap();
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        assert!(h.is_open(at("UTC", "2026-01-15T14:00:00")));
        assert!(!h.is_open(at("UTC", "2026-01-15T13:30:00")));
        assert!(h.is_open(at("UTC", "2026-07-15T13:00:00")));
    }

    #[test]
    fn mistakes_are_named() {
        let e = |tz, w, hol| Hours::parse(tz, w, hol).unwrap_err();
        assert!(e("Mars/Olympus", "daily 09:00-17:00", "").contains("time zone"));
        assert!(e("UTC", "mon-fry 09:00-17:00", "").contains("\"fry\""));
        assert!(e("UTC", "mon 17:00-09:00", "").contains("end after"));
        assert!(e("UTC", "mon 9-17", "").contains("HH:MM"));
        assert!(e("UTC", "", "").contains("no opening hours"));
        assert!(e("UTC", "daily 09:00-17:00", "25/12/2026").contains("YYYY-MM-DD"));
        assert!(e("UTC", "fri-mon 09:00-17:00", "").contains("Monday to Sunday"));
    }
}
