//! Postfix's user access lists (`authorized_submit_users`,
//! `authorized_mailq_users`, `authorized_flush_users`): a process's real
//! uid is looked up in the password file and its login name ("unknown"
//! when the uid has none) matched against a string list of names,
//! `!name`, `/file/name` and `type:table` elements; the first match
//! decides, and no match (an empty list too) refuses.

use crate::list::match_list_elements;
use crate::tables::TableList;

/// Whether `name` is allowed by `list`.
pub fn user_in_list(list: &str, name: &str) -> Result<bool, String> {
    for element in match_list_elements(list)? {
        let word = element.pattern;
        let hit = if word.contains(':') {
            TableList::open(&word)
                .and_then(|t| t.lookup_first(std::iter::once(name)))
                .map_err(|e| e.to_string())?
                .is_some()
        } else {
            word == name
        };
        if hit {
            return Ok(!element.negated);
        }
    }
    Ok(false)
}

/// The name a list is matched with: the login name of `uid`, or
/// "unknown".
pub fn list_name(uid: u32) -> String {
    login_name(uid).unwrap_or_else(|| "unknown".to_string())
}

/// `authorized_submit_users` (its value in `list`) for the submitter with
/// `uid`: `Err` with Postfix's sendmail/postdrop text when refused. Root
/// is checked like everyone else, as in Postfix.
pub fn may_submit(list: &str, uid: u32) -> Result<(), String> {
    let name = list_name(uid);
    match user_in_list(list, &name) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("User {name}({uid}) is not allowed to submit mail")),
        Err(e) => Err(format!("authorized_submit_users: {e}")),
    }
}

/// The login name of `uid` from the system's user database.
pub fn login_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pwd, buf and result are valid for writing, buf's length is
    // passed; on success pw_name points into buf, which outlives its use.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_list_semantics() {
        assert!(user_in_list("static:anyone", "alice").unwrap());
        assert!(user_in_list("alice, bob", "bob").unwrap());
        assert!(!user_in_list("!bob, static:anyone", "bob").unwrap());
        assert!(user_in_list("!bob, static:anyone", "carol").unwrap());
        assert!(!user_in_list("", "root").unwrap());
        assert!(user_in_list("inline:{ carol=1 }", "carol").unwrap());
    }

    #[test]
    fn submission_refusal_names_the_user_as_postfix_does() {
        assert_eq!(may_submit("static:anyone", 0), Ok(()));
        assert_eq!(
            may_submit("nobody", 0),
            Err("User root(0) is not allowed to submit mail".to_string())
        );
        assert_eq!(
            may_submit("", 4_000_000_000),
            Err("User unknown(4000000000) is not allowed to submit mail".to_string())
        );
    }
}
