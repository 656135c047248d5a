//! A read-only look at a spool: what `corepost queue list/show/shape` use
//! when the daemon is stopped, and the scan for the last deferral reasons
//! that the running daemon's listing uses too.
//!
//! [`ReadOnlySpool::open`] maps every segment file of a spool directory
//! read-only (`PROT_READ`, opened `O_RDONLY`), replays its records into an
//! [`Index`] exactly as recovery does, and remembers each recipient's last
//! deferral reason. Unlike [`crate::CoreSpool::open`] it never writes: no
//! torn tail is truncated, no segment is sealed, no writer is created, so
//! it is safe to run next to (or instead of) the daemon. A record it cannot
//! validate ends its walk through that segment; the listing is then
//! incomplete, never wrong.

use crate::codec::Decoder;
use crate::frame::{FrameCheck, SEGMENT_HEADER_LEN, SegmentHeader, check_frame, record_len};
use crate::index::{Index, Location};
use crate::queue_id::QueueId;
use crate::record::{Admin, Envelope, Outcome, OutcomeKind, Outcomes, RecordType};
use crate::segment::{SegmentMap, parse_segment_file_name};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The last deferral reason of each (message, recipient index).
pub type Reasons = HashMap<(QueueId, u32), String>;

/// Call `visit(offset, kind, payload)` for each valid record of a segment's
/// bytes (`data` starts with the segment header), stopping at the first
/// unwritten or invalid frame or at the seal.
pub fn for_each_record(data: &[u8], salt: u64, mut visit: impl FnMut(usize, RecordType, &[u8])) {
    let mut at = SEGMENT_HEADER_LEN;
    while let FrameCheck::Valid {
        kind,
        payload,
        len,
        total,
    } = check_frame(data, at, salt)
    {
        if kind == RecordType::Seal {
            return;
        }
        let Some(bytes) = data.get(payload..payload + len) else {
            return;
        };
        visit(at, kind, bytes);
        at += total;
    }
}

/// Fold the deferral outcomes of one segment's records into `reasons`.
fn collect_reasons(kind: RecordType, payload: &[u8], reasons: &mut Reasons) {
    for o in decode_outcomes(kind, payload) {
        match o.kind {
            OutcomeKind::Deferred { .. } => {
                reasons.insert((o.queue_id, o.recipient), o.reply);
            }
            _ => {
                reasons.remove(&(o.queue_id, o.recipient));
            }
        }
    }
}

/// The outcomes an Outcome or Outcomes record carries (none for other
/// records or undecodable payloads).
fn decode_outcomes(kind: RecordType, payload: &[u8]) -> Vec<Outcome> {
    let mut d = Decoder::new(payload);
    match kind {
        RecordType::Outcome => Outcome::decode(&mut d).map(|o| vec![o]).unwrap_or_default(),
        RecordType::Outcomes => Outcomes::decode(&mut d).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The last deferral reasons recorded in live segments (the running
/// daemon's own mappings; only published bytes are read).
pub fn deferral_reasons<'a>(segments: impl Iterator<Item = &'a SegmentMap>) -> Reasons {
    let mut reasons = Reasons::new();
    for seg in segments {
        let Some(data) = seg.read(0, seg.published()) else {
            continue;
        };
        for_each_record(data, seg.header().salt, |_, kind, payload| {
            collect_reasons(kind, payload, &mut reasons)
        });
    }
    reasons
}

/// One segment file mapped read-only.
struct ReadOnlySegment {
    map: memmap2::Mmap,
}

/// A queue rebuilt from one core directory without writing to it.
pub struct ReadOnlySpool {
    segments: BTreeMap<u64, ReadOnlySegment>,
    index: Index,
    reasons: Reasons,
}

impl ReadOnlySpool {
    /// Map and replay every segment of `dir` (a `core-N` directory).
    pub fn open(dir: &Path) -> Result<ReadOnlySpool, String> {
        let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| Some((parse_segment_file_name(e.file_name().to_str()?)?, e.path())))
            .collect();
        files.sort();
        let mut spool = ReadOnlySpool {
            segments: BTreeMap::new(),
            index: Index::default(),
            reasons: Reasons::new(),
        };
        for (seq, path) in files {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if file.metadata().map(|m| m.len()).unwrap_or(0) < SEGMENT_HEADER_LEN as u64 {
                continue;
            }
            // SAFETY: the mapping is read-only and private to this process;
            // the daemon is the only writer and only ever appends above the
            // bytes it published, which every frame's checksum covers, so a
            // concurrent append shows up as an invalid frame (the end of the
            // walk), never as a torn read of validated bytes.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let Ok(header) = SegmentHeader::decode(&map[..SEGMENT_HEADER_LEN]) else {
                continue;
            };
            if header.seq != seq {
                continue;
            }
            let (index, reasons) = (&mut spool.index, &mut spool.reasons);
            for_each_record(&map, header.salt, |offset, kind, payload| {
                let mut d = Decoder::new(payload);
                match kind {
                    RecordType::Message | RecordType::Moved => {
                        if let Ok(env) = Envelope::decode(&mut d) {
                            index.insert(
                                &env,
                                Location {
                                    segment: seq,
                                    offset: offset as u32,
                                    len: record_len(payload.len()) as u32,
                                },
                            );
                        }
                    }
                    RecordType::Outcome | RecordType::Outcomes => {
                        index.apply_outcomes(&decode_outcomes(kind, payload));
                        collect_reasons(kind, payload, reasons);
                    }
                    RecordType::Admin => {
                        if let Ok(a) = Admin::decode(&mut d) {
                            index.apply_admin(&a);
                        }
                    }
                    RecordType::Seal => {}
                }
            });
            spool.segments.insert(seq, ReadOnlySegment { map });
        }
        Ok(spool)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Last deferral reasons per (message, recipient).
    pub fn reasons(&self) -> &Reasons {
        &self.reasons
    }

    /// Envelope and content of a queued message.
    pub fn read(&self, id: &QueueId) -> Option<(Envelope, &[u8])> {
        let entry = self.index.get(id)?;
        let seg = self.segments.get(&entry.location.segment)?;
        let data: &[u8] = &seg.map;
        let offset = entry.location.offset as usize;
        let header = data.get(offset..offset + crate::frame::FRAME_HEADER_LEN)?;
        let len = crate::frame::u32_at(header, 4) as usize;
        let payload_at = offset + crate::frame::FRAME_HEADER_LEN;
        let payload = data.get(payload_at..payload_at.checked_add(len)?)?;
        let mut d = Decoder::new(payload);
        let envelope = Envelope::decode(&mut d).ok()?;
        Some((envelope, &payload[d.position()..]))
    }
}

/// The segment maps of a live spool, for [`deferral_reasons`].
pub fn live_segments<'a>(
    maps: impl Iterator<Item = &'a std::sync::Arc<SegmentMap>>,
) -> impl Iterator<Item = &'a SegmentMap> {
    maps.map(|m| m.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_envelope;
    use crate::{CoreSpool, SpoolOptions};

    #[test]
    fn read_only_view_matches_the_live_spool() {
        let dir = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            segment_size: 64 * 1024,
            ..SpoolOptions::default()
        };
        let (mut spool, _) = CoreSpool::open(dir.path(), 0, 1, options).unwrap();
        let a = spool.new_queue_id();
        let b = spool.new_queue_id();
        spool
            .append_message(&sample_envelope(a, 2), b"Subject: a\r\n\r\nx")
            .unwrap();
        spool
            .append_message(&sample_envelope(b, 1), b"Subject: b\r\n\r\ny")
            .unwrap();
        let deferred = |r: u32, why: &str| Outcome {
            queue_id: a,
            recipient: r,
            kind: OutcomeKind::Deferred { next_attempt: 99 },
            at: 1,
            dsn: "4.4.1".into(),
            reply: why.into(),
            relay: "none".into(),
        };
        spool.record_outcome(&deferred(0, "first")).unwrap();
        spool.record_outcome(&deferred(0, "second")).unwrap();
        // One attempt for both recipients: one Outcomes record.
        spool
            .record_outcomes(&[deferred(0, "third"), deferred(1, "other")])
            .unwrap();
        spool.admin(b, crate::record::AdminAction::Hold).unwrap();
        let live = deferral_reasons(live_segments(spool.segments()));
        assert_eq!(live.get(&(a, 0)).map(String::as_str), Some("third"));
        assert_eq!(live.get(&(a, 1)).map(String::as_str), Some("other"));
        let view = ReadOnlySpool::open(&dir.path().join("core-0")).unwrap();
        assert_eq!(view.index().len(), 2);
        assert!(view.index().get(&b).unwrap().held);
        assert_eq!(
            view.reasons().get(&(a, 0)).map(String::as_str),
            Some("third")
        );
        assert_eq!(view.index().get(&a).unwrap().next_attempt, 99);
        let (env, content) = view.read(&b).unwrap();
        assert_eq!(env.queue_id, b);
        assert_eq!(content, b"Subject: b\r\n\r\ny");
        spool.close().unwrap();
    }
}
