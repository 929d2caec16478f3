//! The head of the audit chain, kept outside the store: a small file next to it that
//! is written and synced after every flush that made records durable. If the store
//! later comes back without records the anchor names (a torn write dropped the tail, a
//! page was lost or edited), the loss shows at the next start.
//!
//! Two checksummed slots, written in turn, so that a torn write of one leaves the other.
//! Each slot carries the count of writes it was written at: the newest slot is the one
//! written last, not the one with the higher seq (after an `audit-gap` the chain goes on
//! from a lower seq than the anchor named).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the chain stood: its id, and the seq and hash of its newest durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
}

/// What a slot holds: the head, and the how-manieth write of the anchor put it there
/// (0 in slots written before writes were counted).
#[derive(Serialize, Deserialize)]
struct Slot {
    #[serde(flatten)]
    head: Head,
    #[serde(default)]
    write: u64,
}

const SLOT: usize = 512;

pub struct Anchor {
    path: PathBuf,
    /// The file, and the number of the next write (write n goes to slot n % 2).
    file: Mutex<(File, u64)>,
}

impl Anchor {
    /// Opens (creating) the anchor file; the head it holds, if any.
    pub fn open(path: &Path) -> std::io::Result<(Anchor, Option<Head>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        // The slot written last (of slots from before writes were counted: the higher seq).
        let newest = [0u64, 1]
            .into_iter()
            .filter_map(|index| read_slot(&file, index).map(|slot| (index, slot)))
            .max_by_key(|(_, slot)| (slot.write, slot.head.seq));
        // The next write goes to the slot not holding the newest head.
        let next = match &newest {
            Some((index, slot)) if (slot.write + 1) % 2 == *index => slot.write + 2,
            Some((_, slot)) => slot.write + 1,
            None => 0,
        };
        Ok((
            Anchor {
                path: path.to_path_buf(),
                file: Mutex::new((file, next)),
            },
            newest.map(|(_, slot)| slot.head),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `head` durably (into the slot not written last).
    pub fn write(&self, head: &Head) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, next) = &mut *guard;
        let write = *next;
        let content = Slot {
            head: head.clone(),
            write,
        };
        let json = serde_json::to_string(&content).expect("a head serializes");
        let sum = crate::sys::hex(&Sha256::digest(json.as_bytes()));
        let mut slot = format!("{json}\n{sum}\n").into_bytes();
        if slot.len() > SLOT {
            return Err(std::io::Error::other("anchor head too large"));
        }
        slot.resize(SLOT, 0);
        file.write_all_at(&slot, (write % 2) * SLOT as u64)?;
        file.sync_data()?;
        *next = write + 1;
        Ok(())
    }
}

fn read_slot(file: &File, slot: u64) -> Option<Slot> {
    let mut buf = vec![0u8; SLOT];
    let n = file.read_at(&mut buf, slot * SLOT as u64).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut lines = text.split('\n');
    let json = lines.next()?;
    let sum = lines.next()?;
    if crate::sys::hex(&Sha256::digest(json.as_bytes())) != sum {
        return None;
    }
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins() {
        let dir = std::env::temp_dir().join(format!("proxyuserd-anchor-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.anchor");
        let head = |seq| Head {
            chain: "c".into(),
            seq,
            hash: format!("h{seq}"),
        };
        {
            let (anchor, none) = Anchor::open(&path).unwrap();
            assert_eq!(none, None);
            anchor.write(&head(1)).unwrap();
            anchor.write(&head(2)).unwrap();
            anchor.write(&head(3)).unwrap();
        }
        {
            let (anchor, newest) = Anchor::open(&path).unwrap();
            assert_eq!(newest, Some(head(3)));
            // A write after a reopen keeps the newest slot until it is done.
            anchor.write(&head(4)).unwrap();
            assert_eq!(Anchor::open(&path).unwrap().1, Some(head(4)));
            anchor.write(&head(5)).unwrap();
        }
        // Writes went to slots 0, 1, 0, 1, 0: tear the newest slot: the one before it is still there.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"garbage", 0).unwrap();
        assert_eq!(Anchor::open(&path).unwrap().1, Some(head(4)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_slot_written_last_wins_even_with_a_lower_seq() {
        let dir =
            std::env::temp_dir().join(format!("proxyuserd-anchor-gap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.anchor");
        let head = |seq| Head {
            chain: "c".into(),
            seq,
            hash: format!("h{seq}"),
        };
        {
            let (anchor, _) = Anchor::open(&path).unwrap();
            anchor.write(&head(15)).unwrap();
        }
        // After an audit-gap the chain goes on from 12: record 13 is the gap record.
        {
            let (anchor, newest) = Anchor::open(&path).unwrap();
            assert_eq!(newest, Some(head(15)));
            anchor.write(&head(13)).unwrap();
        }
        {
            let (anchor, newest) = Anchor::open(&path).unwrap();
            assert_eq!(newest, Some(head(13)));
            anchor.write(&head(14)).unwrap();
        }
        assert_eq!(Anchor::open(&path).unwrap().1, Some(head(14)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
