//! Segment files: fixed-size, preallocated, memory-mapped, append-only.
//!
//! A [`SegmentMap`] is one mapped file shared (through `Arc`) by its writer,
//! the flusher thread and readers on any core. Safety rests on one rule,
//! enforced here: bytes below the *published* offset are complete records
//! that are never written again, and bytes at or above it are touched only
//! by the segment's single [`SegmentWriter`]. Readers can only see
//! published bytes, the writer can only write unpublished ones, and at most
//! one writer exists per segment.
//!
//! Before a segment is shared, recovery owns it as a [`RecoveringSegment`],
//! which may read every byte and zero a torn tail.
//!
//! The mapping is read-only: every write (records, the header, zeroing a
//! torn tail) goes through the file with pwrite(2). Besides making stray
//! writes through the mapping impossible, this keeps writeback cheap: a
//! read-only mapping has no writable page-table entries for the kernel to
//! write-protect (and shoot down in other cores' TLBs) at every flush.

use crate::frame::{
    self, FRAME_HEADER_LEN, FrameCheck, RECORD_MAGIC, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::record::RecordType;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Segment sizes are multiples of this.
pub const PAGE: usize = 4096;

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("seg-{seq:016x}.log")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One mapped segment file.
#[derive(Debug)]
pub struct SegmentMap {
    map: MmapRaw,
    file: File,
    path: PathBuf,
    header: SegmentHeader,
    /// End of the last complete, immutable record.
    published: AtomicUsize,
    writer_taken: AtomicBool,
}

impl SegmentMap {
    /// Create, preallocate and map a new segment, write its header and make
    /// the file and its directory entry durable.
    pub fn create(dir: &Path, core: u32, seq: u64, size: usize) -> io::Result<Arc<SegmentMap>> {
        let size = size.div_ceil(PAGE) * PAGE;
        assert!(size >= SEGMENT_HEADER_LEN + 2 * FRAME_HEADER_LEN);
        let path = dir.join(segment_file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = preallocate(&file, size)
            .and_then(|()| Self::finish_create(dir, path.clone(), file, core, seq, size));
        // A segment that could not be made (the disk is full) must not stay
        // behind: the next attempt, once space is back, uses the same name.
        made.inspect_err(|_| remove_quietly(&path))
    }

    /// Turn a spare (a complete, synced, zero-filled file of exactly `size`
    /// bytes, see [`crate::spare`]) into segment `seq`: rename it into place,
    /// write the header and make both durable. Fails, leaving the spare
    /// where it was, if it has the wrong size or the segment already exists.
    pub fn create_from_spare(
        dir: &Path,
        spare: &Path,
        core: u32,
        seq: u64,
        size: usize,
    ) -> io::Result<Arc<SegmentMap>> {
        let size = size.div_ceil(PAGE) * PAGE;
        assert!(size >= SEGMENT_HEADER_LEN + 2 * FRAME_HEADER_LEN);
        let len = std::fs::metadata(spare)?.len();
        if len != size as u64 {
            return Err(io::Error::other(format!(
                "{}: spare has {len} bytes, a segment needs {size}",
                spare.display()
            )));
        }
        let path = dir.join(segment_file_name(seq));
        rename_noreplace(spare, &path)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|file| Self::finish_create(dir, path.clone(), file, core, seq, size))
            .inspect_err(|_| remove_quietly(&path))
    }

    /// Map a new segment file of `size` bytes, write its header and make
    /// the file and its directory entry durable.
    fn finish_create(
        dir: &Path,
        path: PathBuf,
        file: File,
        core: u32,
        seq: u64,
        size: usize,
    ) -> io::Result<Arc<SegmentMap>> {
        use std::os::unix::fs::FileExt;
        let map = MmapOptions::new().len(size).map_raw_read_only(&file)?;
        let header = SegmentHeader {
            version: frame::FORMAT_VERSION,
            core,
            seq,
            size: size as u64,
            created: crate::queue_id::now_micros(),
            salt: random_u64(),
        };
        // Written like every record, with pwrite: nobody can see the file
        // yet, and the page cache is what the mapping shows.
        file.write_all_at(&header.encode(), 0)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Arc::new(SegmentMap {
            map,
            file,
            path,
            header,
            published: AtomicUsize::new(SEGMENT_HEADER_LEN),
            writer_taken: AtomicBool::new(false),
        }))
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> usize {
        self.map.len()
    }

    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// `len` bytes at `offset`, if they are published (complete, immutable).
    pub fn read(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.published.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: [offset, end) lies below the published offset, which is
        // within the mapping (published <= len, asserted by the writer);
        // published bytes are never written again (the only writer writes at
        // or above `published`), so no mutable access aliases this slice,
        // which lives as long as `self` and thus the mapping.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) })
    }

    /// msync the byte range (rounded out to pages by the kernel interface).
    pub fn msync(&self, offset: usize, len: usize) -> io::Result<()> {
        self.map.flush_range(offset, len)
    }

    /// fdatasync the whole file.
    pub fn fdatasync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The single writer of this segment, appending from `tail`; `None` if
    /// a writer was already handed out.
    pub fn writer(self: &Arc<Self>, tail: usize) -> Option<SegmentWriter> {
        if self.writer_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        assert!(tail >= self.published() && tail <= self.size());
        Some(SegmentWriter {
            map: Arc::clone(self),
            tail,
            scratch: Vec::with_capacity(8192),
        })
    }
}

/// Appends records to one segment.
#[derive(Debug)]
pub struct SegmentWriter {
    map: Arc<SegmentMap>,
    tail: usize,
    /// One record, assembled for its single write.
    scratch: Vec<u8>,
}

impl SegmentWriter {
    pub fn segment(&self) -> &Arc<SegmentMap> {
        &self.map
    }

    pub fn tail(&self) -> usize {
        self.tail
    }

    /// Room for a record of `payload_len` bytes, keeping space for the seal.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.tail
            .checked_add(frame::record_len(payload_len))
            .and_then(|end| end.checked_add(FRAME_HEADER_LEN))
            .is_some_and(|end| end <= self.map.size())
    }

    /// Append one record made of `parts`; returns its (offset, end), or
    /// `None` when it does not fit.
    pub fn append(
        &mut self,
        kind: RecordType,
        parts: &[&[u8]],
    ) -> io::Result<Option<(usize, usize)>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !self.fits(len) {
            return Ok(None);
        }
        self.write_record(kind, parts, len).map(Some)
    }

    /// Write the seal record; nothing can be appended afterwards.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.tail + FRAME_HEADER_LEN <= self.map.size() {
            self.write_record(RecordType::Seal, &[], 0)?;
        }
        self.tail = self.map.size();
        Ok(())
    }

    /// Records are written with one pwrite(2) into the file (the page
    /// cache), not through the mapping: writing through a shared mapping
    /// makes every flush write-protect the dirty pages again (page faults
    /// and TLB shoot-downs on every core), which cost more than the copy.
    /// Readers still read through the mapping; the page cache is shared.
    fn write_record(
        &mut self,
        kind: RecordType,
        parts: &[&[u8]],
        len: usize,
    ) -> io::Result<(usize, usize)> {
        use std::os::unix::fs::FileExt;
        let payload_len =
            u32::try_from(len).expect("record fits a segment, so its length fits u32");
        let crc = frame::frame_crc(self.map.header.salt, kind, payload_len, parts);
        let header = frame::encode_frame_header(kind, payload_len, crc);
        let start = self.tail;
        let end = start + frame::record_len(len);
        assert!(end <= self.map.size() && start >= self.map.published());
        self.scratch.clear();
        self.scratch.extend_from_slice(&header);
        for part in parts {
            self.scratch.extend_from_slice(part);
        }
        // Padding bytes up to `end` are zero: fresh segments are zero-filled
        // and recovery zeroes everything past the last valid record.
        // The range is at or above `published`, so no reader looks at it,
        // and this is the segment's only writer (`writer_taken`).
        self.map.file.write_all_at(&self.scratch, start as u64)?;
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new();
        }
        self.tail = end;
        self.map.published.store(end, Ordering::Release);
        Ok((start, end))
    }
}

/// A segment opened by recovery, not yet shared with anyone.
#[derive(Debug)]
pub struct RecoveringSegment {
    map: SegmentMap,
    /// The file's length when it was shorter than its header says. Every
    /// segment is made at full size and synced before use, so this is
    /// damage from outside (a truncated file), never a crash's torn tail.
    cut_to: Option<usize>,
}

/// What recovery found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A valid record.
    Record {
        offset: usize,
        kind: RecordType,
        payload: std::ops::Range<usize>,
    },
    /// Damaged bytes skipped to reach the next valid record.
    Skipped {
        offset: usize,
        end: usize,
        reason: &'static str,
    },
}

/// How a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Where appends may continue (the end of the last valid record).
    pub tail: usize,
    /// A seal record was found.
    pub sealed: bool,
    /// Bytes of a torn tail (non-zero data after `tail` that is not a
    /// valid record), zeroed by [`RecoveringSegment::truncate_torn_tail`].
    pub torn: Option<(usize, usize)>,
}

impl RecoveringSegment {
    /// Map an existing segment file and validate its header.
    pub fn open(path: &Path) -> Result<RecoveringSegment, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len() as usize;
        if len < SEGMENT_HEADER_LEN {
            return Err(format!(
                "{}: file shorter than a segment header",
                path.display()
            ));
        }
        // Read the header through a plain read first: the file may have been
        // truncated, and its full size is only known from the header.
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        {
            use std::io::Read;
            (&file)
                .read_exact(&mut head)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let header =
            SegmentHeader::decode(&head).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = usize::try_from(header.size).unwrap_or(usize::MAX);
        if size < SEGMENT_HEADER_LEN || size % PAGE != 0 || size > (u32::MAX as usize) {
            return Err(format!(
                "{}: implausible segment size {}",
                path.display(),
                header.size
            ));
        }
        if len > size {
            return Err(format!(
                "{}: segment header says {} bytes, file has {len}",
                path.display(),
                header.size
            ));
        }
        let cut_to = (len < size).then_some(len);
        if cut_to.is_some() {
            // A truncated file: give it back its zero-filled length, so the
            // scan ends where the data ends; the caller reports the loss.
            preallocate(&file, size).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let map = MmapOptions::new()
            .len(size)
            .map_raw_read_only(&file)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(RecoveringSegment {
            map: SegmentMap {
                map,
                file,
                path: path.to_path_buf(),
                header,
                published: AtomicUsize::new(SEGMENT_HEADER_LEN),
                writer_taken: AtomicBool::new(false),
            },
            cut_to,
        })
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.map.header
    }

    /// The length the file had been cut to, if it was shorter than its
    /// header says (see the field).
    pub fn cut_to(&self) -> Option<usize> {
        self.cut_to
    }

    /// Every byte of the segment.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the segment is not shared (no writer, no readers exist:
        // they are created only by `into_shared`), and the slice borrows
        // `self`, so no mutation can happen while it lives.
        unsafe { std::slice::from_raw_parts(self.map.map.as_ptr(), self.map.map.len()) }
    }

    /// Walk the records, reporting each to `visit`.
    pub fn scan(&self, mut visit: impl FnMut(ScanEvent)) -> ScanEnd {
        let data = self.bytes();
        let salt = self.map.header.salt;
        let mut at = SEGMENT_HEADER_LEN;
        loop {
            if at + FRAME_HEADER_LEN > data.len() {
                return ScanEnd {
                    tail: at.min(data.len()),
                    sealed: false,
                    torn: None,
                };
            }
            match frame::check_frame(data, at, salt) {
                FrameCheck::Valid {
                    kind: RecordType::Seal,
                    ..
                } => {
                    return ScanEnd {
                        tail: data.len(),
                        sealed: true,
                        torn: None,
                    };
                }
                FrameCheck::Valid {
                    kind,
                    payload,
                    len,
                    total,
                } => {
                    visit(ScanEvent::Record {
                        offset: at,
                        kind,
                        payload: payload..payload + len,
                    });
                    at += total;
                }
                FrameCheck::Empty => {
                    // Clean end, unless data follows the gap.
                    let Some(nonzero) = data[at..].iter().position(|&b| b != 0) else {
                        return ScanEnd {
                            tail: at,
                            sealed: false,
                            torn: None,
                        };
                    };
                    let from = (at + nonzero) / frame::ALIGN * frame::ALIGN;
                    match resync(data, from, salt) {
                        Some(next) => {
                            visit(ScanEvent::Skipped {
                                offset: at,
                                end: next,
                                reason: "unwritten gap before later records",
                            });
                            at = next;
                        }
                        None => return torn_end(data, at),
                    }
                }
                FrameCheck::Invalid(reason) => match resync(data, at + frame::ALIGN, salt) {
                    Some(next) => {
                        visit(ScanEvent::Skipped {
                            offset: at,
                            end: next,
                            reason,
                        });
                        at = next;
                    }
                    None => return torn_end(data, at),
                },
            }
        }
    }

    /// Zero `[start, end)`, so a torn record can never be mistaken for data
    /// after later appends, and make that durable.
    pub fn truncate_torn_tail(&mut self, start: usize, end: usize) -> io::Result<()> {
        let end = end.min(self.map.map.len());
        if start >= end {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        // Through the file, like every write: the mapping is read-only.
        let zeros = vec![0u8; (end - start).min(1 << 20)];
        let mut at = start;
        while at < end {
            let n = (end - at).min(zeros.len());
            self.map.file.write_all_at(&zeros[..n], at as u64)?;
            at += n;
        }
        self.map.file.sync_data()
    }

    /// Share the segment; records up to `tail` become readable.
    pub fn into_shared(self, tail: usize) -> Arc<SegmentMap> {
        let tail = tail.clamp(SEGMENT_HEADER_LEN, self.map.map.len());
        self.map.published.store(tail, Ordering::Release);
        Arc::new(self.map)
    }
}

/// The next valid record at or after `from` (8-aligned), if any.
fn resync(data: &[u8], from: usize, salt: u64) -> Option<usize> {
    let mut at = from.div_ceil(frame::ALIGN) * frame::ALIGN;
    while at + FRAME_HEADER_LEN <= data.len() {
        if frame::u32_at(data, at) == RECORD_MAGIC
            && matches!(frame::check_frame(data, at, salt), FrameCheck::Valid { .. })
        {
            return Some(at);
        }
        at += frame::ALIGN;
    }
    None
}

fn torn_end(data: &[u8], at: usize) -> ScanEnd {
    let last_nonzero = data.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1);
    ScanEnd {
        tail: at,
        sealed: false,
        torn: (last_nonzero > at).then_some((at, last_nonzero)),
    }
}

/// Reserve the file's blocks now, so that a full disk is an error here and
/// never a SIGBUS when a page of the mapping is first written.
/// Remove a half-made segment file. Failing to is not worse than the
/// error that made it half-made, which the caller reports.
fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn preallocate(file: &File, size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("segment too large"))?;
    // SAFETY: posix_fallocate only reads its integer arguments and acts on
    // the open descriptor owned by `file`, which outlives the call.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Rename `from` to `to`, failing if `to` exists (never overwrite a
/// segment).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::other(format!("{}: NUL in path", p.display())))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings that outlive
    // the call; AT_FDCWD makes them relative to the working directory as
    // rename(2) would.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsync a directory, making new or removed entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a valid writable buffer of 8 bytes for the call.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_le_bytes(b)
    } else {
        // getrandom cannot fail for 8 bytes on Linux ≥ 3.17 once the pool is
        // initialised; fall back to time and address entropy regardless.
        crate::queue_id::now_micros() ^ (&b as *const _ as u64).rotate_left(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_scan_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentMap::create(dir.path(), 0, 1, 8192).unwrap();
        let mut w = seg.writer(SEGMENT_HEADER_LEN).unwrap();
        assert!(seg.writer(SEGMENT_HEADER_LEN).is_none(), "one writer only");
        let (a, a_end) = w.append(RecordType::Admin, &[b"first"]).unwrap().unwrap();
        let (b, _) = w
            .append(RecordType::Admin, &[b"sec", b"ond"])
            .unwrap()
            .unwrap();
        assert_eq!(seg.read(a + FRAME_HEADER_LEN, 5), Some(&b"first"[..]));
        assert_eq!(
            seg.read(a_end, 100),
            None,
            "unpublished bytes are not readable"
        );
        let path = seg.path().to_path_buf();
        drop(w);
        drop(seg);

        // Simulate a torn third record: garbage after the second.
        let mut raw = std::fs::read(&path).unwrap();
        let tail = b + frame::record_len(6);
        raw[tail..tail + 10].copy_from_slice(&RECORD_MAGIC.to_le_bytes().repeat(3)[..10]);
        std::fs::write(&path, &raw).unwrap();

        let mut rec = RecoveringSegment::open(&path).unwrap();
        let mut seen = Vec::new();
        let end = rec.scan(|e| seen.push(e));
        assert_eq!(seen.len(), 2);
        assert_eq!(end.tail, tail);
        assert_eq!(end.torn, Some((tail, tail + 10)));
        rec.truncate_torn_tail(tail, tail + 10).unwrap();
        let again = rec.scan(|_| {});
        assert_eq!(
            again,
            ScanEnd {
                tail,
                sealed: false,
                torn: None
            }
        );
    }

    #[test]
    fn damaged_record_is_skipped_not_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentMap::create(dir.path(), 0, 1, 8192).unwrap();
        let mut w = seg.writer(SEGMENT_HEADER_LEN).unwrap();
        let offsets: Vec<usize> = (0..5)
            .map(|i| {
                w.append(RecordType::Admin, &[format!("record {i}").as_bytes()])
                    .unwrap()
                    .unwrap()
                    .0
            })
            .collect();
        w.seal().unwrap();
        let path = seg.path().to_path_buf();
        drop((w, seg));
        let mut raw = std::fs::read(&path).unwrap();
        raw[offsets[2] + FRAME_HEADER_LEN + 3] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let rec = RecoveringSegment::open(&path).unwrap();
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        let end = rec.scan(|e| match e {
            ScanEvent::Record { offset, .. } => records.push(offset),
            ScanEvent::Skipped { offset, end, .. } => skipped.push((offset, end)),
        });
        assert!(end.sealed);
        assert_eq!(
            records,
            vec![offsets[0], offsets[1], offsets[3], offsets[4]]
        );
        assert_eq!(skipped, vec![(offsets[2], offsets[3])]);
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_file_name(255), "seg-00000000000000ff.log");
        assert_eq!(
            parse_segment_file_name("seg-00000000000000ff.log"),
            Some(255)
        );
        assert_eq!(parse_segment_file_name("seg-ff.log"), None);
        assert_eq!(parse_segment_file_name("other"), None);
    }
}
