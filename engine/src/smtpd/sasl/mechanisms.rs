//! PLAIN (RFC 4616) and LOGIN, the two mechanisms corepost's own password
//! file back end speaks. Both carry the password itself, so they are only
//! offered under TLS unless `smtpd_tls_auth_only = no`.

use super::Step;
use super::password_file::PasswordFile;
use std::sync::Arc;

/// A PLAIN or LOGIN exchange against the password file.
pub enum Local {
    Plain {
        file: Arc<PasswordFile>,
    },
    Login {
        file: Arc<PasswordFile>,
        user: Option<String>,
    },
}

impl Local {
    /// The exchange for `mechanism` (upper case), if corepost has it.
    pub fn new(mechanism: &str, file: Arc<PasswordFile>) -> Option<Local> {
        match mechanism {
            "PLAIN" => Some(Local::Plain { file }),
            "LOGIN" => Some(Local::Login { file, user: None }),
            _ => None,
        }
    }

    pub async fn step(&mut self, response: Option<Vec<u8>>) -> Step {
        match self {
            Local::Plain { file } => match response {
                None => Step::Challenge(Vec::new()),
                Some(r) => match parse_plain(&r) {
                    Ok((user, password)) => verify(file, user, password).await,
                    Err(reason) => Step::Failure {
                        reason: reason.into(),
                        user: None,
                    },
                },
            },
            Local::Login { file, user } => match (user.take(), response) {
                (None, None) => Step::Challenge(b"Username:".to_vec()),
                (None, Some(name)) => match String::from_utf8(name) {
                    Ok(name) => {
                        *user = Some(name);
                        Step::Challenge(b"Password:".to_vec())
                    }
                    Err(_) => Step::Failure {
                        reason: "invalid user name".into(),
                        user: None,
                    },
                },
                (Some(name), Some(password)) => match String::from_utf8(password) {
                    Ok(password) => verify(file, name, password).await,
                    Err(_) => Step::Failure {
                        reason: "authentication failure".into(),
                        user: Some(name),
                    },
                },
                (Some(name), None) => {
                    *user = Some(name);
                    Step::Challenge(b"Password:".to_vec())
                }
            },
        }
    }
}

/// `authzid NUL authcid NUL password`; a different authorization identity
/// (acting for another user) is not supported.
pub fn parse_plain(data: &[u8]) -> Result<(String, String), &'static str> {
    let mut parts = data.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed PLAIN response");
    };
    let (Ok(authz), Ok(authc), Ok(password)) = (
        std::str::from_utf8(authz),
        std::str::from_utf8(authc),
        std::str::from_utf8(password),
    ) else {
        return Err("malformed PLAIN response");
    };
    if authc.is_empty() {
        return Err("malformed PLAIN response");
    }
    if !authz.is_empty() && authz != authc {
        return Err("authorization identity differs from authentication identity");
    }
    Ok((authc.to_string(), password.to_string()))
}

/// Check the password on the executor's blocking thread (a hash costs
/// milliseconds of CPU, which must not stall the core's other sessions).
async fn verify(file: &Arc<PasswordFile>, user: String, password: String) -> Step {
    let file = Arc::clone(file);
    let name = user.clone();
    let result = glommio::executor()
        .spawn_blocking(move || file.verify(&name, &password))
        .await;
    match result {
        Ok(true) => Step::Success(user),
        Ok(false) => Step::Failure {
            reason: "authentication failure".into(),
            user: Some(user),
        },
        Err(e) => Step::TempFailure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_responses() {
        assert_eq!(
            parse_plain(b"\0alice\0secret").unwrap(),
            ("alice".into(), "secret".into())
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw").unwrap(),
            ("alice".into(), "pw".into())
        );
        assert!(parse_plain(b"bob\0alice\0pw").is_err());
        assert!(parse_plain(b"alice\0secret").is_err());
        assert!(parse_plain(b"\0\0pw").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }

    proptest! {
        #[test]
        fn any_plain_response_is_handled(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_plain(&data);
        }
    }
}
