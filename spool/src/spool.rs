//! [`CoreSpool`]: one core's queue — its segments, writer, index and
//! flusher — with recovery, appends, outcomes, administration and
//! reclamation.
//!
//! Reclamation rules (why they are safe):
//! * Segments are deleted strictly oldest first, and only when no queued
//!   message has its current record there. An outcome record always lives
//!   in a segment at least as new as the message record it refers to, so
//!   deleting oldest-first can never drop a final outcome while the message
//!   it finishes could still be recovered.
//! * A segment held by a few long-deferred messages is compacted: their
//!   records are rewritten (as `Moved`, with their current state) into the
//!   active segment, and the old segment is deleted only after those copies
//!   are durable. On recovery a `Moved` record supersedes the older copy.
//! * Each deletion is made durable (directory fsync) before the next one,
//!   so a crash cannot resurrect an older segment after a newer one is gone.

use crate::codec::{Decoder, Encoder};
use crate::flush::{CoreSync, Durable, FlushPolicy, Flusher, Lsn, SyncMethod, lsn};
use crate::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, record_len};
use crate::index::{Applied, Index, Location};
use crate::queue_id::{QueueId, QueueIdGenerator, now_micros};
use crate::record::{Admin, AdminAction, Envelope, Outcome, Outcomes, RecipientState, RecordType};
use crate::segment::{
    PAGE, RecoveringSegment, ScanEvent, SegmentMap, SegmentWriter, parse_segment_file_name,
    sync_dir,
};
use crate::spare::SparePreparer;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Smallest and largest configurable segment size.
pub const MIN_SEGMENT_SIZE: usize = 64 * 1024;
pub const MAX_SEGMENT_SIZE: usize = 1 << 30;
/// Largest record (a message that big gets a segment of its own).
pub const MAX_RECORD: usize = (u32::MAX as usize) - 2 * 4096;

/// Settings of one core's spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Size of each segment file (`corepost_segment_size`).
    pub segment_size: usize,
    pub policy: FlushPolicy,
    pub sync: SyncMethod,
    /// Compact the oldest segment when its live bytes fall below this
    /// fraction of its size.
    pub compact_below: f64,
}

impl Default for SpoolOptions {
    fn default() -> SpoolOptions {
        SpoolOptions {
            segment_size: 64 << 20,
            policy: FlushPolicy::Always,
            sync: SyncMethod::Msync,
            compact_below: 0.25,
        }
    }
}

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool: {0}")]
    Invalid(String),
    /// A flush failed earlier; the spool accepts nothing more.
    #[error("{0}")]
    Failed(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: usize,
    pub messages: usize,
    /// Damaged records or unreadable segments that were skipped, with where.
    pub skipped: Vec<String>,
    /// Torn tails truncated (`file: bytes`): the unsynced end of the log
    /// at a crash, normal.
    pub truncated: Vec<String>,
    /// Damage that may have lost acknowledged mail: a segment file cut
    /// shorter than it was made (from outside: every segment is made at
    /// full size and synced). Warnings, for the log and `corepost status`.
    pub damaged: Vec<String>,
    /// Directories of cores that no longer exist, taken over by this one.
    pub adopted: Vec<PathBuf>,
}

/// A message appended to the spool.
#[derive(Debug, Clone)]
pub struct Appended {
    pub queue_id: QueueId,
    pub location: Location,
    /// The segment holding it, for readers on other cores.
    pub segment: Arc<SegmentMap>,
    /// Durable once the flusher passes this.
    pub lsn: Lsn,
}

/// A message read back: the envelope, and the content as a slice of the
/// shared mapping (no copy).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub envelope: Envelope,
    segment: Arc<SegmentMap>,
    content: std::ops::Range<usize>,
}

impl StoredMessage {
    pub fn content(&self) -> &[u8] {
        // Published bytes stay readable for as long as the Arc lives.
        self.segment
            .read(self.content.start, self.content.len())
            .unwrap_or_default()
    }
}

/// Read the message record at `offset` of `segment` (any thread).
pub fn read_message(segment: &Arc<SegmentMap>, offset: usize) -> Result<StoredMessage, SpoolError> {
    let bad = |what: &str| {
        SpoolError::Invalid(format!(
            "{}: offset {offset}: {what}",
            segment.path().display()
        ))
    };
    let header = segment
        .read(offset, FRAME_HEADER_LEN)
        .ok_or_else(|| bad("not a published record"))?;
    let kind = header[8];
    if kind != RecordType::Message as u8 && kind != RecordType::Moved as u8 {
        return Err(bad("not a message record"));
    }
    let len = crate::frame::u32_at(header, 4) as usize;
    let payload_at = offset + FRAME_HEADER_LEN;
    let payload = segment
        .read(payload_at, len)
        .ok_or_else(|| bad("record runs past published data"))?;
    let mut d = Decoder::new(payload);
    let envelope = Envelope::decode(&mut d).map_err(|e| bad(&e.to_string()))?;
    let content_at = payload_at + d.position();
    Ok(StoredMessage {
        envelope,
        segment: Arc::clone(segment),
        content: content_at..payload_at + len,
    })
}

/// One core's spool.
#[derive(Debug)]
pub struct CoreSpool {
    dir: PathBuf,
    core: u16,
    options: SpoolOptions,
    segments: BTreeMap<u64, Arc<SegmentMap>>,
    writer: SegmentWriter,
    index: Index,
    ids: QueueIdGenerator,
    flusher: Flusher,
    scratch: Encoder,
    /// Oldest segments emptied by compaction, deletable once the flusher
    /// passes the LSN of the last copy made out of them.
    awaiting_flush: BTreeMap<u64, Lsn>,
    /// Zero-filled segment files made ahead of need (see [`crate::spare`]).
    spares: SparePreparer,
    spare_errors: Vec<String>,
    /// A spare was asked for since the active segment was started.
    spare_requested: bool,
    /// [`RecoveryReport::damaged`] of the last open, kept for status.
    damage: Vec<String>,
}

impl CoreSpool {
    /// Open (creating if needed) `root/core-<core>`, recover it, and adopt
    /// `root/core-<j>` for every `j >= cores` with `j % cores == core`.
    pub fn open(
        root: &Path,
        core: u16,
        cores: u16,
        options: SpoolOptions,
    ) -> Result<(CoreSpool, RecoveryReport), SpoolError> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&options.segment_size) {
            return Err(SpoolError::Invalid(format!(
                "segment size {} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                options.segment_size
            )));
        }
        if cores == 0 || core >= cores || core > crate::queue_id::MAX_CORE {
            return Err(SpoolError::Invalid(format!("core {core} of {cores}")));
        }
        let dir = root.join(format!("core-{core}"));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut report = RecoveryReport::default();
        let spares = SparePreparer::start(&dir, core, options.segment_size.div_ceil(PAGE) * PAGE)
            .map_err(io_err(&dir))?;
        let recovered = recover_dir(&dir, &mut report)?;
        let mut segments = recovered.segments;
        let last = segments
            .iter()
            .next_back()
            .map(|(s, m)| (*s, Arc::clone(m)));
        let (writer, next_lsn) = match (last, recovered.active_tail) {
            (Some((seq, map)), Some(tail)) if map.size() - tail > FRAME_HEADER_LEN * 2 => {
                let w = map
                    .writer(tail)
                    .ok_or_else(|| SpoolError::Invalid("segment writer taken".into()))?;
                (w, lsn(seq, tail))
            }
            _ => {
                // A stop-gap segment: the spool moves onto zero-filled
                // spares as soon as the first one is ready.
                let seq = recovered.max_seq + 1;
                let map = SegmentMap::create(
                    &dir,
                    u32::from(core),
                    seq,
                    stopgap_size(options.segment_size),
                )
                .map_err(io_err(&dir))?;
                segments.insert(seq, Arc::clone(&map));
                let w = map
                    .writer(SEGMENT_HEADER_LEN)
                    .ok_or_else(|| SpoolError::Invalid("segment writer taken".into()))?;
                (w, lsn(seq, SEGMENT_HEADER_LEN))
            }
        };
        let flusher =
            Flusher::start(core, options.policy, options.sync, next_lsn).map_err(io_err(&dir))?;
        flusher.register(writer.segment());
        let mut spool = CoreSpool {
            dir,
            core,
            ids: QueueIdGenerator::new(core, recovered.max_id),
            options,
            segments,
            writer,
            index: recovered.index,
            flusher,
            scratch: Encoder::with_capacity(4096),
            awaiting_flush: BTreeMap::new(),
            spares,
            spare_errors: Vec::new(),
            spare_requested: false,
            damage: Vec::new(),
        };
        spool.adopt(root, cores, &mut report)?;
        report.messages = spool.index.len();
        spool.damage = report.damaged.clone();
        spool.reclaim()?;
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free bytes (for an unprivileged writer) on the spool's file system.
    pub fn free_space(&self) -> std::io::Result<u64> {
        crate::spare::free_space(&self.dir)
    }

    /// Damage found when this spool was opened that may have lost
    /// acknowledged mail (see [`RecoveryReport::damaged`]).
    pub fn damage(&self) -> &[String] {
        &self.damage
    }

    pub fn core(&self) -> u16 {
        self.core
    }

    /// How long this spool's group commits take (see [`crate::FlushStats`]).
    pub fn flush_stats(&self) -> Arc<crate::FlushStats> {
        self.flusher.stats()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Segment files currently on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn segment(&self, seq: u64) -> Option<&Arc<SegmentMap>> {
        self.segments.get(&seq)
    }

    /// Every segment on disk, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Arc<SegmentMap>> {
        self.segments.values()
    }

    /// A fresh queue id for a message this core is receiving.
    pub fn new_queue_id(&mut self) -> QueueId {
        self.ids.next_id()
    }

    /// Append a message (its envelope carries a queue id from
    /// [`CoreSpool::new_queue_id`]). Durable once [`CoreSpool::durable`]
    /// on the returned LSN resolves.
    pub fn append_message(
        &mut self,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<Appended, SpoolError> {
        self.append_envelope(RecordType::Message, envelope, content)
    }

    fn append_envelope(
        &mut self,
        kind: RecordType,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<Appended, SpoolError> {
        if envelope.recipients.is_empty() {
            return Err(SpoolError::Invalid(format!(
                "message {} has no recipients",
                envelope.queue_id
            )));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.buf.clear();
        envelope.encode(&mut scratch);
        let result = self.append_parts(kind, &[&scratch.buf, content]);
        self.scratch = scratch;
        let (seq, offset, end) = result?;
        let location = Location {
            segment: seq,
            offset: offset as u32,
            len: (end - offset) as u32,
        };
        self.index.insert(envelope, location);
        Ok(Appended {
            queue_id: envelope.queue_id,
            location,
            segment: Arc::clone(self.writer.segment()),
            lsn: lsn(seq, end),
        })
    }

    /// Record a delivery outcome for one recipient.
    pub fn record_outcome(&mut self, outcome: &Outcome) -> Result<(Applied, Lsn), SpoolError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.buf.clear();
        outcome.encode(&mut scratch);
        let result = self.append_parts(RecordType::Outcome, &[&scratch.buf]);
        self.scratch = scratch;
        let (seq, _, end) = result?;
        Ok((self.index.apply_outcome(outcome), lsn(seq, end)))
    }

    /// Record the outcomes of one delivery attempt of one message (all
    /// about the same queue id) in one record: an Outcome record for a
    /// single recipient (what earlier versions wrote), else one Outcomes
    /// record, so a multi-recipient transaction costs one append. Returns
    /// `Finished` if the message has no pending recipient left, else what
    /// the last outcome did to the index.
    pub fn record_outcomes(&mut self, outcomes: &[Outcome]) -> Result<(Applied, Lsn), SpoolError> {
        match outcomes {
            [] => Ok((Applied::Unknown, self.flusher.flushed())),
            [one] => self.record_outcome(one),
            [first, ..] => {
                if let Some(other) = outcomes.iter().find(|o| o.queue_id != first.queue_id) {
                    return Err(SpoolError::Invalid(format!(
                        "outcomes of {} and {} in one record",
                        first.queue_id, other.queue_id
                    )));
                }
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.buf.clear();
                Outcomes::encode(outcomes, &mut scratch);
                let result = self.append_parts(RecordType::Outcomes, &[&scratch.buf]);
                self.scratch = scratch;
                let (seq, _, end) = result?;
                Ok((self.index.apply_outcomes(outcomes), lsn(seq, end)))
            }
        }
    }

    /// Hold, release, delete or requeue a message.
    pub fn admin(
        &mut self,
        queue_id: QueueId,
        action: AdminAction,
    ) -> Result<(Applied, Lsn), SpoolError> {
        if self.index.get(&queue_id).is_none() {
            return Ok((Applied::Unknown, self.flusher.flushed()));
        }
        let record = Admin {
            queue_id,
            action,
            at: now_micros(),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.buf.clear();
        record.encode(&mut scratch);
        let result = self.append_parts(RecordType::Admin, &[&scratch.buf]);
        self.scratch = scratch;
        let (seq, _, end) = result?;
        Ok((self.index.apply_admin(&record), lsn(seq, end)))
    }

    /// Lease a message to the queue manager until `until` (µs), in memory
    /// only; see [`Index::lease`].
    pub fn lease(&mut self, id: &QueueId, until: u64) {
        self.index.lease(id, until);
    }

    /// Let the calling core run the group commits (policy `always`; see
    /// [`crate::flush`]): it must then drive the returned [`CoreSync`].
    pub fn drive_syncs_on_core(&mut self) -> Option<CoreSync> {
        self.flusher.drive_on_core()
    }

    /// Resolves when everything up to `lsn` is durable.
    pub fn durable(&self, lsn: Lsn) -> Durable {
        self.flusher.durable(lsn)
    }

    /// Read a queued message.
    pub fn read(&self, id: &QueueId) -> Result<Option<StoredMessage>, SpoolError> {
        let Some(entry) = self.index.get(id) else {
            return Ok(None);
        };
        let seg = self.segments.get(&entry.location.segment).ok_or_else(|| {
            SpoolError::Invalid(format!("{id}: segment {} is gone", entry.location.segment))
        })?;
        read_message(seg, entry.location.offset as usize).map(Some)
    }

    /// Append one record, moving to a new segment when it does not fit.
    fn append_parts(
        &mut self,
        kind: RecordType,
        parts: &[&[u8]],
    ) -> Result<(u64, usize, usize), SpoolError> {
        if let Some(e) = self.flusher.error() {
            return Err(SpoolError::Failed(e));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_RECORD {
            return Err(SpoolError::Invalid(format!(
                "record of {len} bytes is too large"
            )));
        }
        if !self.writer.fits(len) {
            self.roll(len)?;
        }
        let seq = self.writer.segment().seq();
        let path = self.writer.segment().path().to_path_buf();
        let (offset, end) = self
            .writer
            .append(kind, parts)
            .map_err(io_err(&path))?
            .ok_or_else(|| SpoolError::Invalid("record does not fit a fresh segment".into()))?;
        self.flusher.appended(lsn(seq, end));
        if !self.spare_requested && end > self.writer.segment().size() / 2 {
            self.spares.request();
            self.spare_requested = true;
        }
        Ok((seq, offset, end))
    }

    /// Seal the active segment and start the next one, sized for a record
    /// of `need` payload bytes if that is larger than the usual size.
    fn roll(&mut self, need: usize) -> Result<(), SpoolError> {
        let seq = self.writer.segment().seq() + 1;
        let map = self.create_segment(
            seq,
            SEGMENT_HEADER_LEN + record_len(need) + FRAME_HEADER_LEN,
        )?;
        self.flusher.register(&map);
        let writer = map
            .writer(SEGMENT_HEADER_LEN)
            .ok_or_else(|| SpoolError::Invalid("segment writer taken".into()))?;
        let old_path = self.writer.segment().path().to_path_buf();
        self.writer.seal().map_err(io_err(&old_path))?;
        let old = self.writer.segment().seq();
        let sealed_end = self.writer.tail();
        self.flusher.appended(lsn(old, sealed_end));
        self.segments.insert(seq, map);
        self.writer = writer;
        self.spare_requested = false;
        Ok(())
    }

    /// A new segment with room for at least `need` bytes: the spare (of
    /// the usual size) if one is ready; else, while it is being prepared,
    /// a small preallocated stop-gap, so that the log spends little time in
    /// slower fallocated space; a record larger than the usual size gets a
    /// segment of its own.
    fn create_segment(&mut self, seq: u64, need: usize) -> Result<Arc<SegmentMap>, SpoolError> {
        let core = u32::from(self.core);
        let usual = self.spares.size();
        if need > usual {
            return SegmentMap::create(&self.dir, core, seq, need).map_err(io_err(&self.dir));
        }
        if let Some(spare) = self.spares.take() {
            match SegmentMap::create_from_spare(&self.dir, &spare, core, seq, usual) {
                Ok(map) => return Ok(map),
                Err(e) => {
                    // Not fatal: the inline path below still works; the
                    // reason is kept for the engine's log.
                    self.spare_errors.push(format!("{}: {e}", spare.display()));
                    let _ = std::fs::remove_file(&spare);
                }
            }
        }
        self.spares.request();
        let size = stopgap_size(self.options.segment_size).max(need);
        SegmentMap::create(&self.dir, core, seq, size).map_err(io_err(&self.dir))
    }

    /// Problems preparing spare segments since the last call (each
    /// reported once). They cost speed, not data: segments are then
    /// preallocated inline.
    pub fn take_spare_errors(&mut self) -> Vec<String> {
        if let Some(e) = self.spares.take_error() {
            self.spare_errors.push(e);
        }
        std::mem::take(&mut self.spare_errors)
    }

    /// Delete segments nobody needs (oldest first) and compact the oldest
    /// one when few live bytes pin it. Call it now and then (the engine does
    /// after flushes); cheap when there is nothing to do.
    pub fn reclaim(&mut self) -> Result<ReclaimReport, SpoolError> {
        let mut report = ReclaimReport::default();
        let active = self.writer.segment().seq();
        while let Some((&oldest, map)) = self.segments.iter().next() {
            if oldest == active {
                break;
            }
            let usage = self.index.usage(oldest);
            if usage.messages == 0 {
                if let Some(&needed) = self.awaiting_flush.get(&oldest)
                    && self.flusher.flushed() < needed
                {
                    break; // the copies out of it are not durable yet
                }
                let path = map.path().to_path_buf();
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                sync_dir(&self.dir).map_err(io_err(&self.dir))?;
                self.segments.remove(&oldest);
                self.awaiting_flush.remove(&oldest);
                report.deleted += 1;
                continue;
            }
            let size = map.size() as f64;
            if (usage.bytes as f64) < size * self.options.compact_below {
                let mut last = 0;
                for id in self.index.ids_in(oldest) {
                    last = self.compact_one(&id)?;
                    report.moved += 1;
                }
                self.awaiting_flush.insert(oldest, last);
                continue;
            }
            break;
        }
        Ok(report)
    }

    /// Rewrite one message's record into the active segment with its
    /// current state; returns the copy's LSN.
    fn compact_one(&mut self, id: &QueueId) -> Result<Lsn, SpoolError> {
        let stored = self
            .read(id)?
            .ok_or_else(|| SpoolError::Invalid(format!("{id}: not queued")))?;
        let entry = self
            .index
            .get(id)
            .cloned()
            .ok_or_else(|| SpoolError::Invalid(format!("{id}: not queued")))?;
        let envelope = with_current_state(&stored.envelope, &entry);
        let appended = self.append_envelope(RecordType::Moved, &envelope, stored.content())?;
        if entry.delay_warned {
            // Not part of the envelope: carried by its own record, after
            // the copy (which starts the message's state afresh).
            return Ok(self.admin(*id, AdminAction::DelayWarned)?.1);
        }
        Ok(appended.lsn)
    }

    /// Take over the spools of cores that no longer exist: copy their
    /// queued messages here, make the copies durable, then remove them.
    fn adopt(
        &mut self,
        root: &Path,
        cores: u16,
        report: &mut RecoveryReport,
    ) -> Result<(), SpoolError> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(());
        };
        let mut orphans: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n: u32 = e
                    .file_name()
                    .to_str()?
                    .strip_prefix("core-")?
                    .parse()
                    .ok()?;
                (n >= u32::from(cores) && n % u32::from(cores) == u32::from(self.core))
                    .then(|| (n, e.path()))
            })
            .collect();
        orphans.sort();
        for (_, path) in orphans {
            let recovered = recover_dir(&path, report)?;
            let mut last = None;
            for (id, entry) in recovered.index.iter() {
                if self.index.get(id).is_some() {
                    continue; // adopted before a crash interrupted the cleanup
                }
                let Some(seg) = recovered.segments.get(&entry.location.segment) else {
                    continue;
                };
                let stored = read_message(seg, entry.location.offset as usize)?;
                let envelope = with_current_state(&stored.envelope, entry);
                last = Some(
                    self.append_envelope(RecordType::Moved, &envelope, stored.content())?
                        .lsn,
                );
                if entry.delay_warned {
                    last = Some(self.admin(*id, AdminAction::DelayWarned)?.1);
                }
            }
            if let Some(lsn) = last {
                self.durable(lsn).wait().map_err(SpoolError::Failed)?;
            }
            drop(recovered);
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            sync_dir(root).map_err(io_err(root))?;
            report.adopted.push(path);
        }
        Ok(())
    }

    /// Flush everything and stop the flusher.
    pub fn close(mut self) -> Result<(), SpoolError> {
        let end = lsn(self.writer.segment().seq(), self.writer.tail());
        if self.options.policy != FlushPolicy::Never {
            self.flusher.appended(end);
        }
        self.flusher.shutdown();
        match self.flusher.error() {
            Some(e) => Err(SpoolError::Failed(e)),
            None => Ok(()),
        }
    }
}

/// The size of a stop-gap segment (a fresh spool's first, or one made while
/// no spare is ready): a sixteenth of the usual size, at least the minimum.
fn stopgap_size(segment_size: usize) -> usize {
    (segment_size / 16).max(MIN_SEGMENT_SIZE).div_ceil(PAGE) * PAGE
}

/// The queue id a damaged record was about, where it can still be read:
/// every record's payload starts with its queue id, so a record whose
/// checksum fails elsewhere still names the message it concerned. Only a
/// plausible id is given — 80 bits, not in the future and at most 30 days
/// older than the segment (messages moved in by compaction or adoption are
/// older than it) — so random damage is rarely reported as a message.
fn damaged_record_id(
    bytes: &[u8],
    offset: usize,
    header: &crate::frame::SegmentHeader,
) -> Option<QueueId> {
    let start = offset.checked_add(crate::frame::FRAME_HEADER_LEN)?;
    let raw: [u8; 16] = bytes.get(start..start.checked_add(16)?)?.try_into().ok()?;
    let id = QueueId::from_u128(u128::from_le_bytes(raw))?;
    let day = 86_400_000_000;
    let now = crate::queue_id::now_micros();
    let plausible = id.micros() <= now && id.micros().saturating_add(30 * day) >= header.created;
    plausible.then_some(id)
}

/// The envelope a `Moved` record carries: the original with the index's
/// state folded in — recipients no longer pending marked finished, the
/// next attempt and the hold flag.
fn with_current_state(original: &Envelope, entry: &crate::index::IndexEntry) -> Envelope {
    let mut envelope = original.clone();
    for (i, r) in envelope.recipients.iter_mut().enumerate() {
        if !entry.pending.contains(i as u32) && !r.state.is_final() {
            r.state = RecipientState::Finished;
        }
    }
    envelope.next_attempt = entry.next_attempt;
    envelope.held = entry.held;
    envelope
}

/// What one [`CoreSpool::reclaim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimReport {
    pub deleted: usize,
    pub moved: usize,
}

struct Recovered {
    segments: BTreeMap<u64, Arc<SegmentMap>>,
    index: Index,
    max_id: QueueId,
    /// Where the newest segment can take appends (None if it is sealed).
    active_tail: Option<usize>,
    /// Highest segment number seen, readable or not.
    max_seq: u64,
}

/// Move an unreadable segment out of the way (kept for inspection as
/// `*.damaged`) and report it.
fn set_aside(path: &Path, error: &str, report: &mut RecoveryReport) {
    let aside = path.with_extension("log.damaged");
    let moved = std::fs::rename(path, &aside).is_ok();
    report.skipped.push(format!(
        "unreadable segment {}: {error}",
        if moved {
            format!("moved to {}", aside.display())
        } else {
            "left in place".to_string()
        }
    ));
}

/// Rebuild the index of one spool directory from its segments alone.
fn recover_dir(dir: &Path, report: &mut RecoveryReport) -> Result<Recovered, SpoolError> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(Result::ok)
        .filter_map(|e| Some((parse_segment_file_name(e.file_name().to_str()?)?, e.path())))
        .collect();
    files.sort();
    let mut out = Recovered {
        segments: BTreeMap::new(),
        index: Index::default(),
        max_id: QueueId::default(),
        active_tail: None,
        max_seq: 0,
    };
    let newest = files.last().map(|(s, _)| *s);
    out.max_seq = newest.unwrap_or(0);
    for (seq, path) in files {
        let mut seg = match RecoveringSegment::open(&path) {
            Ok(s) => s,
            Err(e) => {
                set_aside(&path, &e, report);
                continue;
            }
        };
        if seg.header().seq != seq {
            let e = format!(
                "{}: header names segment {}",
                path.display(),
                seg.header().seq
            );
            set_aside(&path, &e, report);
            continue;
        }
        report.segments += 1;
        let mut events = Vec::new();
        let end = seg.scan(|e| events.push(e));
        let events_count = events
            .iter()
            .filter(|e| matches!(e, ScanEvent::Record { .. }))
            .count();
        for event in events {
            match event {
                ScanEvent::Record {
                    offset,
                    kind,
                    payload,
                } => {
                    report.records += 1;
                    let bytes = &seg.bytes()[payload.clone()];
                    if let Err(e) = apply(&mut out, seq, offset, kind, bytes, payload.len()) {
                        report
                            .skipped
                            .push(format!("{}: offset {offset}: {e}", path.display()));
                    }
                }
                ScanEvent::Skipped {
                    offset,
                    end,
                    reason,
                } => report.skipped.push(format!(
                    "{}: bytes {offset}..{end} skipped: {reason}{}",
                    path.display(),
                    damaged_record_id(seg.bytes(), offset, seg.header())
                        .map(|id| format!(" (a record of queue id {id}; its mail may be lost)"))
                        .unwrap_or_default()
                )),
            }
        }
        if let Some(len) = seg.cut_to() {
            report.damaged.push(format!(
                "{}: file cut to {len} of {} bytes: records after offset {} are lost \
                 ({} readable records kept); queued mail in them may be lost",
                path.display(),
                seg.header().size,
                end.tail,
                events_count
            ));
        }
        if let Some((start, stop)) = end.torn {
            seg.truncate_torn_tail(start, stop).map_err(io_err(&path))?;
            report.truncated.push(format!(
                "{}: {} bytes at offset {start}",
                path.display(),
                stop - start
            ));
        }
        let is_newest = Some(seq) == newest;
        let map = seg.into_shared(end.tail);
        if !end.sealed {
            if is_newest {
                out.active_tail = Some(end.tail);
            } else if let Some(mut w) = map.writer(end.tail) {
                // An older segment left unsealed by a crash: seal it so the
                // next recovery need not scan its empty space.
                w.seal().map_err(io_err(&path))?;
                map.fdatasync().map_err(io_err(&path))?;
            }
        }
        out.segments.insert(seq, map);
    }
    Ok(out)
}

fn apply(
    out: &mut Recovered,
    seq: u64,
    offset: usize,
    kind: RecordType,
    bytes: &[u8],
    len: usize,
) -> Result<(), String> {
    let mut d = Decoder::new(bytes);
    match kind {
        RecordType::Message | RecordType::Moved => {
            let env = Envelope::decode(&mut d).map_err(|e| e.to_string())?;
            out.max_id = out.max_id.max(env.queue_id);
            if kind == RecordType::Message && out.index.get(&env.queue_id).is_some() {
                return Err(format!("duplicate queue id {}", env.queue_id));
            }
            out.index.insert(
                &env,
                Location {
                    segment: seq,
                    offset: offset as u32,
                    len: record_len(len) as u32,
                },
            );
        }
        RecordType::Outcome => {
            let o = Outcome::decode(&mut d).map_err(|e| e.to_string())?;
            out.index.apply_outcome(&o);
        }
        RecordType::Outcomes => {
            let all = Outcomes::decode(&mut d).map_err(|e| e.to_string())?;
            out.index.apply_outcomes(&all);
        }
        RecordType::Admin => {
            let a = Admin::decode(&mut d).map_err(|e| e.to_string())?;
            out.index.apply_admin(&a);
        }
        RecordType::Seal => {}
    }
    Ok(())
}
