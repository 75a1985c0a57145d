//! The version-1 text file as a backend: one line per peer, the whole file re-read
//! when another process changed it and rewritten (an exclusive lock, a merge with
//! what is on disk, an atomic rename) at every change. What the database replaced:
//! kept as the baseline `make bench` measures the database against, and because its
//! format is the one export and import speak. It may not touch sessions or pointers.

use super::*;

/// Where the file is, and when this process last saw it change.
pub(super) struct TextFile {
    path: PathBuf,
    stamp: Option<std::time::SystemTime>,
}

impl TextFile {
    pub(super) fn new(path: &Path) -> Self {
        TextFile { path: path.to_path_buf(), stamp: None }
    }
}

impl Memory {
    /// Re-reads the file when another process changed it.
    pub(super) fn refresh(&self) {
        let Backend::Text(t) = &self.backend else { return };
        let mut t = t.lock();
        let now_stamp = std::fs::metadata(&t.path).and_then(|m| m.modified()).ok();
        if now_stamp.is_some() && now_stamp == t.stamp {
            return;
        }
        t.stamp = now_stamp;
        let disk = self.read_file(&t.path);
        let mut maps = self.all_maps();
        for (k, r) in disk {
            let slot = maps[shard(&k)].entry(k).or_default();
            let mut merged = slot.unpack();
            merged.merge(&r);
            *slot = Packed::pack(&merged);
        }
    }

    fn read_file(&self, path: &Path) -> Vec<(Key, Record)> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                self.problem(format!("{}: cannot read: {e}", path.display()));
                return Vec::new();
            }
        };
        let (records, problems) = parse_file(&data);
        for p in problems {
            self.problem(format!("{}{p}", path.display()));
        }
        records
    }

    /// Writes the file: an exclusive lock, a merge with what other processes wrote
    /// (the changed key's own record replaces what is on disk for it, so that facts
    /// this process dropped are not resurrected), a write to a temporary file, an
    /// atomic rename.
    pub(super) fn save(&self, t: &Mutex<TextFile>, changed: &Key, rec: &Record) {
        let mut t = t.lock();
        if let Err(e) = self.write_file(&t.path, changed, rec) {
            self.problem(format!("{}: cannot save: {e}", t.path.display()));
        }
        t.stamp = std::fs::metadata(&t.path).and_then(|m| m.modified()).ok();
    }

    fn write_file(&self, path: &Path, changed: &Key, rec: &Record) -> std::io::Result<()> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        lock.lock()?;
        let disk = self.read_file(path);
        let now = self.now();
        let l = self.lifetimes();
        let mut maps = self.all_maps();
        for (k, r) in disk {
            if &k != changed {
                let slot = maps[shard(&k)].entry(k).or_default();
                let mut merged = slot.unpack();
                merged.merge(&r);
                *slot = Packed::pack(&merged);
            }
        }
        if rec.is_empty() {
            maps[shard(changed)].remove(changed);
        } else {
            maps[shard(changed)].insert(changed.clone(), Packed::pack(rec));
        }
        let mut entries: Vec<(&Key, Record)> = Vec::new();
        for map in maps.iter_mut() {
            map.retain(|_, p| {
                let mut r = p.unpack();
                expire(&mut r, now, &l);
                *p = Packed::pack(&r);
                !r.is_empty()
            });
        }
        entries.extend(maps.iter().flat_map(|m| m.iter().map(|(k, p)| (k, p.unpack()))));
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::with_capacity(64 * entries.len() + 32);
        text.push_str(FILE_MAGIC);
        text.push('\n');
        for (k, r) in entries {
            let _ = writeln!(text, "{} {}", k.text(), r.fields());
        }
        drop(maps);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        drop(lock);
        Ok(())
    }
}
