//! The milter client's input: a filter's byte stream cut into packets and
//! decoded as replies, and end-of-message edits applied to a message —
//! a reply or an error, never a panic.
#![no_main]
use corepost::milter::codec::{FrameReader, Response, decode_reply};
use corepost::milter::edit::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (message, stream) = data.split_at(data.len() / 3);
    let mut m = Message::parse(message);
    let _ = m.milter_headers(false);
    let _ = m.milter_body();
    let mut rest = stream;
    while let Ok(Some((command, payload, used))) = FrameReader::next(rest) {
        assert!(used >= 5 && used <= rest.len());
        match decode_reply(command, payload) {
            Ok(Response::AddHeader { name, value }) => m.add_header(&name, &value),
            Ok(Response::ChangeHeader { index, name, value }) => {
                m.change_header(index, &name, &value)
            }
            Ok(Response::InsertHeader { index, name, value }) => {
                m.insert_header(index, &name, &value)
            }
            Ok(Response::ReplaceBody(body)) => m.replace_body(&body),
            _ => {}
        }
        rest = &rest[used..];
    }
    let _ = m.assemble();
});
