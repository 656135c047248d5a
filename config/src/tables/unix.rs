//! `unix:passwd.byname` and `unix:group.byname` — the system user and group
//! databases (Postfix's dict_unix).
//!
//! Postfix's default `local_recipient_maps` is
//! `proxy:unix:passwd.byname $alias_maps`: a local recipient exists when
//! the system knows the user. The result has the `/etc/passwd` line shape,
//! `name:passwd:uid:gid:gecos:dir:shell` (and `name:passwd:gid:member,…`
//! for groups), as dict_unix returns it.
//!
//! Unlike the other tables this one is not loaded into memory: each lookup
//! asks the C library (`getpwnam_r`/`getgrnam_r`), which may consult NSS
//! (LDAP, sssd, …) and so may block. The key is folded to lower case first,
//! as Postfix does for fixed-case tables. A key containing NUL cannot be a
//! user name and simply does not match.

use std::ffi::{CStr, CString, c_char};

use super::{LookupTable, TableError};

/// Which system database a `unix:` table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Database {
    PasswdByName,
    GroupByName,
}

/// A `unix:` table.
#[derive(Debug)]
pub struct UnixTable {
    spec: String,
    database: Database,
}

/// Start size of the buffer for the strings of one entry; doubled on
/// `ERANGE` up to [`MAX_BUFFER`].
const INITIAL_BUFFER: usize = 1024;
/// Largest buffer tried: a group with very many members can need a lot.
const MAX_BUFFER: usize = 16 * 1024 * 1024;

impl UnixTable {
    /// Open `unix:name`; `name` is `passwd.byname` or `group.byname`.
    pub fn open(spec: &str, name: &str) -> Result<Self, TableError> {
        let database = match name {
            "passwd.byname" => Database::PasswdByName,
            "group.byname" => Database::GroupByName,
            _ => {
                return Err(TableError::bad_spec(
                    spec,
                    "unknown unix: map; corepost supports unix:passwd.byname and unix:group.byname",
                ));
            }
        };
        Ok(UnixTable {
            spec: spec.to_string(),
            database,
        })
    }

    fn failure(&self, function: &str, errno: i32) -> TableError {
        TableError::Lookup {
            spec: self.spec.clone(),
            message: format!("{function}: {}", std::io::Error::from_raw_os_error(errno)),
        }
    }

    fn passwd_entry(&self, name: &CStr) -> Result<Option<String>, TableError> {
        let mut buffer: Vec<c_char> = vec![0; INITIAL_BUFFER];
        loop {
            // SAFETY: `passwd` is plain old data (integers and pointers), for
            // which all-zero bytes are a valid value; getpwnam_r overwrites
            // it before we read it.
            let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: `name` is a valid NUL-terminated string; `entry` and
            // `result` are valid for writes; `buffer` is valid for writes of
            // `buffer.len()` bytes, which is the length we pass. All of them
            // outlive the call, and getpwnam_r is thread-safe (it only
            // writes through the pointers it is given).
            let status = unsafe {
                libc::getpwnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut result,
                )
            };
            match status {
                0 if result.is_null() => return Ok(None),
                0 => {
                    // SAFETY: on success every string field of `entry` is
                    // null or points to a NUL-terminated string inside
                    // `buffer` (or static storage), and `buffer` is neither
                    // freed nor modified until `fields` has copied them.
                    let fields = unsafe {
                        [
                            text(entry.pw_name),
                            text(entry.pw_passwd),
                            entry.pw_uid.to_string(),
                            entry.pw_gid.to_string(),
                            text(entry.pw_gecos),
                            text(entry.pw_dir),
                            text(entry.pw_shell),
                        ]
                    };
                    return Ok(Some(fields.join(":")));
                }
                libc::ERANGE if buffer.len() < MAX_BUFFER => {
                    buffer.resize(buffer.len().saturating_mul(2), 0);
                }
                // POSIX lets these mean "no such user".
                libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
                errno => return Err(self.failure("getpwnam_r", errno)),
            }
        }
    }

    fn group_entry(&self, name: &CStr) -> Result<Option<String>, TableError> {
        let mut buffer: Vec<c_char> = vec![0; INITIAL_BUFFER];
        loop {
            // SAFETY: `group` is plain old data (integers and pointers), for
            // which all-zero bytes are a valid value; getgrnam_r overwrites
            // it before we read it.
            let mut entry: libc::group = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::group = std::ptr::null_mut();
            // SAFETY: as for getpwnam_r above: valid NUL-terminated name,
            // writable `entry`/`result`, and a writable buffer whose real
            // length is passed; all outlive the call.
            let status = unsafe {
                libc::getgrnam_r(
                    name.as_ptr(),
                    &mut entry,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut result,
                )
            };
            match status {
                0 if result.is_null() => return Ok(None),
                0 => {
                    // SAFETY: on success the string fields are null or
                    // NUL-terminated strings inside `buffer`, and `gr_mem`
                    // is null or a null-terminated array (also inside
                    // `buffer`) of such strings; `buffer` stays untouched
                    // while we copy them.
                    let (name, password, members) = unsafe {
                        (
                            text(entry.gr_name),
                            text(entry.gr_passwd),
                            string_array(entry.gr_mem),
                        )
                    };
                    return Ok(Some(format!(
                        "{name}:{password}:{}:{}",
                        entry.gr_gid,
                        members.join(",")
                    )));
                }
                libc::ERANGE if buffer.len() < MAX_BUFFER => {
                    buffer.resize(buffer.len().saturating_mul(2), 0);
                }
                libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
                errno => return Err(self.failure("getgrnam_r", errno)),
            }
        }
    }
}

impl LookupTable for UnixTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        let Ok(name) = CString::new(key.to_lowercase()) else {
            return Ok(None);
        };
        match self.database {
            Database::PasswdByName => self.passwd_entry(&name),
            Database::GroupByName => self.group_entry(&name),
        }
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// Copy a C string field, treating null as empty.
///
/// # Safety
///
/// `pointer` is null or points to a NUL-terminated string that stays valid
/// and unmodified for the duration of the call.
unsafe fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    // SAFETY: non-null, and the caller guarantees a valid NUL-terminated
    // string.
    unsafe { CStr::from_ptr(pointer) }
        .to_string_lossy()
        .into_owned()
}

/// Copy a null-terminated array of C strings (`gr_mem`).
///
/// # Safety
///
/// `array` is null or points to a null-terminated array of pointers, each a
/// NUL-terminated string; all stay valid and unmodified during the call.
unsafe fn string_array(array: *mut *mut c_char) -> Vec<String> {
    let mut out = Vec::new();
    if array.is_null() {
        return out;
    }
    let mut index = 0;
    loop {
        // SAFETY: the array is null-terminated and we stop at the
        // terminator, so `array.add(index)` stays within it.
        let element = unsafe { *array.add(index) };
        if element.is_null() {
            return out;
        }
        // SAFETY: each non-null element is a valid NUL-terminated string
        // (the caller's guarantee).
        out.push(unsafe { text(element) });
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_password_database() {
        let table = UnixTable::open("unix:passwd.byname", "passwd.byname").unwrap();
        let entry = table.lookup("ROOT").unwrap().expect("root exists");
        let fields: Vec<&str> = entry.split(':').collect();
        assert_eq!(fields.len(), 7, "{entry}");
        assert_eq!(fields[0], "root");
        assert_eq!(fields[2], "0");
        assert_eq!(fields[3], "0");
    }

    #[test]
    fn unknown_users_do_not_match() {
        let table = UnixTable::open("unix:passwd.byname", "passwd.byname").unwrap();
        assert_eq!(table.lookup("no-such-user-corepost-test").unwrap(), None);
        assert_eq!(table.lookup("bad\0name").unwrap(), None);
        assert_eq!(table.lookup("").unwrap(), None);
    }

    #[test]
    fn root_group_is_in_the_group_database() {
        let table = UnixTable::open("unix:group.byname", "group.byname").unwrap();
        let entry = table.lookup("root").unwrap().expect("group root exists");
        assert!(entry.starts_with("root:"), "{entry}");
        assert_eq!(entry.split(':').count(), 4, "{entry}");
        assert_eq!(table.lookup("no-such-group-corepost-test").unwrap(), None);
    }

    #[test]
    fn other_maps_are_bad_specs() {
        assert!(matches!(
            UnixTable::open("unix:shadow.byname", "shadow.byname"),
            Err(TableError::BadSpec { .. })
        ));
    }
}
