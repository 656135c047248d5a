//! One milter for one SMTP session (or one local submission): the socket,
//! the negotiated options and Postfix's milter8 state machine — which
//! events are sent, which replies end the conversation, and what the
//! default action answers once the milter has failed.

use super::codec::{self, Arg, Response, action, cmd, proto};
use super::edit::{EnvelopeEdit, Message};
use super::spec::{DefaultAction, MilterSpec, Target};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::sync::Arc;
use std::time::Duration;

/// A milter's decision in Postfix's terms: an SMTP reply (`550 5.7.1 …`,
/// possibly multi-line), discard, hold (quarantine) or shutdown (421).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Reply(String),
    Discard,
    Hold,
    Shutdown,
}

pub const REJECT: &str = "550 5.7.1 Command rejected";
pub const TEMPFAIL: &str = "451 4.7.1 Service unavailable - try again later";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Error,
    Closed,
    Ready,
    Envelope,
    Message,
    AcceptCon,
    AcceptMsg,
    RejectCon,
}

enum Stream {
    Tcp(glommio::net::TcpStream),
    Unix(glommio::net::UnixStream),
}

/// Where warnings go (`warning: milter …` lines).
pub type Log<'a> = &'a dyn Fn(&str);

pub struct Conn {
    pub spec: Arc<MilterSpec>,
    stream: Option<Stream>,
    input: Vec<u8>,
    state: State,
    def_reply: Option<Verdict>,
    ev_mask: u32,
    np_mask: u32,
    skip_event: Option<u8>,
    /// Macro lists the milter asked for, by SMFIM class.
    pub macro_lists: [Option<Vec<String>>; 7],
}

/// How an exchange failed.
enum IoError {
    Timeout,
    Closed,
    Io(std::io::Error),
    Packet(codec::DecodeError),
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::Timeout => write!(f, "Connection timed out"),
            // What Postfix prints for an end of file from the milter.
            IoError::Closed => write!(f, "Application error"),
            IoError::Io(e) => write!(f, "{}", errno_text(e)),
            IoError::Packet(e) => write!(f, "{e}"),
        }
    }
}

/// `%m` as Postfix prints it: the strerror text without Rust's suffix.
pub fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, IoError>>,
) -> Result<T, IoError> {
    let timeout = async {
        glommio::timer::sleep(limit).await;
        Err(IoError::Timeout)
    };
    futures_lite::future::or(work, timeout).await
}

impl Conn {
    pub fn new(spec: Arc<MilterSpec>) -> Conn {
        Conn {
            spec,
            stream: None,
            input: Vec::new(),
            state: State::Closed,
            def_reply: None,
            ev_mask: 0,
            np_mask: 0,
            skip_event: None,
            macro_lists: Default::default(),
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn close(&mut self) {
        self.stream = None;
        self.input.clear();
    }

    /// Postfix's milter8_comm_error: the default action answers from now on.
    fn comm_error(&mut self) {
        self.close();
        self.def_reply = match self.spec.default_action {
            DefaultAction::Accept => None,
            DefaultAction::Reject => Some(Verdict::Reply("550 5.5.0 Service unavailable".into())),
            DefaultAction::Tempfail => Some(Verdict::Reply(TEMPFAIL.into())),
            DefaultAction::Quarantine => Some(Verdict::Hold),
        };
        self.state = State::Error;
    }

    /// Postfix's milter8_conf_error (a malformed reply or edit request).
    fn conf_error(&mut self) {
        self.close();
        self.def_reply = match self.spec.default_action {
            DefaultAction::Accept => None,
            DefaultAction::Quarantine => Some(Verdict::Hold),
            _ => Some(Verdict::Reply(
                "451 4.3.5 Server configuration problem - try again later".into(),
            )),
        };
        self.state = State::Error;
    }

    async fn write(&mut self, bytes: &[u8], limit: Duration) -> Result<(), IoError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(IoError::Closed);
        };
        within(limit, async {
            match stream {
                Stream::Tcp(s) => s.write_all(bytes).await,
                Stream::Unix(s) => s.write_all(bytes).await,
            }
            .map_err(IoError::Io)
        })
        .await
    }

    async fn read_packet(&mut self, limit: Duration) -> Result<(u8, Vec<u8>), IoError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(IoError::Closed);
        };
        let input = &mut self.input;
        within(limit, async {
            loop {
                if let Some((c, data, used)) =
                    codec::FrameReader::next(input).map_err(IoError::Packet)?
                {
                    let packet = (c, data.to_vec());
                    input.drain(..used);
                    return Ok(packet);
                }
                let mut chunk = [0u8; 16384];
                let n = match stream {
                    Stream::Tcp(s) => s.read(&mut chunk).await,
                    Stream::Unix(s) => s.read(&mut chunk).await,
                }
                .map_err(IoError::Io)?;
                if n == 0 {
                    return Err(IoError::Closed);
                }
                input.extend_from_slice(&chunk[..n]);
            }
        })
        .await
    }

    /// Open the socket and negotiate (Postfix's milter8_connect). A new
    /// connection per SMTP session, as libmilter closes it at the end.
    pub async fn open(&mut self, log: Log<'_>) {
        let name = self.spec.name.clone();
        let opened = within(self.spec.connect_timeout, async {
            match &self.spec.target {
                Target::Inet(hp) => glommio::net::TcpStream::connect(hp.as_str())
                    .await
                    .map(|s| {
                        let _ = s.set_nodelay(true);
                        Stream::Tcp(s)
                    })
                    .map_err(|e| IoError::Io(e.into())),
                Target::Unix(p) => glommio::net::UnixStream::connect(p)
                    .await
                    .map(Stream::Unix)
                    .map_err(|e| IoError::Io(e.into())),
            }
        })
        .await;
        match opened {
            Ok(s) => self.stream = Some(s),
            Err(e) => {
                log(&format!("warning: connect to Milter service {name}: {e}"));
                return self.comm_error();
            }
        }
        let (version, events) = (self.spec.version, self.spec.events);
        self.np_mask = proto::NOSEND_MASK & !events;
        let optneg = codec::encode(
            cmd::OPTNEG,
            &[
                Arg::Long(version),
                Arg::Long(action::ALL),
                Arg::Long(events),
            ],
        );
        let timeout = self.spec.command_timeout;
        if let Err(e) = self.write(&optneg, timeout).await {
            log(&format!(
                "warning: milter {name}: error writing command: {e}"
            ));
            log(&format!(
                "warning: milter {name}: write error in initial handshake"
            ));
            return self.comm_error();
        }
        let reply = match self.read_packet(timeout).await {
            Ok(r) => r,
            Err(e) => {
                log(&format!(
                    "warning: milter {name}: can't read SMFIC_OPTNEG reply packet header: {e}"
                ));
                log(&format!(
                    "warning: milter {name}: read error in initial handshake"
                ));
                return self.comm_error();
            }
        };
        if reply.0 != cmd::OPTNEG {
            log(&format!(
                "warning: milter {name}: unexpected reply \"{}\" in initial handshake",
                reply.0 as char
            ));
            return self.comm_error();
        }
        self.negotiated(codec::decode_reply(reply.0, &reply.1), log);
    }

    fn negotiated(&mut self, reply: Result<Response, codec::DecodeError>, log: Log<'_>) {
        let name = self.spec.name.clone();
        let my_version = self.spec.version;
        let Ok(Response::OptNeg {
            version,
            actions,
            protocol,
            macros,
        }) = reply
        else {
            if let Err(e) = reply {
                log(&format!("warning: milter {name}: {e}"));
            }
            log(&format!(
                "warning: milter {name}: read error in initial handshake"
            ));
            return self.comm_error();
        };
        if version > my_version {
            log(&format!(
                "warning: milter {name}: protocol version {version} conflict with MTA protocol version {my_version}"
            ));
            return self.comm_error();
        }
        if actions & action::ALL != actions {
            log(&format!(
                "warning: milter {name}: request mask 0x{actions:x} conflict with MTA request mask 0x{:x}",
                action::ALL
            ));
            return self.comm_error();
        }
        self.ev_mask = protocol;
        if version < my_version {
            // Events the milter's older version does not define.
            let older = [
                (6, proto::V6_MASK),
                (4, proto::V4_MASK),
                (3, proto::V3_MASK),
                (2, proto::V2_MASK),
            ];
            match older.iter().find(|(v, _)| *v <= version) {
                Some((_, mask)) => self.np_mask |= proto::NOSEND_MASK & !mask,
                None => log(&format!(
                    "warning: milter {name}: unexpected protocol version {version}"
                )),
            }
        }
        self.state = State::Ready;
        self.def_reply = None;
        self.skip_event = None;
        for (class, names) in macros {
            match self.macro_lists.get_mut(class as usize) {
                Some(slot) => {
                    let list = super::macros::split_names(&names);
                    *slot = (!list.is_empty()).then_some(list);
                }
                None => log(&format!(
                    "warning: milter {name}: ignoring unknown macro type {class}"
                )),
            }
        }
    }

    /// Send one event and read the reply (Postfix's milter8_event).
    /// `message` receives end-of-message edits.
    #[allow(clippy::too_many_arguments)]
    async fn event(
        &mut self,
        log: Log<'_>,
        event: u8,
        skip_flag: u32,
        skip_reply: bool,
        macros: &[(String, String)],
        args: &[Arg<'_>],
        timeout: Duration,
        message: Option<&mut Message>,
    ) -> Option<Verdict> {
        if self.stream.is_none() || self.def_reply.is_some() {
            return self.def_reply.clone();
        }
        if skip_flag & self.np_mask != 0 {
            return self.def_reply.clone();
        }
        match self.skip_event {
            Some(skip) if skip == event => return self.def_reply.clone(),
            Some(_) => self.skip_event = None,
            None => {}
        }
        let mut out = codec::encode_macros(event, macros);
        if skip_flag & self.ev_mask == 0 {
            out.extend(codec::encode(event, args));
        }
        if let Err(e) = self.write(&out, timeout).await {
            log(&format!(
                "warning: milter {}: error writing command: {e}",
                self.name()
            ));
            self.comm_error();
            return self.def_reply.clone();
        }
        if skip_flag & self.ev_mask != 0 || skip_reply {
            return self.def_reply.clone();
        }
        self.replies(log, event, timeout, message).await
    }

    /// Read replies until a decision (edits and progress come first).
    async fn replies(
        &mut self,
        log: Log<'_>,
        event: u8,
        timeout: Duration,
        mut message: Option<&mut Message>,
    ) -> Option<Verdict> {
        let in_connect = event == cmd::CONNECT || event == cmd::HELO;
        let mut new_body: Option<Vec<u8>> = None;
        let mut body_lockout = false;
        loop {
            let (c, data) = match self.read_packet(timeout).await {
                Ok(p) => p,
                Err(e) => {
                    log(&format!(
                        "warning: milter {}: can't read {} reply packet header: {e}",
                        self.name(),
                        cmd::name(event)
                    ));
                    self.comm_error();
                    return self.def_reply.clone();
                }
            };
            let reply = match codec::decode_reply(c, &data) {
                Ok(r) => r,
                Err(e) => {
                    log(&format!("warning: milter {}: {e}", self.name()));
                    self.comm_error();
                    return self.def_reply.clone();
                }
            };
            if !matches!(reply, Response::ReplaceBody(_))
                && let Some(body) = new_body.take()
                && let Some(m) = message.as_deref_mut()
            {
                m.replace_body(&body);
                body_lockout = true;
            }
            match reply {
                Response::Progress => continue,
                Response::Continue => return self.def_reply.clone(),
                Response::Accept => {
                    if in_connect {
                        self.close();
                        self.state = State::AcceptCon;
                    } else {
                        self.state = State::AcceptMsg;
                    }
                    return self.def_reply.clone();
                }
                Response::Discard => {
                    if in_connect {
                        log(&format!(
                            "warning: milter {}: DISCARD action is not allowed for connect or helo",
                            self.name()
                        ));
                        return self.def_reply.clone();
                    }
                    self.state = State::AcceptMsg;
                    return Some(Verdict::Discard);
                }
                Response::Reject => return self.final_reply(in_connect, REJECT.into()),
                Response::Tempfail => return self.final_reply(in_connect, TEMPFAIL.into()),
                Response::Shutdown => {
                    self.close();
                    self.state = State::RejectCon;
                    self.def_reply = Some(Verdict::Shutdown);
                    return self.def_reply.clone();
                }
                Response::ReplyCode(text) => match checked_reply(&text) {
                    Some(reply) => return self.final_reply(in_connect, reply),
                    None => {
                        log(&format!(
                            "warning: milter {}: malformed reply: {text}",
                            self.name()
                        ));
                        self.conf_error();
                        return self.def_reply.clone();
                    }
                },
                Response::Quarantine(_) => {
                    self.def_reply = Some(Verdict::Hold);
                    continue;
                }
                Response::Skip => {
                    self.skip_event = Some(event);
                    return self.def_reply.clone();
                }
                edit => {
                    let Some(m) = message.as_deref_mut().filter(|_| event == cmd::BODYEOB) else {
                        log(&format!(
                            "warning: milter {}: unexpected filter response {} after event {}",
                            self.name(),
                            edit.name(),
                            cmd::name(event)
                        ));
                        self.comm_error();
                        return self.def_reply.clone();
                    };
                    if let Err(why) = self.apply(m, edit, &mut new_body, body_lockout) {
                        log(&format!("warning: milter {}: {why}", self.name()));
                        self.conf_error();
                        return self.def_reply.clone();
                    }
                }
            }
        }
    }

    /// A final reject/tempfail/custom reply; at connect or HELO it also
    /// answers every later command (Postfix's MILTER8_STAT_REJECT_CON).
    fn final_reply(&mut self, in_connect: bool, reply: String) -> Option<Verdict> {
        if in_connect {
            self.close();
            self.state = State::RejectCon;
            self.def_reply = Some(Verdict::Reply(reply));
            return self.def_reply.clone();
        }
        Some(Verdict::Reply(reply))
    }

    fn apply(
        &self,
        m: &mut Message,
        edit: Response,
        new_body: &mut Option<Vec<u8>>,
        body_lockout: bool,
    ) -> Result<(), String> {
        m.leading_space = self.ev_mask & proto::HDR_LEADSPC != 0;
        match edit {
            Response::ChangeHeader { index, name, value } => {
                if name.is_empty() {
                    return Err("null change header name".into());
                }
                m.change_header(index, &name, &value);
            }
            Response::AddHeader { name, value } => m.add_header(&name, &value),
            Response::InsertHeader { index, name, value } => m.insert_header(index, &name, &value),
            Response::ChangeFrom { address, args } => {
                m.envelope.push(EnvelopeEdit::ChangeFrom(address, args))
            }
            Response::AddRcpt { address, args } => {
                m.envelope.push(EnvelopeEdit::AddRcpt(address, args))
            }
            Response::DelRcpt(address) => m.envelope.push(EnvelopeEdit::DelRcpt(address)),
            Response::ReplaceBody(chunk) => {
                if body_lockout {
                    return Err(
                        "body replacement requests can't currently be mixed with other requests"
                            .into(),
                    );
                }
                new_body
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&chunk);
            }
            other => return Err(format!("unexpected filter response {}", other.name())),
        }
        Ok(())
    }

    /// The macro list for `stage`: the milter's own, else the configured.
    pub fn macro_names<'a>(
        &'a self,
        stage: super::macros::Stage,
        configured: &'a super::macros::MacroLists,
    ) -> &'a [String] {
        self.macro_lists
            .get(stage as usize)
            .and_then(|l| l.as_deref())
            .unwrap_or_else(|| configured.get(stage))
    }

    /// SMFIC_CONNECT after opening the socket.
    pub async fn connect(
        &mut self,
        log: Log<'_>,
        macros: &dyn Fn(&Conn) -> Vec<(String, String)>,
        host: &str,
        addr: Option<std::net::SocketAddr>,
    ) -> Option<Verdict> {
        self.open(log).await;
        if self.state != State::Ready {
            return self.def_reply.clone();
        }
        self.state = State::Envelope;
        let m = macros(self);
        let skip = self.ev_mask & proto::NR_CONN != 0;
        let t = self.spec.command_timeout;
        match addr {
            Some(a) => {
                let ip = a.ip().to_string();
                let family = if a.is_ipv4() { b'4' } else { b'6' };
                let args = [
                    Arg::Str(host),
                    Arg::Octet(family),
                    Arg::Short(a.port()),
                    Arg::Str(&ip),
                ];
                self.event(
                    log,
                    cmd::CONNECT,
                    proto::NOCONNECT,
                    skip,
                    &m,
                    &args,
                    t,
                    None,
                )
                .await
            }
            None => {
                let args = [Arg::Str(host), Arg::Octet(b'U')];
                self.event(
                    log,
                    cmd::CONNECT,
                    proto::NOCONNECT,
                    skip,
                    &m,
                    &args,
                    t,
                    None,
                )
                .await
            }
        }
    }

    /// HELO/EHLO, MAIL, RCPT, DATA and unknown commands.
    pub async fn envelope_event(
        &mut self,
        log: Log<'_>,
        event: u8,
        macros: &[(String, String)],
        args: &[Arg<'_>],
    ) -> Option<Verdict> {
        let (flag, no_reply) = match event {
            cmd::HELO => (proto::NOHELO, proto::NR_HELO),
            cmd::MAIL => (proto::NOMAIL, proto::NR_MAIL),
            cmd::RCPT => (proto::NORCPT, proto::NR_RCPT),
            cmd::DATA => (proto::NODATA, proto::NR_DATA),
            _ => (proto::NOUNKNOWN, proto::NR_UNKN),
        };
        let allowed = match self.state {
            State::Envelope => true,
            State::AcceptMsg => event == cmd::HELO,
            _ => false,
        };
        if !allowed {
            return self.def_reply.clone();
        }
        let skip = self.ev_mask & no_reply != 0;
        let t = self.spec.command_timeout;
        self.event(log, event, flag, skip, macros, args, t, None)
            .await
    }

    /// Whether the message stage will talk to this milter.
    pub fn wants_message(&self) -> bool {
        self.state == State::Envelope
    }

    /// Headers, end of headers, body chunks and end of message.
    pub async fn message(
        &mut self,
        log: Log<'_>,
        message: &mut Message,
        eoh_macros: &[(String, String)],
        eod_macros: &[(String, String)],
    ) -> Option<Verdict> {
        if self.state != State::Envelope {
            return self.def_reply.clone();
        }
        self.state = State::Message;
        let verdict = self.content(log, message, eoh_macros, eod_macros).await;
        if matches!(self.state, State::Message | State::AcceptMsg) {
            self.state = State::Envelope;
        }
        verdict
    }

    fn message_done(&self) -> bool {
        self.state != State::Message
    }

    async fn content(
        &mut self,
        log: Log<'_>,
        message: &mut Message,
        eoh_macros: &[(String, String)],
        eod_macros: &[(String, String)],
    ) -> Option<Verdict> {
        let t = self.spec.content_timeout;
        let leading = self.ev_mask & proto::HDR_LEADSPC != 0;
        let no_hdr_reply = self.ev_mask & proto::NR_HDR != 0;
        for (name, value) in message.milter_headers(leading) {
            let args = [Arg::Str(&name), Arg::Str(&value)];
            let r = self
                .event(
                    log,
                    cmd::HEADER,
                    proto::NOHDRS,
                    no_hdr_reply,
                    eoh_macros,
                    &args,
                    t,
                    None,
                )
                .await;
            if r.is_some() || self.message_done() {
                return r;
            }
        }
        let skip = self.ev_mask & proto::NR_EOH != 0;
        let r = self
            .event(log, cmd::EOH, proto::NOEOH, skip, eoh_macros, &[], t, None)
            .await;
        if r.is_some() || self.message_done() {
            return r;
        }
        let body = message.milter_body();
        let skip = self.ev_mask & proto::NR_BODY != 0;
        for chunk in body.chunks(codec::CHUNK_SIZE) {
            let args = [Arg::Bytes(chunk)];
            let r = self
                .event(
                    log,
                    cmd::BODY,
                    proto::NOBODY,
                    skip,
                    eod_macros,
                    &args,
                    t,
                    None,
                )
                .await;
            if r.is_some() || self.message_done() {
                return r;
            }
        }
        self.event(
            log,
            cmd::BODYEOB,
            0,
            false,
            eod_macros,
            &[],
            t,
            Some(message),
        )
        .await
    }

    /// SMFIC_ABORT: the transaction ended (RSET, a new MAIL, end of data).
    /// A quarantine was for that message only.
    pub async fn abort(&mut self, log: Log<'_>) {
        if self.state != State::Error && self.def_reply == Some(Verdict::Hold) {
            self.def_reply = None;
        }
        if matches!(
            self.state,
            State::Envelope | State::Message | State::AcceptMsg
        ) {
            let t = self.spec.command_timeout;
            if let Err(e) = self.write(&codec::encode(cmd::ABORT, &[]), t).await {
                log(&format!(
                    "warning: milter {}: error writing command: {e}",
                    self.name()
                ));
                self.comm_error();
                return;
            }
            self.state = State::Envelope;
        }
    }

    /// SMFIC_QUIT at the end of the session.
    pub async fn quit(&mut self) {
        if matches!(
            self.state,
            State::Envelope | State::Message | State::AcceptMsg
        ) {
            let t = self.spec.command_timeout;
            let _ = self.write(&codec::encode(cmd::QUIT, &[]), t).await;
        }
        self.close();
        self.state = State::Closed;
        self.def_reply = None;
    }

    /// The standing answer for other commands (VRFY, ETRN, AUTH …).
    pub fn standing_reply(&self) -> Option<Verdict> {
        self.def_reply.clone()
    }
}

/// SMFIR_REPLYCODE checked as milter8 does: `4xx`/`5xx`, then a space or
/// dash, and an enhanced status code (if any) of the same class; `%%`
/// becomes `%` and a lone `%` goes (Sendmail uses replies as formats).
fn checked_reply(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let ok = b.len() >= 4
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b[3], b' ' | b'-')
        && !(b.get(4).is_some_and(u8::is_ascii_digit) && b[4] != b[0]);
    if !ok {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(n) => out.push(n),
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_replies_checked_like_milter8() {
        assert_eq!(
            checked_reply("554 5.7.1 100%% spam").as_deref(),
            Some("554 5.7.1 100% spam")
        );
        assert_eq!(checked_reply("250 ok"), None);
        assert_eq!(checked_reply("550 4.7.1 mixed"), None);
        assert_eq!(checked_reply("45x"), None);
        assert_eq!(
            checked_reply("421 4.7.0 bye").as_deref(),
            Some("421 4.7.0 bye")
        );
    }
}
