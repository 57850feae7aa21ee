//! Writing a component back to its own file, atomically: a temporary file in the destination
//! folder, flushed and synced, renamed into place only once its sha256 matched.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{Bundle, BundleError};

impl Bundle {
    /// The file name `bundle unpack` gives component `id`: the name it was packed from, with
    /// any folder part dropped (a manifest cannot make us write outside the folder), or
    /// `ID.gguf` when that name is unusable or another component already has it.
    pub fn unpack_name(&self, id: &str) -> String {
        let fallback = format!("{id}.gguf");
        let usable = |n: &str| {
            !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0']) && !n.starts_with('.')
        };
        let Some(c) = self.manifest().component(id) else { return fallback };
        let taken = self.manifest().components.iter().take_while(|o| o.id != id).any(|o| o.file_name == c.file_name);
        match usable(&c.file_name) && !taken {
            true => c.file_name.clone(),
            false => fallback,
        }
    }

    /// Writes component `id` to `dir` under [`Bundle::unpack_name`] and returns the path. On
    /// any error (a corrupt component included) nothing is left under that name.
    pub fn unpack(&self, id: &str, dir: &Path) -> Result<PathBuf, BundleError> {
        let path = dir.join(self.unpack_name(id));
        let tmp = dir.join(format!(".{}.tmp{}", self.unpack_name(id), std::process::id()));
        let io = |source| BundleError::Io { path: path.clone(), component: id.to_string(), source };
        let result = (|| {
            let file = File::create(&tmp).map_err(io)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            self.write_component(id, &mut w)?;
            let file = w.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }
}
