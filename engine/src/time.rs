//! Local-time formatting for log lines (`Nov 24 07:30:00`) and RFC 5322
//! dates (`Tue, 24 Nov 2026 07:30:00 +0000 (UTC)`), via the C library's
//! time zone handling.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

struct Local {
    tm: libc::tm,
    zone: String,
}

fn local(secs: i64) -> Option<Local> {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero tm is a valid value of this plain C struct; it is
    // overwritten by localtime_r before being read.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live, properly aligned values for the
    // duration of the call; localtime_r is the thread-safe variant.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone, when set by localtime_r, points to a
        // NUL-terminated string in the C library's static time zone data.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Some(Local { tm, zone })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn name<'a>(table: &'a [&'a str], i: i32) -> &'a str {
    usize::try_from(i)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
        .unwrap_or("???")
}

/// `Nov 24 07:30:00`, the syslog-style stamp of Postfix's log lines.
///
/// A core writes several lines per message within the same second, so each
/// thread keeps the stamp of the current second: `localtime_r` (which takes
/// the C library's time zone lock, shared by every core) and the formatting
/// run once per second and thread. The stamp only names whole seconds, and
/// a time zone change (DST) takes effect on a second boundary, so the text
/// is the same as computing it every time.
pub fn log_stamp() -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const {
            std::cell::RefCell::new((i64::MIN, String::new()))
        };
    }
    let now = now_secs();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now {
            *last = (now, stamp_of(now));
        }
        last.1.clone()
    })
}

fn stamp_of(secs: i64) -> String {
    match local(secs) {
        Some(l) => format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            name(&MONTHS, l.tm.tm_mon),
            l.tm.tm_mday,
            l.tm.tm_hour,
            l.tm.tm_min,
            l.tm.tm_sec
        ),
        None => String::from("??? ?? ??:??:??"),
    }
}

/// `Tue Nov 24 11:41:58`, the arrival-time column of mailq.
pub fn mailq_stamp(secs: i64) -> String {
    match local(secs) {
        Some(l) => format!(
            "{} {} {:>2} {:02}:{:02}:{:02}",
            name(&DAYS, l.tm.tm_wday),
            name(&MONTHS, l.tm.tm_mon),
            l.tm.tm_mday,
            l.tm.tm_hour,
            l.tm.tm_min,
            l.tm.tm_sec
        ),
        None => String::from("??? ??? ?? ??:??:??"),
    }
}

/// RFC 5322 date-time for `secs` since the epoch.
pub fn rfc5322(secs: i64) -> String {
    match local(secs) {
        Some(l) => {
            let off = l.tm.tm_gmtoff / 60;
            let sign = if off < 0 { '-' } else { '+' };
            format!(
                "{}, {} {} {} {:02}:{:02}:{:02} {}{:02}{:02} ({})",
                name(&DAYS, l.tm.tm_wday),
                l.tm.tm_mday,
                name(&MONTHS, l.tm.tm_mon),
                l.tm.tm_year + 1900,
                l.tm.tm_hour,
                l.tm.tm_min,
                l.tm.tm_sec,
                sign,
                off.abs() / 60,
                off.abs() % 60,
                l.zone
            )
        }
        None => String::from("Thu, 1 Jan 1970 00:00:00 +0000"),
    }
}

/// `Mon Nov 24 07:30:00 2026`, the ctime(3) date of an mbox `From ` line.
pub fn asctime_now() -> String {
    match local(now_secs()) {
        Some(l) => format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {}",
            name(&DAYS, l.tm.tm_wday),
            name(&MONTHS, l.tm.tm_mon),
            l.tm.tm_mday,
            l.tm.tm_hour,
            l.tm.tm_min,
            l.tm.tm_sec,
            l.tm.tm_year + 1900
        ),
        None => String::from("Thu Jan  1 00:00:00 1970"),
    }
}

/// RFC 5322 date-time now.
pub fn rfc5322_now() -> String {
    rfc5322(now_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        let d = super::rfc5322(0);
        assert!(d.contains("1970") || d.contains("1969"), "{d}");
        assert_eq!(super::log_stamp().len(), 15);
    }

    #[test]
    fn the_kept_stamp_is_the_one_computed_for_this_second() {
        // Retried if the clock crosses a second between the two readings.
        for _ in 0..3 {
            let before = super::now_secs();
            let kept = super::log_stamp();
            let kept_again = super::log_stamp();
            if super::now_secs() == before {
                assert_eq!(kept, super::stamp_of(before));
                assert_eq!(kept_again, kept);
                return;
            }
        }
        panic!("the clock moved a second three times in a row");
    }
}
