//! The pure parts of `restore`: its arguments, checked before anything runs; the choice of
//! the backup; `barman recover`'s arguments; the reading of the recovery point.

use crate::planner::barman::BackupInfo;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay every archived WAL segment.
    End,
    /// `--target-time`: as given (Postgres reads it), and as microseconds since the epoch.
    Time { text: String, micros: i64 },
    /// `--target-lsn`, normalised to upper case.
    Lsn(String),
    /// `--target-xid`.
    Xid(u64),
}

impl Target {
    /// At most one of the three options; each value checked.
    pub fn from_options(
        time: Option<&str>,
        lsn: Option<&str>,
        xid: Option<&str>,
    ) -> Result<Target, String> {
        match (time, lsn, xid) {
            (None, None, None) => Ok(Target::End),
            (Some(t), None, None) => Ok(Target::Time {
                text: t.trim().to_string(),
                micros: parse_time(t).map_err(|e| format!("--target-time {t:?}: {e}"))?,
            }),
            (None, Some(l), None) => parse_lsn(l)
                .map(Target::Lsn)
                .map_err(|e| format!("--target-lsn {l:?}: {e}")),
            (None, None, Some(x)) => parse_xid(x)
                .map(Target::Xid)
                .map_err(|e| format!("--target-xid {x:?}: {e}")),
            _ => Err("give at most one of --target-time, --target-lsn and --target-xid".into()),
        }
    }

    /// `barman recover`'s options for this target (with promotion once it is reached).
    fn barman_options(&self) -> Vec<String> {
        let (option, value) = match self {
            Target::End => return vec![],
            Target::Time { text, .. } => ("--target-time", text.clone()),
            Target::Lsn(lsn) => ("--target-lsn", lsn.clone()),
            Target::Xid(xid) => ("--target-xid", xid.to_string()),
        };
        vec![
            option.into(),
            value,
            "--target-action".into(),
            "promote".into(),
        ]
    }

    pub fn describe(&self) -> String {
        match self {
            Target::End => "the end of the archived WAL".into(),
            Target::Time { text, .. } => format!("time {text}"),
            Target::Lsn(lsn) => format!("LSN {lsn}"),
            Target::Xid(xid) => format!("transaction {xid}"),
        }
    }
}

/// `2026-11-27 10:15:00[.123456]+00` (also `T` for the space, `Z`, `+01:00`, `-0530`), as
/// microseconds since the Unix epoch. The zone is required: without one Postgres would read
/// the time in the restored server's TimeZone, which the user may not know.
pub fn parse_time(text: &str) -> Result<i64, String> {
    const FORMAT: &str = "use YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM], e.g. '2026-11-27 10:15:00+00'";
    let s = text.trim();
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Result<i64, String> {
        let part = s.get(from..from + n).ok_or_else(|| FORMAT.to_string())?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(FORMAT.into());
        }
        part.parse().map_err(|_| FORMAT.to_string())
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return Err(FORMAT.into());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(FORMAT.into());
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return Err(format!("month {month} does not exist")),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return Err(format!("no such date or time of day; {FORMAT}"));
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 6 {
            return Err(format!("1 to 6 digits of fractional seconds; {FORMAT}"));
        }
        micros =
            frac[..n].parse::<i64>().map_err(|_| FORMAT.to_string())? * 10i64.pow(6 - n as u32);
        rest = &frac[n..];
    }
    let offset_seconds = match rest {
        "" => return Err(format!("the time zone is missing; {FORMAT}")),
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(FORMAT.into()),
            };
            let zone = rest[1..].replace(':', "");
            if !(zone.len() == 2 || zone.len() == 4) || !zone.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("unreadable time zone {rest:?}; {FORMAT}"));
            }
            let hours: i64 = zone[..2].parse().map_err(|_| FORMAT.to_string())?;
            let minutes: i64 = if zone.len() == 4 {
                zone[2..].parse().map_err(|_| FORMAT.to_string())?
            } else {
                0
            };
            if hours > 15 || minutes > 59 {
                return Err(format!("time zone {rest:?} out of range"));
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    Ok(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `16/B374D848`: two hex numbers of at most 8 digits.
pub fn parse_lsn(text: &str) -> Result<String, String> {
    let hex = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|c| c.is_ascii_hexdigit());
    match text.trim().split_once('/') {
        Some((hi, lo)) if hex(hi) && hex(lo) => Ok(format!("{hi}/{lo}").to_uppercase()),
        _ => Err("an LSN looks like 0/3000148 (see pg_current_wal_lsn())".into()),
    }
}

/// A normal transaction id: a number from 3 up (0 to 2 are reserved).
pub fn parse_xid(text: &str) -> Result<u64, String> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(x) if x >= 3 && t.bytes().all(|c| c.is_ascii_digit()) => Ok(x),
        _ => Err("a transaction id is a number from 3 up (see pg_current_xact_id())".into()),
    }
}

/// A host name tpa can give a container: one DNS label, lower case (config.yml's instance
/// names are lower-cased the same way).
pub fn check_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.bytes().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--to {name:?} is not a valid host name: 1 to 63 lower-case letters, digits and `-`, \
             not starting or ending with `-`"
        ))
    }
}

/// `20261127T101500`, as Barman names backups.
pub fn check_backup_id(id: &str) -> Result<(), String> {
    let ok = id.len() == 15
        && id
            .chars()
            .enumerate()
            .all(|(i, c)| if i == 8 { c == 'T' } else { c.is_ascii_digit() });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--backup {id:?}: a Barman backup id looks like 20261127T101500 (see backup --list)"
        ))
    }
}

/// The backup to restore: `requested`, else the newest finished one (with a time target,
/// the newest that ended before it). `backups` is every backup of the server.
pub fn choose_backup<'a>(
    backups: &'a [BackupInfo],
    target: &Target,
    requested: Option<&str>,
) -> Result<&'a BackupInfo, String> {
    let ended = |b: &BackupInfo| b.end_time.as_deref().and_then(|t| parse_time(t).ok());
    let done: Vec<&BackupInfo> = backups.iter().filter(|b| b.status == "DONE").collect();
    let server = backups.first().map_or("", |b| b.server.as_str());
    if let Some(id) = requested {
        let b = backups
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| format!("{server} has no backup {id} (see backup --list)"))?;
        if b.status != "DONE" {
            return Err(format!(
                "backup {id} is {}, not DONE: choose another",
                b.status
            ));
        }
        if let Target::Time { text, micros } = target
            && ended(b).is_none_or(|end| end >= *micros)
        {
            return Err(format!(
                "backup {id} ended at {}, not before --target-time {text}: choose an older \
                 backup or a later time",
                b.end_time.as_deref().unwrap_or("an unknown time")
            ));
        }
        return Ok(b);
    }
    let Some(oldest) = done.iter().min_by_key(|b| ended(b)) else {
        return Err(format!(
            "{server} has no finished backup: run `tpa-controller backup <dir>` first"
        ));
    };
    match target {
        Target::Time { text, micros } => done
            .iter()
            .filter(|b| ended(b).is_some_and(|end| end < *micros))
            .max_by_key(|b| ended(b))
            .copied()
            .ok_or_else(|| {
                format!(
                    "--target-time {text} is before the end of the oldest backup of {server} \
                     ({} ended at {}): recovery can only reach a point after a backup ended",
                    oldest.id,
                    oldest.end_time.as_deref().unwrap_or("?")
                )
            }),
        _ => Ok(done
            .iter()
            .max_by_key(|b| ended(b))
            .copied()
            .unwrap_or(oldest)),
    }
}

/// `barman recover` as the barman user: over the pinned SSH trust to postgres on
/// `address`, WAL copied into the data directory rather than fetched with get-wal (see
/// docs/barman.md), promotion once a target is reached.
pub fn recover_argv(
    server: &str,
    backup: &str,
    data_dir: &str,
    address: &str,
    target: &Target,
) -> Vec<String> {
    let mut argv = vec![
        "/usr/bin/barman".to_string(),
        "recover".into(),
        "--remote-ssh-command".into(),
        format!("ssh postgres@{address}"),
        "--no-get-wal".into(),
    ];
    argv.extend(target.barman_options());
    argv.extend([server.to_string(), backup.to_string(), data_dir.to_string()]);
    argv
}

/// A WAL switch on the backed-up server, waited for until the segment is in the archive.
pub fn switch_wal_argv(server: &str) -> Vec<String> {
    [
        "/usr/bin/barman",
        "switch-wal",
        "--archive",
        "--archive-timeout",
        "60",
        server,
    ]
    .map(String::from)
    .to_vec()
}

/// The server log's account of where recovery stopped (`recovery stopping before commit of
/// transaction 745, time 2026-11-27 10:15:00.2+00`), the last one when there are several.
pub fn stop_line(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| {
            l.find("recovery stopping ")
                .map(|i| l[i..].trim().to_string())
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, status: &str, end: &str) -> BackupInfo {
        BackupInfo {
            server: "ulb".into(),
            barman_host: "chimay".into(),
            id: id.into(),
            status: status.into(),
            begin_time: None,
            end_time: Some(end.into()),
            size_bytes: None,
            begin_wal: None,
            end_wal: None,
        }
    }

    #[test]
    fn times_with_a_zone_only() {
        let base = parse_time("2026-11-27 10:15:00+00").unwrap();
        assert_eq!(base, 1_795_774_500 * 1_000_000);
        assert_eq!(parse_time("2026-11-27T10:15:00Z").unwrap(), base);
        assert_eq!(parse_time("2026-11-27 11:15:00+01:00").unwrap(), base);
        assert_eq!(parse_time("2026-11-27 04:45:00-0530").unwrap(), base);
        assert_eq!(
            parse_time("2026-11-27 10:15:00.25+00").unwrap(),
            base + 250_000
        );
        assert_eq!(
            parse_time("2026-11-27 10:15:00.123456+00:00").unwrap(),
            base + 123_456
        );
        assert_eq!(
            parse_time("2000-02-29 00:00:00Z").unwrap(),
            951_782_400_000_000
        );
        for bad in [
            "2026-11-27 10:15:00",
            "yesterday",
            "2026-02-30 10:00:00+00",
            "2026-11-27 24:00:00+00",
            "2026-11-27 10:15:00.+00",
            "2026-11-27 10:15:00+ab",
            "2026-11-27 10:15:00+00; drop table x",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(
            parse_time("2026-11-27 10:15:00")
                .unwrap_err()
                .contains("time zone is missing")
        );
    }

    #[test]
    fn lsns_xids_and_one_target_at_most() {
        assert_eq!(parse_lsn("16/b374d848").unwrap(), "16/B374D848");
        assert!(parse_lsn("0/").is_err());
        assert!(parse_lsn("123456789/0").is_err());
        assert!(parse_lsn("0/3000148'").is_err());
        assert_eq!(parse_xid("745").unwrap(), 745);
        for bad in ["2", "-5", "+7", "7x", ""] {
            assert!(parse_xid(bad).is_err(), "{bad}");
        }
        assert_eq!(Target::from_options(None, None, None).unwrap(), Target::End);
        let err =
            Target::from_options(Some("2026-11-27 10:15:00+00"), Some("0/1"), None).unwrap_err();
        assert!(err.contains("at most one"), "{err}");
        let err = Target::from_options(Some("noon"), None, None).unwrap_err();
        assert!(
            err.starts_with("--target-time \"noon\": use YYYY-MM-DD"),
            "{err}"
        );
    }

    #[test]
    fn host_names_and_backup_ids() {
        for good in ["restored", "ulb-2", "r1"] {
            assert!(check_host_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Ulb",
            "ulb_2",
            "-x",
            "x-",
            "123",
            "a.b",
            "x y",
            &"a".repeat(64),
        ] {
            assert!(check_host_name(bad).is_err(), "{bad}");
        }
        assert!(check_backup_id("20261127T101500").is_ok());
        assert!(check_backup_id("latest").is_err());
    }

    #[test]
    fn the_newest_backup_that_ended_before_the_target() {
        let backups = [
            backup("20261127T090000", "DONE", "2026-11-27 09:00:05+00:00"),
            backup("20261127T100000", "DONE", "2026-11-27 10:00:05.5+00:00"),
            backup("20261127T110000", "FAILED", "2026-11-27 11:00:05+00:00"),
            backup("20261127T120000", "DONE", "2026-11-27 12:00:05+00:00"),
        ];
        let at = |t: &str| Target::from_options(Some(t), None, None).unwrap();
        let pick = |t: &Target, id| choose_backup(&backups, t, id).map(|b| b.id.as_str());
        assert_eq!(pick(&Target::End, None), Ok("20261127T120000"));
        assert_eq!(
            pick(&at("2026-11-27 11:30:00+00"), None),
            Ok("20261127T100000")
        );
        assert_eq!(
            pick(&at("2026-11-27 10:00:05.6+00"), None),
            Ok("20261127T100000")
        );
        assert_eq!(
            pick(&at("2026-11-27 10:00:05.4+00"), None),
            Ok("20261127T090000")
        );
        let err = pick(&at("2026-11-27 09:00:00+00"), None).unwrap_err();
        assert!(
            err.contains("before the end of the oldest backup of ulb (20261127T090000 ended at 2026-11-27 09:00:05+00:00)"),
            "{err}"
        );
        assert_eq!(
            pick(&Target::Lsn("0/1".into()), Some("20261127T090000")),
            Ok("20261127T090000")
        );
        assert!(
            pick(&Target::End, Some("20261127T110000"))
                .unwrap_err()
                .contains("is FAILED")
        );
        assert!(
            pick(&at("2026-11-27 09:30:00+00"), Some("20261127T120000"))
                .unwrap_err()
                .contains("not before --target-time")
        );
        assert!(pick(&Target::End, Some("20261127T130000")).is_err());
        assert!(choose_backup(&[], &Target::End, None).is_err());
    }

    #[test]
    fn recover_arguments() {
        let t = Target::from_options(Some("2026-11-27 10:15:00+00"), None, None).unwrap();
        assert_eq!(
            recover_argv(
                "ulb",
                "20261127T090000",
                "/opt/postgres/data",
                "10.1.0.9",
                &t
            )
            .join(" "),
            "/usr/bin/barman recover --remote-ssh-command ssh postgres@10.1.0.9 --no-get-wal \
             --target-time 2026-11-27 10:15:00+00 --target-action promote ulb 20261127T090000 \
             /opt/postgres/data"
        );
        assert!(
            !recover_argv("ulb", "x", "/d", "a", &Target::End)
                .iter()
                .any(|a| a.starts_with("--target"))
        );
    }

    #[test]
    fn reads_where_recovery_stopped() {
        let log = "LOG:  starting point-in-time recovery to 2026-11-27 10:15:00+00\n\
                   2026-11-27 10:20:01 UTC [42] LOG:  recovery stopping before commit of \
                   transaction 745, time 2026-11-27 10:15:00.712+00\n\
                   LOG:  redo done at 0/5000A10";
        assert_eq!(
            stop_line(log).as_deref(),
            Some(
                "recovery stopping before commit of transaction 745, time 2026-11-27 10:15:00.712+00"
            )
        );
        assert_eq!(stop_line("LOG: redo done"), None);
    }
}
